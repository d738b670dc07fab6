"""The Serf layer: user events and queries on top of the SWIM core.

A pure state machine driven by :class:`~clusterfunk.gossip.core.GossipCore`
(which owns the transport, the broadcast queue and the member table). Tags live
in the member table and travel in Alive updates (see the core).

Serf sees the SWIM core only through :class:`SwimPort`, a small typed port that
the core implements (memberlist's delegate, the other way round): timers, sends,
broadcasts, trace records and public events out; its name, address,
configuration, random source and a read-only look at the members in. Neither
class touches the other's private state.

* **User events** carry a Lamport time from the event clock; every member
  delivers each (ltime, name, payload) once. Events marked ``coalesce`` are held
  for ``user_coalesce_period`` and only the latest per name is delivered.
* **Queries** carry a Lamport time from the query clock and a random id; members
  that pass the filters (node names; tag regexes, matched in full) ack and may
  respond, directly to the querier, until the timeout. The querier collects acks
  and responses, then reports :class:`QueryDone`.
* **Internal queries** (e.g. the keyring's install/use/remove) are answered by a
  handler registered under the query name and never published as events.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from clusterfunk import wire
from clusterfunk.gossip.config import GossipConfig, query_timeout
from clusterfunk.gossip.events import Query, QueryAck, QueryDone, QueryResponse, UserEvent
from clusterfunk.gossip.lamport import LamportClock
from clusterfunk.gossip.messages import QueryMsg, QueryResponseMsg, UserEventMsg


class SwimPort(Protocol):
    """What Serf needs from the SWIM core, and all it may use of it."""

    @property
    def name(self) -> str:
        """This member's name."""
        ...

    @property
    def addr(self) -> str:
        """This member's advertised ``host:port``."""
        ...

    @property
    def config(self) -> GossipConfig: ...

    @property
    def rng(self) -> random.Random:
        """The node's only source of randomness (query ids, re-send order)."""
        ...

    def num_members(self, live: bool = True) -> int:
        """Members known (alive or suspect with ``live``; all, including us, without)."""
        ...

    def alive_members(self) -> list[tuple[str, str]]:
        """``(name, addr)`` of every member held alive (ourselves included), in the
        member table's order (deterministic, never hash order)."""
        ...

    def local_tags(self) -> Mapping[str, str]:
        """Our own tags (read only)."""
        ...

    def schedule(self, at: float, what: tuple[Any, ...]) -> None:
        """Call :meth:`Serf.on_timer` with ``what`` at local time ``at``."""
        ...

    def send(self, dest: str, msg: Any, stream: bool = False) -> None:
        """Send ``msg`` to ``dest``: a datagram carrying piggybacked gossip, or a
        frame on the stream channel."""
        ...

    def broadcast(self, key: str, data: bytes) -> None:
        """Queue encoded ``data`` for gossip (replacing an older update with ``key``)."""
        ...

    def emit(self, ev: str, **fields: Any) -> None:
        """A trace record (``docs/trace.md``)."""
        ...

    def event(self, obj: Any) -> None:
        """A public event for the application (:mod:`.events`)."""
        ...


#: User events carried in every push-pull (the most recent ones).
RECENT_EVENTS = 64
#: Lamport times beyond this are refused (one more tick must still encode).
MAX_LTIME = 2**62
#: Most members a query is re-sent to directly (see ``_resend_query``).
MAX_RESEND = 256
#: Largest accepted query timeout (seconds).
MAX_QUERY_TIMEOUT = 3600.0


