"""Wire messages of the gossip layer.

SWIM / memberlist messages use tags 96-159, the Serf layer's 160-191
(``docs/architecture.md``). Every message is a frozen attrs class; the codec
validates field types, and the core validates values (names, statuses, sizes).

Datagrams carry one message, or a :class:`Compound` whose ``parts`` are encoded
messages: the primary message first (or a buddy-system suspicion right before a
ping), then piggybacked broadcasts. Broadcasts are kept pre-encoded in the queue,
so their size is known when a packet is packed within the budget.
"""

from __future__ import annotations

import enum

import attrs

from clusterfunk import wire


class Status(enum.StrEnum):
    """A member's status. A :class:`enum.StrEnum`: each member *is* the string that
    appears on the wire and in traces (``gossip.member``, docs/trace.md)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @property
    def live(self) -> bool:
        """Alive or suspected: still a member as far as this node knows."""
        return self is Status.ALIVE or self is Status.SUSPECT

    @property
    def gone(self) -> bool:
        """Declared dead, or left gracefully."""
        return self is Status.DEAD or self is Status.LEFT


ALIVE = Status.ALIVE
SUSPECT = Status.SUSPECT
DEAD = Status.DEAD
LEFT = Status.LEFT
STATUSES = (ALIVE, SUSPECT, DEAD, LEFT)


@wire.struct
@attrs.frozen
class Coord:
    """A Vivaldi network coordinate (Serf: 8 dimensions, plus height and adjustment)."""

    vec: tuple[float, ...]
    error: float
    adjustment: float
    height: float


# -- failure detection (SWIM) ------------------------------------------------


@wire.message(96)
@attrs.frozen
class Ping:
    """Direct probe of ``target`` (by name: a restarted process under another name
    at the same address must not answer for the old one)."""

    seq: int
    target: str
    source: str
    source_addr: str


@wire.message(97)
@attrs.frozen
class IndirectPing:
    """ping-req: ask the receiver to ping ``target`` for us and relay the ack (and a
    nack if ``nack`` is set and no ack arrives in time)."""

    seq: int
    target: str
    target_addr: str
    source: str
    source_addr: str
    nack: bool


@wire.message(98)
@attrs.frozen
class Ack:
    """Answer to a ping; carries the responder's Vivaldi coordinate when it has one."""

    seq: int
    source: str
    coord: Coord | None = None


@wire.message(99)
@attrs.frozen
class Nack:
    """An indirect prober could not reach the target in time (Lifeguard)."""

    seq: int
    source: str


@wire.message(100)
@attrs.frozen
class Compound:
    """Several encoded messages in one datagram."""

    parts: tuple[bytes, ...]


# -- membership updates (piggybacked broadcasts) ------------------------------


@wire.message(101)
@attrs.frozen
class Alive:
    """``node`` is alive at ``incarnation`` with address ``addr`` and ``tags``."""

    incarnation: int
    node: str
    addr: str
    tags: dict[str, str]


@wire.message(102)
@attrs.frozen
class Suspect:
    """``accuser`` suspects ``node`` at ``incarnation``."""

    incarnation: int
    node: str
    accuser: str


@wire.message(103)
@attrs.frozen
class Dead:
    """``accuser`` declares ``node`` dead at ``incarnation`` (failure, not leave)."""

    incarnation: int
    node: str
    accuser: str


@wire.message(104)
@attrs.frozen
class Leave:
    """``node`` leaves gracefully at ``incarnation`` (Serf's leave intent)."""

    incarnation: int
    node: str
    ltime: int


# -- anti-entropy (stream) ----------------------------------------------------


@wire.struct
@attrs.frozen
class MemberState:
    """One member as seen by the sender of a push-pull."""

    name: str
    addr: str
    incarnation: int
    status: str
    tags: dict[str, str]


@wire.message(160)
@attrs.frozen
class UserEventMsg:
    """A user event, disseminated by gossip and de-duplicated by (ltime, name, payload)."""

    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@wire.message(105)
@attrs.frozen
class PushPull:
    """Full state exchange over the stream channel. ``reply`` is False on the
    initiating side (which expects a PushPull with ``reply=True`` back)."""

    source: str
    source_addr: str
    join: bool
    reply: bool
    members: tuple[MemberState, ...]
    member_ltime: int
    event_ltime: int
    query_ltime: int
    #: Recent user events (Serf sends its event buffer so that members that missed
    #: the gossip still get them).
    events: tuple[UserEventMsg, ...] = ()
    #: A digest of the sender's other members (ours: the settle push-pull after a
    #: join; only in a request): their names, incarnations and statuses, one letter
    #: each (``a``, ``s``, ``d``, ``l``), in table order. ``members`` then holds the
    #: sender's own entry only.
    digest_names: tuple[str, ...] = ()
    digest_incarnations: tuple[int, ...] = ()
    digest_statuses: str = ""
    #: In the answer to a digest: the members whose entries the answerer's merge
    #: would take (the initiator sends them in a one-way ``reply=True`` push).
    want: tuple[str, ...] = ()


# -- Serf layer ----------------------------------------------------------------


@wire.message(161)
@attrs.frozen
class QueryMsg:
    """A query: every member that passes the filters may ack and respond to
    ``source_addr`` before ``deadline_in`` seconds (relative, clocks are not shared)."""

    ltime: int
    id: int
    name: str
    payload: bytes
    source: str
    source_addr: str
    filter_nodes: tuple[str, ...]
    filter_tags: dict[str, str]
    want_ack: bool
    timeout: float


@wire.message(162)
@attrs.frozen
class QueryResponseMsg:
    """An ack (``ack=True``, empty payload) or a response to query ``(ltime, id)``."""

    ltime: int
    id: int
    source: str
    ack: bool
    payload: bytes
