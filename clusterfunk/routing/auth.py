"""Who may send what on the request port (``app``); see runtime/auth.py for the hook.

:func:`routing_rule`: routing messages only, on streams only; a message that
speaks for a node -- ``Handoff``/``HandoffAck`` (shard state), ``Reply`` and
``MapAnswer`` (a node's answers, read by clients and forwarding nodes) -- only
from the node it names, when the transport authenticates identities (mutual TLS:
the certificate's name; the simulator: the sending host). ``Request`` and
``MapQuery`` come from any authenticated client (under TLS: any certificate of
the cluster CA, e.g. ``client``).
"""

from __future__ import annotations

from typing import Any

from clusterfunk.routing.messages import (
    ROUTING_MESSAGES,
    Handoff,
    HandoffAck,
    MapAnswer,
    Reply,
)
from clusterfunk.runtime.auth import RuleAuthorizer

_SPEAKS_FOR = (Handoff, HandoffAck, Reply, MapAnswer)


def routing_rule(identity: str | None, msg: Any, stream: bool,
                 require_identity: bool = True) -> str | None:
    """Request port: routing messages only, on streams only, node messages only from
    the node they name."""
    if not isinstance(msg, ROUTING_MESSAGES):
        return "not a routing message"
    if not stream:
        return "routing message in a datagram"
    if require_identity and isinstance(msg, _SPEAKS_FOR) and identity != msg.node:
        return "node is not the authenticated identity"
    return None


def routing_authorizer(require_identity: bool = True) -> RuleAuthorizer:
    """The request port's authorizer (:func:`routing_rule`)."""
    return RuleAuthorizer(routing_rule, require_identity=require_identity)
