"""Public events of a gossip node (``Output.events``; frozen attrs classes).

Membership: :class:`MemberJoined`, :class:`MemberUpdated` (tags or address
changed), :class:`MemberSuspect`, :class:`MemberFailed`, :class:`MemberLeft`,
:class:`MemberReaped`. Serf layer: :class:`UserEvent`, :class:`Query` (an
incoming query; answer with ``core.respond(now, query, payload)``),
:class:`QueryAck`, :class:`QueryResponse` and :class:`QueryDone` for queries this
node started.
"""

from __future__ import annotations

import attrs

from clusterfunk.gossip.state import Member


@attrs.frozen
class MemberJoined:
    member: Member


@attrs.frozen
class MemberUpdated:
    member: Member


@attrs.frozen
class MemberSuspect:
    member: Member


@attrs.frozen
class MemberFailed:
    member: Member


@attrs.frozen
class MemberLeft:
    member: Member


@attrs.frozen
class MemberReaped:
    member: Member


@attrs.frozen
class UserEvent:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@attrs.frozen
class Query:
    """An incoming query. ``deadline`` is in this node's local clock; respond before it
    with ``core.respond(now, query, payload)``."""

    ltime: int
    id: int
    name: str
    payload: bytes
    source: str
    source_addr: str
    deadline: float


@attrs.frozen
class QueryAck:
    """``node`` received query ``id`` (started by this node) and passed its filters."""

    id: int
    node: str


@attrs.frozen
class QueryResponse:
    id: int
    node: str
    payload: bytes


@attrs.frozen
class QueryDone:
    """Query ``id`` timed out: who acked and who responded (sorted names)."""

    id: int
    name: str
    acks: tuple[str, ...]
    responders: tuple[str, ...]


MEMBER_EVENTS = (MemberJoined, MemberUpdated, MemberSuspect, MemberFailed, MemberLeft, MemberReaped)
