"""Who may send what: the authorization hook the driver calls before a core sees a
message, and the rule sets for the Raft and coordination ports.

The transport authenticates a stream connection (mutual TLS: the node id the
peer's certificate names, see :mod:`clusterfunk.runtime.tls`) and passes that
*identity* with every frame; datagrams have none. The driver decodes the message
and asks its :class:`Authorizer` whether ``identity`` may send it; a refused
message is dropped and counted (``DriverStats.unauthorized`` and the authorizer's
``denied`` counters by reason), and never reaches the core.

Rules (each a pure function returning the reason to refuse, or ``None``):

* :func:`raft_rule` -- Raft messages travel on streams only (Raft takes no
  datagrams), and the authenticated identity must equal the message's ``sender``.
  Membership ("is the sender in the configuration?") is the Raft core's own check.
* :func:`coordination_rule` -- coordination messages (``Ack``, ``LeaveRequest``)
  travel on streams only, and the identity must equal the node the message speaks
  for: an ``Ack`` only from the node acking, a ``LeaveRequest`` only from the node
  leaving.

``require_identity=False`` (a cluster run with ``--insecure``, no TLS) keeps the
stream-only rules and skips the identity rules, since there is no identity to check.
"""

from __future__ import annotations

from typing import Any, Protocol

from clusterfunk.cluster.messages import Ack, LeaveRequest
from clusterfunk.raft.messages import RAFT_MESSAGES

_RAFT_TYPES = frozenset(RAFT_MESSAGES)

#: The coordination port's messages (each has ``node``: the node it speaks for).
COORDINATION_MESSAGES: tuple[type, ...] = (Ack, LeaveRequest)


class Authorizer(Protocol):
    """Decides whether a decoded message from a peer may reach the core."""

    def allow(self, identity: str | None, msg: Any, stream: bool) -> bool:
        """``identity``: the authenticated node id of the connection the message came
        on (None for datagrams and unauthenticated connections); ``stream``: it came
        as a stream frame (not a datagram)."""
        ...


def raft_rule(identity: str | None, msg: Any, stream: bool, require_identity: bool = True
              ) -> str | None:
    """Raft port: Raft messages only, on streams only, from the server they name."""
    if type(msg) not in _RAFT_TYPES:  # decoded messages are of the exact classes
        return "not a raft message"
    if not stream:
        return "raft message in a datagram"
    if require_identity and identity != msg.sender:  # every Raft message has a sender
        return "sender is not the authenticated identity"
    return None


def coordination_rule(identity: str | None, msg: Any, stream: bool,
                      require_identity: bool = True) -> str | None:
    """Coordination port: ``Ack`` / ``LeaveRequest`` only, on streams only, from the
    node they speak for (a ``LeaveRequest`` only from the node leaving)."""
    if not isinstance(msg, COORDINATION_MESSAGES):
        return "not a coordination message"
    if not stream:
        return "coordination message in a datagram"
    if require_identity and identity != getattr(msg, "node", None):
        return "node is not the authenticated identity"
    return None


class RuleAuthorizer:
    """An :class:`Authorizer` from a rule function; counts refusals by reason."""

    def __init__(self, rule: Any, *, require_identity: bool = True) -> None:
        self.rule = rule
        self.require_identity = require_identity
        #: refused messages by reason
        self.denied: dict[str, int] = {}

    def allow(self, identity: str | None, msg: Any, stream: bool) -> bool:
        reason = self.rule(identity, msg, stream, self.require_identity)
        if reason is None:
            return True
        self.denied[reason] = self.denied.get(reason, 0) + 1
        return False


def raft_authorizer(require_identity: bool = True) -> RuleAuthorizer:
    """The Raft port's authorizer (:func:`raft_rule`)."""
    return RuleAuthorizer(raft_rule, require_identity=require_identity)


def coordination_authorizer(require_identity: bool = True) -> RuleAuthorizer:
    """The coordination port's authorizer (:func:`coordination_rule`)."""
    return RuleAuthorizer(coordination_rule, require_identity=require_identity)


__all__ = [
    "COORDINATION_MESSAGES",
    "RAFT_MESSAGES",
    "Authorizer",
    "RuleAuthorizer",
    "coordination_authorizer",
    "coordination_rule",
    "raft_authorizer",
    "raft_rule",
]
