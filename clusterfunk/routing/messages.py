"""Wire messages of the routing layer (port ``app``, tags 224-239, docs/wire.md).

Every message travels as a stream frame (the request server refuses datagrams).
Requests and replies carry the client's id and request id unchanged across
retries and forwarding, so a trace can follow one request end to end.

* :class:`Request` (224): client -> node (or a forwarding node -> the owner).
  ``budget`` is the time left before the client's deadline, in seconds (a
  relative time: clocks of different machines are never compared); ``hops`` is
  1 on a forwarded copy (a node never forwards it again); ``attempt`` is echoed
  in the reply so a client can tell a late answer to an earlier attempt.
* :class:`Reply` (225): one :class:`~clusterfunk.routing.api.Outcome`; ``ok``
  carries the service's payload, ``error``/``busy`` a reason in ``error``;
  ``moved`` names the owner (``owner``, its request address ``address``) at map
  index ``index``. ``node`` is the node that answered.
* :class:`MapQuery` (226) / :class:`MapAnswer` (227): the committed shard map
  (encoded blob, its index) and the members' request addresses. A query names
  the index the asker has; the answer leaves ``blob`` empty when that is still
  current (index 0 and empty blob: no committed map yet).
* :class:`Handoff` (228) / :class:`HandoffAck` (229): a node that stopped serving
  shards sends their state to the new owner; ``index`` is the map index at the
  release (a receiver keeps the newest). ``empty`` lists shards released without
  state. The receiver acknowledges the shards it took.
"""

from __future__ import annotations

import attrs

from clusterfunk import wire

#: Longest client id or node id accepted in a routing message.
MAX_ID = 128


def _short(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value) > MAX_ID:
        raise ValueError(f"{attribute.name} longer than {MAX_ID} characters")


def _finite_budget(_inst: object, _attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 3600.0:
        raise ValueError("budget must be within [0, 3600] seconds")


@wire.message(224)
@attrs.frozen
class Request:
    client: str = attrs.field(validator=_short)
    id: int
    key: int = attrs.field(metadata=wire.int_range(wire.MIN_WIRE_INT))
    payload: bytes
    budget: float = attrs.field(validator=_finite_budget)
    hops: int = attrs.field(default=0, metadata=wire.int_range(0, 1))
    attempt: int = attrs.field(default=0, metadata=wire.int_range(0, 1 << 31))


@wire.message(225)
@attrs.frozen
class Reply:
    client: str = attrs.field(validator=_short)
    id: int
    outcome: str
    payload: bytes = b""
    error: str = ""
    owner: str = ""
    address: str = ""
    index: int = 0
    node: str = ""
    attempt: int = attrs.field(default=0, metadata=wire.int_range(0, 1 << 31))


@wire.message(226)
@attrs.frozen
class MapQuery:
    have: int = 0


@wire.message(227)
@attrs.frozen
class MapAnswer:
    index: int
    blob: bytes
    endpoints: dict[str, str]
    node: str = ""


@wire.message(228)
@attrs.frozen
class Handoff:
    node: str = attrs.field(validator=_short)
    index: int
    states: dict[int, bytes]
    empty: tuple[int, ...] = ()


@wire.message(229)
@attrs.frozen
class HandoffAck:
    node: str = attrs.field(validator=_short)
    index: int
    shards: tuple[int, ...]


ROUTING_MESSAGES: tuple[type, ...] = (Request, Reply, MapQuery, MapAnswer, Handoff, HandoffAck)