class SeenBuffer:
    """Recent Lamport times with what was seen at each (Serf's event buffer).

    Invariant: a slot holds entries of exactly one ltime; anything older than
    ``size`` ticks behind the clock is reported as too old (and dropped).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: list[tuple[int, set[Any]] | None] = [None] * size

    def too_old(self, ltime: int, clock: int) -> bool:
        return clock > self.size and ltime < clock - self.size

    def add(self, ltime: int, key: Any) -> bool:
        """Rule (Serf de-duplication): record ``key`` at ``ltime``; False if already seen."""
        i = ltime % self.size
        slot = self._slots[i]
        if slot is None or slot[0] != ltime:
            slot = (ltime, set())
            self._slots[i] = slot
        if key in slot[1]:
            return False
        slot[1].add(key)
        return True


@attrs.define
class _Pending:
    """A query this node started."""

    ltime: int
    name: str
    acks: list[str] = attrs.Factory(list)
    responders: list[str] = attrs.Factory(list)
    msg: QueryMsg | None = None
    deadline: float = 0.0


@attrs.define
class _Incoming:
    source: str
    source_addr: str
    deadline: float
    responded: bool = False


class Serf:
    """Events and queries of one node (see the module docstring)."""

    def __init__(self, core: SwimPort) -> None:
        self.core = core
        cfg = core.config
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self.events_seen = SeenBuffer(cfg.event_buffer_size)
        self.queries_seen = SeenBuffer(cfg.query_buffer_size)
        self.internal_handlers: dict[str, Callable[[float, Query], bytes | None]] = {}
        self._pending: dict[int, _Pending] = {}
        self._incoming: dict[tuple[int, int], _Incoming] = {}
        self._coalesced: dict[str, UserEventMsg] = {}
        self._recent: deque[UserEventMsg] = deque(maxlen=RECENT_EVENTS)
        self._coalesce_armed = False
        self.stats: dict[str, int] = {
            "events_dup": 0,
            "events_old": 0,
            "events_invalid": 0,
            "queries_dup": 0,
            "queries_invalid": 0,
            "queries_filtered": 0,
            "responses_stale": 0,
            "regex_errors": 0,
            "query_resends": 0,
        }

    # -- clocks ------------------------------------------------------------

    def witness(self, event_ltime: int, query_ltime: int) -> None:
        """Rule (Lamport): push-pull carries the peer's clocks; move past them."""
        self.event_clock.witness(event_ltime)
        self.query_clock.witness(query_ltime)

    # -- user events -------------------------------------------------------

    def user_event(self, now: float, name: str, payload: bytes, coalesce: bool = True) -> int:
        """Rule (Serf UserEvent): stamp the event with the event clock, deliver it here
        and disseminate it. Returns its Lamport time. ValueError if too large."""
        if len(name.encode()) + len(payload) > self.core.config.user_event_size_limit:
            raise ValueError("user event exceeds the size limit")
        if not name:
            raise ValueError("user event needs a name")
        ltime = self.event_clock.increment()
        self.on_user_event(
            now, "", UserEventMsg(ltime, name, bytes(payload), coalesce), None, False
        )
        return ltime

    def on_user_event(
        self, now: float, src: str, msg: UserEventMsg, raw: bytes | None, stream: bool
    ) -> None:
        """Rule (Serf handleUserEvent): witness the clock; drop events too old for the
        buffer or already seen at that ltime (same name and payload); otherwise
        rebroadcast and deliver (coalesced or at once)."""
        cfg = self.core.config
        if (
            not msg.name
            or len(msg.name.encode()) + len(msg.payload) > cfg.user_event_size_limit
            or not 0 <= msg.ltime < MAX_LTIME
        ):
            self.stats["events_invalid"] += 1
            return
        clock = self.event_clock.time
        self.event_clock.witness(msg.ltime)
        if self.events_seen.too_old(msg.ltime, clock):
            self.stats["events_old"] += 1
            return
        if not self.events_seen.add(msg.ltime, (msg.name, msg.payload)):
            self.stats["events_dup"] += 1
            return
        self._recent.append(msg)
        key = f"e:{msg.ltime}:{msg.name}:{len(msg.payload)}:{hash_bytes(msg.payload)}"
        self.core.broadcast(key, raw if raw is not None else wire.encode(msg))
        if msg.coalesce and cfg.user_coalesce_period > 0:
            self._coalesce(now, msg)
        else:
            self._deliver(msg)

    def recent_events(self) -> tuple[UserEventMsg, ...]:
        """The most recent distinct events seen here, oldest first (for push-pull)."""
        return tuple(self._recent)

    def merge_events(self, now: float, events: tuple[UserEventMsg, ...]) -> None:
        """Rule (Serf push-pull of the event buffer): events a peer has seen recently
        are processed as if gossiped (duplicates are dropped as usual)."""
        for msg in events[-RECENT_EVENTS:]:
            self.on_user_event(now, "", msg, None, True)

    def _coalesce(self, now: float, msg: UserEventMsg) -> None:
        """Rule (Serf coalescing): within one coalesce period keep only the latest
        event (highest ltime) per name."""
        old = self._coalesced.get(msg.name)
        if old is None or old.ltime < msg.ltime:
            self._coalesced[msg.name] = msg
        if not self._coalesce_armed:
            self._coalesce_armed = True
            self.core.schedule(now + self.core.config.user_coalesce_period, ("coalesce",))

    def _deliver(self, msg: UserEventMsg) -> None:
        core = self.core
        core.event(UserEvent(msg.ltime, msg.name, msg.payload, msg.coalesce))
        core.emit("gossip.event", name=msg.name, ltime=msg.ltime)

    # -- queries -----------------------------------------------------------

    def query(
        self,
        now: float,
        name: str,
        payload: bytes,
        filter_nodes: Sequence[str] | None = None,
        filter_tags: dict[str, str] | None = None,
        timeout: float | None = None,
        want_ack: bool = True,
    ) -> int:
        """Rule (Serf Query): stamp with the query clock, remember it as pending until
        the timeout (default gossip_interval x 16 x ceil(log10(n + 1))), process it
        here and disseminate it. Returns the query id."""
        core = self.core
        cfg = core.config
        if not name or len(name.encode()) + len(payload) > cfg.query_size_limit:
            raise ValueError("query name missing or query exceeds the size limit")
        if timeout is None:
            timeout = query_timeout(cfg, core.num_members())
        if not (0 < timeout <= MAX_QUERY_TIMEOUT):
            raise ValueError(f"query timeout out of range: {timeout}")
        for expr in (filter_tags or {}).values():
            re.compile(expr)  # fail early on a bad pattern
        probe = QueryMsg(
            self.query_clock.time,
            2**32 - 1,  # the widest id, so the size check is an upper bound
            name,
            bytes(payload),
            core.name,
            core.addr,
            tuple(filter_nodes or ()),
            dict(filter_tags or {}),
            want_ack,
            float(timeout),
        )
        room = cfg.udp_buffer_size - cfg.packet_overhead - 16
        if len(wire.encode(probe)) > room:
            raise ValueError(f"query does not fit in one datagram ({room} bytes)")
        ltime = self.query_clock.increment()
        qid = core.rng.getrandbits(32)
        while qid in self._pending:
            qid = core.rng.getrandbits(32)
        pending = _Pending(ltime, name, deadline=now + timeout)
        self._pending[qid] = pending
        core.schedule(now + timeout, ("done", qid))
        if want_ack:
            core.schedule(now + timeout / 2, ("resend", qid))
        msg = attrs.evolve(probe, ltime=ltime, id=qid)
        pending.msg = msg
        self.on_query(now, "", msg, None, False)
        return qid

    def _resend_query(self, now: float, qid: int) -> None:
        """Rule (query repair, ours): gossip with a small retransmit limit may miss a
        member. Halfway to the timeout, the querier sends the query directly to every
        live member that has not acked yet (at most MAX_RESEND of them, chosen at
        random); receivers that already have it drop it as a duplicate."""
        p = self._pending.get(qid)
        if p is None or p.msg is None or now >= p.deadline:
            return
        core = self.core
        msg = attrs.evolve(p.msg, timeout=p.deadline - now)
        acked = set(p.acks)
        wanted = set(msg.filter_nodes)
        me = core.name
        targets = [
            addr
            for name, addr in core.alive_members()
            if name not in acked and name != me and (not wanted or name in wanted)
        ]
        core.rng.shuffle(targets)  # once per query: an O(n) scan is fine here
        for addr in targets[:MAX_RESEND]:
            core.send(addr, msg)
        self.stats["query_resends"] += min(len(targets), MAX_RESEND)

    def on_query(
        self, now: float, src: str, msg: QueryMsg, raw: bytes | None, stream: bool
    ) -> None:
        """Rule (Serf handleQuery): witness the clock, de-duplicate by (ltime, id),
        rebroadcast, then -- if this node passes the filters -- ack and hand the
        query to an internal handler or publish it for the application."""
        core = self.core
        cfg = core.config
        if (
            not msg.name
            or len(msg.name.encode()) + len(msg.payload) > cfg.query_size_limit
            or not (0 < msg.timeout <= MAX_QUERY_TIMEOUT)
            or not msg.source
            or not 0 <= msg.ltime < MAX_LTIME
        ):
            self.stats["queries_invalid"] += 1
            return
        clock = self.query_clock.time
        self.query_clock.witness(msg.ltime)
        if self.queries_seen.too_old(msg.ltime, clock) or not self.queries_seen.add(
            msg.ltime, msg.id
        ):
            self.stats["queries_dup"] += 1
            return
        core.broadcast(f"q:{msg.ltime}:{msg.id}", raw if raw is not None else wire.encode(msg))
        if not self._passes_filters(msg):
            self.stats["queries_filtered"] += 1
            return
        deadline = now + msg.timeout
        key = (msg.ltime, msg.id)
        self._incoming[key] = _Incoming(msg.source, msg.source_addr, deadline)
        core.schedule(deadline, ("expire", key))
        if msg.want_ack:
            self._reply(
                now,
                msg.source,
                msg.source_addr,
                QueryResponseMsg(msg.ltime, msg.id, core.name, True, b""),
            )
        q = Query(msg.ltime, msg.id, msg.name, msg.payload, msg.source, msg.source_addr, deadline)
        handler = self.internal_handlers.get(msg.name)
        if handler is not None:
            resp = handler(now, q)
            if resp is not None:
                self.respond(now, q, resp)
            return
        core.event(q)

    def _passes_filters(self, msg: QueryMsg) -> bool:
        """Rule (Serf query filters): a node-name filter must list us; every tag filter
        must name one of our tags whose value matches the regex in full."""
        core = self.core
        if msg.filter_nodes and core.name not in msg.filter_nodes:
            return False
        if msg.filter_tags:
            tags = core.local_tags()
            for tag, expr in msg.filter_tags.items():
                value = tags.get(tag)
                if value is None:
                    return False
                try:
                    if re.fullmatch(expr, value) is None:
                        return False
                except re.error:
                    self.stats["regex_errors"] += 1
                    return False
        return True

    def respond(self, now: float, query: Query, payload: bytes) -> bool:
        """Rule (Serf respond): one response per query, before its deadline, sent
        straight to the querier. Returns False if it is too late or already answered."""
        cfg = self.core.config
        if len(payload) > cfg.query_response_size_limit:
            raise ValueError("query response exceeds the size limit")
        inc = self._incoming.get((query.ltime, query.id))
        if inc is None or inc.responded or now > inc.deadline:
            return False
        inc.responded = True
        msg = QueryResponseMsg(query.ltime, query.id, self.core.name, False, bytes(payload))
        self._reply(now, inc.source, inc.source_addr, msg)
        return True

    def _reply(self, now: float, source: str, addr: str, msg: QueryResponseMsg) -> None:
        core = self.core
        if source == core.name:
            self.on_query_response(now, "", msg, None, False)
            return
        # Too big to share a datagram: on the stream channel.
        core.send(addr, msg, stream=len(msg.payload) > core.config.udp_buffer_size // 2)

    def on_query_response(
        self, now: float, src: str, msg: QueryResponseMsg, raw: bytes | None, stream: bool
    ) -> None:
        """Rule (Serf query collection): record each member's ack and response once,
        while the query is pending."""
        p = self._pending.get(msg.id)
        if p is None or p.ltime != msg.ltime or not msg.source:
            self.stats["responses_stale"] += 1
            return
        core = self.core
        if msg.ack:
            if msg.source not in p.acks:
                p.acks.append(msg.source)
                core.event(QueryAck(msg.id, msg.source))
        elif msg.source not in p.responders:
            p.responders.append(msg.source)
            core.event(QueryResponse(msg.id, msg.source, msg.payload))

    # -- timers ------------------------------------------------------------

    def on_timer(self, now: float, key: tuple[Any, ...]) -> None:
        kind = key[0]
        if kind == "resend":
            self._resend_query(now, key[1])
        elif kind == "done":
            p = self._pending.pop(key[1], None)
            if p is not None:
                done = QueryDone(key[1], p.name, tuple(sorted(p.acks)), tuple(sorted(p.responders)))
                self.core.event(done)
                self.core.emit(
                    "gossip.query_done",
                    id=key[1],
                    name=p.name,
                    acks=len(p.acks),
                    responses=len(p.responders),
                )
        elif kind == "expire":
            inc = self._incoming.get(key[1])
            if inc is not None and now >= inc.deadline:
                del self._incoming[key[1]]
        elif kind == "coalesce":
            self._coalesce_armed = False
            pending, self._coalesced = self._coalesced, {}
            for msg in pending.values():
                self._deliver(msg)


def hash_bytes(data: bytes) -> str:
    """A short, process-independent digest used in broadcast keys."""
    return hashlib.blake2b(data, digest_size=6).hexdigest()
