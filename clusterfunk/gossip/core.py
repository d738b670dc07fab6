"""The SWIM + Lifeguard gossip core: a pure (sans-I/O) state machine.

It implements :class:`clusterfunk.runtime.api.Core`. Inputs: ``start``,
``on_message``, ``on_tick`` and the API methods below (called through
``Driver.call``); outputs: sends, public events (:mod:`clusterfunk.gossip.events`)
and trace records (``gossip.member`` and friends, ``docs/trace.md``).

Each rule of SWIM, Lifeguard, memberlist and Serf lives in one method whose
docstring names it. The Serf layer (events, queries) is :mod:`.serf`; the core
owns membership, failure detection, dissemination and anti-entropy.

Invariants:

* the member table always contains this node (``self.name``);
* a member's incarnation in our view never decreases;
* only this node raises its own incarnation (refutation, tag change, leave);
* every change of our view of a member (status or incarnation) is traced as
  ``gossip.member`` exactly once;
* per-packet work does not scan the member table.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from types import MappingProxyType
from typing import Any

import attrs
import msgpack

from clusterfunk import wire
from clusterfunk.gossip import awareness as aw
from clusterfunk.gossip import suspicion as su
from clusterfunk.gossip.broadcast import PART_OVERHEAD, BroadcastQueue
from clusterfunk.gossip.config import LAN, GossipConfig, push_pull_scale
from clusterfunk.gossip.events import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberSuspect,
    MemberUpdated,
)
from clusterfunk.gossip.lamport import LamportClock
from clusterfunk.gossip.messages import (
    ALIVE,
    DEAD,
    LEFT,
    STATUSES,
    SUSPECT,
    Ack,
    Alive,
    Compound,
    Coord,
    Dead,
    IndirectPing,
    Leave,
    MemberState,
    Nack,
    Ping,
    PushPull,
    QueryMsg,
    QueryResponseMsg,
    Suspect,
    UserEventMsg,
)
from clusterfunk.gossip.probe import Probe, ProbeRing, Relay
from clusterfunk.gossip.serf import Serf
from clusterfunk.gossip.state import Member, MemberRecord, MemberTable
from clusterfunk.gossip.vivaldi import VivaldiClient, distance
from clusterfunk.runtime.api import Outbox, Output, Send

_send = Send

# Timer kinds (heap entries are (time, seq, kind, key); stale entries are ignored).
_PROBE = 0
_PROBE_TIMEOUT = 1
_PROBE_END = 2
_GOSSIP = 3
_PUSH_PULL = 4
_REAP = 5
_RECONNECT = 6
_SUSPICION = 7
_RELAY = 8
_JOIN_RETRY = 9
_SERF = 10
_SETTLE = 11

#: A push-pull digest's status letters (PushPull.digest_statuses).
_STATUS_LETTER: dict[str, str] = {ALIVE: "a", SUSPECT: "s", DEAD: "d", LEFT: "l"}
_LETTER_STATUS = {v: k for k, v in _STATUS_LETTER.items()}
_LETTERS = frozenset(_LETTER_STATUS)
#: Settle digests awaiting an answer, at most (the oldest is forgotten).
_MAX_DIGESTS = 4

#: Compound framing overhead beyond its parts (version, tag, array headers).
_COMPOUND_OVERHEAD = 8
MAX_NAME = 128
#: The highest incarnation or Lamport time a member may hold (far below the wire's
#: 64-bit bound, and no honest member gets near it). A *claim* that a member must
#: answer by going one higher (suspect, dead, leave, an Alive about itself) or a
#: Lamport time a clock must move past is accepted only *below* this bound, so the
#: answer (at most ``MAX_INCARNATION``) is itself always accepted by every peer:
#: one forged datagram can never put a member beyond refutation.
MAX_INCARNATION = 2**62


def _refutable(n: int) -> bool:
    """An incarnation or Lamport time that can still be answered by ``n + 1``."""
    return 0 <= n < MAX_INCARNATION


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME


#: Addresses found valid (bounded; a member's address is checked on every learn).
_VALID_ADDRS: set[str] = set()
_VALID_ADDRS_MAX = 1 << 16


def _valid_addr(addr: str) -> bool:
    """``host:port`` as :func:`clusterfunk.runtime.api.split_address` accepts it."""
    if addr in _VALID_ADDRS:
        return True
    host, sep, port = addr.rpartition(":")
    ok = bool(sep and host and port.isascii() and port.isdigit() and int(port) < 65536)
    if ok:
        if len(_VALID_ADDRS) >= _VALID_ADDRS_MAX:
            _VALID_ADDRS.clear()
        _VALID_ADDRS.add(addr)
    return ok


def encoded_tags_size(tags: dict[str, str]) -> int:
    """Bytes of the tag map as encoded on the wire."""
    if not tags:
        return 1
    return len(msgpack.packb(tags, use_bin_type=True))


#: Decoded parts by their bytes. Messages are immutable, so one decoded object can
#: serve every core in the process; the same update arrives many times (every
#: retransmission, and in simulation at every node).
_PART_CACHE: dict[bytes, Any] = {}
_PART_CACHE_MAX = 1 << 16


def decode_part(raw: bytes) -> Any:
    """``wire.decode`` with a bounded cache (raises WireError like it)."""
    msg = _PART_CACHE.get(raw)
    if msg is None:
        msg = wire.decode(raw)
        if len(_PART_CACHE) >= _PART_CACHE_MAX:
            _PART_CACHE.clear()
        _PART_CACHE[raw] = msg
    return msg


class GossipCore(Outbox):
    """One gossip member. ``name`` identifies it (``"n1"``), ``addr`` is its
    advertised ``host:port``; ``rng`` is its only source of randomness."""

    #: Re-gossip the entries learnt from a seed's join reply (memberlist does). Off:
    #: they are news to nobody but the joiner, and a mass join then floods far less;
    #: the extra push-pull after joining repairs what concurrent joins miss.
    REBROADCAST_JOIN = False

    def __init__(
        self,
        name: str,
        addr: str,
        rng: random.Random,
        config: GossipConfig = LAN,
        tags: dict[str, str] | None = None,
    ) -> None:
        if not _valid_name(name):
            raise ValueError(f"bad member name {name!r}")
        tags = dict(tags or {})
        if encoded_tags_size(tags) > config.tags_max_bytes:
            raise ValueError(f"tags exceed {config.tags_max_bytes} bytes")
        self.name = name
        self.addr = addr
        self.rng = rng
        self.config = config
        self.incarnation = 0
        self.leaving = False
        self.started = False
        self.table = MemberTable()
        self.table.add(MemberRecord(name, addr, 0, ALIVE, tags, 0.0))
        self.awareness = aw.Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(config.retransmit_mult, config.max_broadcasts)
        self.ring = ProbeRing(rng)
        self.vivaldi = VivaldiClient(rng)
        self.coords: dict[str, Coord] = {}
        self.member_clock = LamportClock()
        self.serf = Serf(self)
        self._suspicions: dict[str, su.Suspicion] = {}
        self._probe: Probe | None = None
        self._relays: dict[int, Relay] = {}
        self._seq = 0
        self._timers: list[tuple[float, int, int, Any]] = []
        self._tseq = 0
        self._now = -math.inf  # the time of the last tick or message
        #: the dormant gossip timer: the time of the round that found nothing to send
        #: (None: the timer is armed); see _gossip_round
        self._gossip_idle: float | None = None
        #: settle digests sent: peer name -> (its address, our state as digested)
        self._digests: dict[str, tuple[str, tuple[MemberState, ...]]] = {}
        self._join_seeds: list[str] = []
        self._join_attempts = 0
        self._join_gave_up = False
        self.joined = False
        #: Publish membership events (:data:`~clusterfunk.gossip.events.MEMBER_EVENTS`).
        #: An owner that reads membership from the table and the trace instead (the
        #: simulated gossip node) turns them off: a mass join of n members makes
        #: n^2 of them, each with a snapshot. Nothing else depends on it.
        self.member_events = True
        self.internal_queries = self.serf.internal_handlers
        self.stats: dict[str, int] = {
            "malformed": 0,
            "misdirected": 0,
            "unknown_member": 0,
            "stale": 0,
            "invalid": 0,
            "refutes": 0,
            "suspicions": 0,  # members this node marked suspect (any accuser)
            "probes": 0,
            "probe_failures": 0,
            "indirect": 0,
            "nacks": 0,
            "push_pulls": 0,
        }
        self._out = Output()
        self._handlers: dict[type, Callable[[float, str, Any, bytes | None, bool], None]] = {
            Ping: self._on_ping,
            IndirectPing: self._on_indirect_ping,
            Ack: self._on_ack,
            Nack: self._on_nack,
            Alive: self._on_alive,
            Suspect: self._on_suspect,
            Dead: self._on_dead,
            Leave: self._on_leave,
            PushPull: self._on_push_pull,
            UserEventMsg: self.serf.on_user_event,
            QueryMsg: self.serf.on_query,
            QueryResponseMsg: self.serf.on_query_response,
        }

    # ------------------------------------------------------------------ Core

    def start(self, now: float) -> None:
        """Start probing, gossiping and anti-entropy; trace our own entry."""
        if self.started:
            return
        self.started = True
        me = self.table.by_name[self.name]
        me.since = now
        me.addr = self.addr
        self._trace_member(me)
        # memberlist setAlive: announce ourselves to whoever we come to know.
        self._queue_update(self.name, Alive(self.incarnation, self.name, self.addr, me.tags), None)
        cfg = self.config
        rng = self.rng
        # Stagger the periodic timers so that nodes started together do not beat.
        self._at(now + rng.random() * cfg.probe_interval, _PROBE)
        self._at(now + rng.random() * cfg.gossip_interval, _GOSSIP)
        self._at(now + cfg.push_pull_interval * rng.random(), _PUSH_PULL)
        self._at(now + cfg.reap_interval, _REAP)
        self._at(now + cfg.reconnect_interval * (1 + rng.random()), _RECONNECT)

    def next_deadline(self) -> float:
        timers = self._timers
        return timers[0][0] if timers else math.inf


    def on_tick(self, now: float) -> None:
        self._now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _t, _s, kind, key = heapq.heappop(timers)
            if kind == _SUSPICION:
                self._suspicion_timer(now, key)
            elif kind == _PROBE:
                self._probe_round(now)
            elif kind == _PROBE_TIMEOUT:
                self._probe_indirect(now, key)
            elif kind == _PROBE_END:
                self._probe_end(now, key)
            elif kind == _GOSSIP:
                self._gossip_round(now)
            elif kind == _RELAY:
                self._relay_timeout(now, key)
            elif kind == _PUSH_PULL:
                self._push_pull_round(now)
            elif kind == _REAP:
                self._reap(now)
            elif kind == _RECONNECT:
                self._reconnect(now)
            elif kind == _JOIN_RETRY:
                self._join_retry(now)
            elif kind == _SERF:
                self.serf.on_timer(now, key)
            elif kind == _SETTLE:
                self._settle(now)

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self._now = now
        if type(msg) is Compound:
            by_name = self.table.by_name
            handlers = self._handlers
            cached = _PART_CACHE.get
            me = self.name
            stale = 0
            for part in msg.parts:
                inner = cached(part)
                if inner is None:
                    try:
                        inner = decode_part(part)
                    except wire.WireError:
                        self.stats["malformed"] += 1
                        continue
                tp = type(inner)
                if tp is Alive:  # fast path: most gossip is news we already have
                    rec = by_name.get(inner.node)
                    if (
                        rec is not None
                        and inner.incarnation <= rec.incarnation
                        and inner.node != me
                    ):
                        stale += 1
                        continue
                handler = handlers.get(tp)
                if handler is None or tp is Compound:  # foreign or nested
                    self.stats["malformed"] += 1
                    continue
                handler(now, src, inner, part, stream)
            if stale:
                self.stats["stale"] += stale
        else:
            self._dispatch(now, src, msg, None, stream)

    def _dispatch(self, now: float, src: str, msg: Any, raw: bytes | None, stream: bool) -> None:
        handler = self._handlers.get(type(msg))
        if handler is None:  # another protocol's message on our port
            self.stats["malformed"] += 1
            return
        handler(now, src, msg, raw, stream)

    # ------------------------------------------------------------------ API

    @property
    def local_member(self) -> Member:
        return self.table.by_name[self.name].snapshot()

    @property
    def health_score(self) -> int:
        """Lifeguard local health score (0 = healthy)."""
        return self.awareness.score

    def members(self) -> list[Member]:
        """Every known member (including this one and dead / left ones), by name."""
        return self.table.sorted_snapshots()

    def member(self, name: str) -> Member | None:
        rec = self.table.get(name)
        return None if rec is None else rec.snapshot()

    def num_members(self, live: bool = True) -> int:
        return self.table.live_count if live else len(self.table)

    @property
    def coordinate(self) -> Coord:
        return self.vivaldi.coord

    def coordinate_of(self, name: str) -> Coord | None:
        if name == self.name:
            return self.vivaldi.coord
        return self.coords.get(name)

    def rtt_estimate(self, a: str, b: str) -> float | None:
        """Estimated round-trip time (seconds) between members ``a`` and ``b`` from
        their Vivaldi coordinates, or None if one of them is not known yet."""
        ca, cb = self.coordinate_of(a), self.coordinate_of(b)
        if ca is None or cb is None:
            return None
        return distance(ca, cb)

    @property
    def join_gave_up(self) -> bool:
        """The last :meth:`join` got no answer from any seed in ``join_max_attempts``
        attempts and stopped trying (``gossip.join_failed``); a new ``join`` resets it."""
        return self._join_gave_up and not self.joined

    def join(self, now: float, seeds: list[str]) -> int:
        """Rule (memberlist Join): push-pull with every seed address (join=True);
        retried every join_retry_interval until one answers. Returns the number of
        seeds contacted."""
        seeds = [s for s in seeds if s != self.addr and _valid_addr(s)]
        self._join_seeds = seeds
        self._join_attempts = 0
        self._join_gave_up = False
        self.joined = False
        if seeds:
            self._join_retry(now)
        return len(seeds)

    def leave(self, now: float) -> None:
        """Rule (Serf graceful leave): raise our incarnation, mark ourselves left and
        disseminate a Leave (distinct from Dead); stop probing. The owner keeps the
        node running until :meth:`pending_broadcasts` is 0 (or a short while)."""
        if self.leaving:
            return
        self.leaving = True
        me = self.table.by_name[self.name]
        self.incarnation += 1
        me.incarnation = self.incarnation
        self.table.set_status(me, LEFT, now)
        self._trace_member(me)
        msg = Leave(self.incarnation, self.name, self.member_clock.increment())
        self._queue_update(self.name, msg, None)
        self._tell_everyone(msg)
        # Tell a few members right away rather than waiting for the gossip tick.
        self._gossip_round(now, reschedule=False)

    def _tell_everyone(self, msg: Leave) -> None:
        """Rule (graceful leave, direct notice): the leaver also sends its Leave once,
        straight to every member it knows alive or suspect. Epidemic spread alone
        misses a member now and then (each holder retransmits an update a bounded
        number of times to random members); a member that missed a leave would
        probe the departed node, suspect it and report a failure before the next
        push-pull repaired its view. One datagram per member, once per leave."""
        for name in self.table.names:
            rec = self.table.by_name[name]
            if name != self.name and rec.status in (ALIVE, SUSPECT):
                self._out.sends.append(_send(rec.addr, msg))

    def pending_broadcasts(self) -> int:
        """Updates still queued for dissemination (0 when there is nobody left to
        send them to, so that a lone node's leave does not wait forever)."""
        if self.table.live_count <= 1:
            return 0
        return len(self.broadcasts)

    def set_tags(self, now: float, tags: dict[str, str]) -> None:
        """Rule (Serf tags): new tags are disseminated by an Alive update with a higher
        incarnation. Raises ValueError beyond ``tags_max_bytes`` encoded."""
        tags = dict(tags)
        for k, v in tags.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("tags must map str to str")
        if encoded_tags_size(tags) > self.config.tags_max_bytes:
            raise ValueError(f"tags exceed {self.config.tags_max_bytes} bytes encoded")
        me = self.table.by_name[self.name]
        me.tags = tags
        self._bump_self(now)
        self._member_event(MemberUpdated, me)

    def set_address(self, now: float, addr: str) -> None:
        """Change our advertised address (e.g. after binding port 0)."""
        if not _valid_addr(addr):
            raise ValueError(f"bad address {addr!r}")
        self.addr = addr
        me = self.table.by_name[self.name]
        me.addr = addr
        self.table.touch(me)
        if self.started:
            self._bump_self(now)

    def user_event(self, now: float, name: str, payload: bytes, coalesce: bool = True) -> int:
        """Send a user event to every member (see :meth:`Serf.user_event`)."""
        return self.serf.user_event(now, name, payload, coalesce)

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
        """Start a query; returns its id (see :meth:`Serf.query`)."""
        return self.serf.query(now, name, payload, filter_nodes, filter_tags, timeout, want_ack)

    def respond(self, now: float, query: Any, payload: bytes) -> bool:
        """Answer an incoming :class:`~clusterfunk.gossip.events.Query`."""
        return self.serf.respond(now, query, payload)

    def register_internal_query(self, name: str, handler: Callable[[float, Any], Any]) -> None:
        """Handle queries called ``name`` inside the node (never published as events).
        ``handler(now, query)`` returns response bytes, or None for no response."""
        self.serf.internal_handlers[name] = handler

    # ------------------------------------------------------ the Serf port

    # GossipCore implements :class:`clusterfunk.gossip.serf.SwimPort`: the Serf layer
    # uses these and nothing else of the core.

    def alive_members(self) -> list[tuple[str, str]]:
        """``(name, addr)`` of every member held alive, in table order."""
        by_name = self.table.by_name
        return [(n, by_name[n].addr) for n in self.table.names if by_name[n].status == ALIVE]

    def local_tags(self) -> Mapping[str, str]:
        """Our own tags (a read-only view)."""
        return MappingProxyType(self.table.by_name[self.name].tags)

    def schedule(self, at: float, what: tuple[Any, ...]) -> None:
        """A Serf timer: :meth:`Serf.on_timer` gets ``what`` at local time ``at``."""
        self._at(at, _SERF, what)

    def send(self, dest: str, msg: Any, stream: bool = False) -> None:
        """A message of the Serf layer: a datagram (with piggybacked gossip, see
        :meth:`_send`) or a frame on the stream channel."""
        if stream:
            self._out.send(dest, msg, stream=True)
        else:
            self._send(dest, msg)

    def broadcast(self, key: str, data: bytes) -> None:
        """Queue encoded ``data`` for gossip under ``key`` (see :class:`BroadcastQueue`)."""
        self.broadcasts.queue(key, data)
        if self._gossip_idle is not None:
            self._wake_gossip()

    def emit(self, ev: str, **fields: Any) -> None:
        """A trace record."""
        self._out.emit(ev, **fields)

    def event(self, obj: Any) -> None:
        """A public event."""
        self._out.events.append(obj)

    # ------------------------------------------------------------ timers, output

    def _at(self, t: float, kind: int, key: Any = None) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (t, self._tseq, kind, key))

    def _trace_member(self, rec: MemberRecord) -> None:
        self.table.touch(rec)  # every view change passes here
        self._out.emit(
            "gossip.member", member=rec.name, status=rec.status, incarnation=rec.incarnation
        )

    def _member_event(self, cls: Callable[[Member], object], rec: MemberRecord) -> None:
        """Publish membership event ``cls`` about ``rec`` (a snapshot), unless
        :attr:`member_events` is off."""
        if self.member_events:
            self._out.events.append(cls(rec.snapshot()))

    def _n(self) -> int:
        return len(self.table)

    def _queue_update(self, member: str, msg: Any, raw: bytes | None) -> None:
        """Queue a membership update for dissemination (replacing older ones about the
        same member)."""
        self.broadcasts.queue("m:" + member, raw if raw is not None else wire.encode(msg))
        if self._gossip_idle is not None:
            self._wake_gossip()

    def _send(self, dest: str, msg: Any, prefix: tuple[bytes, ...] = ()) -> None:
        """Rule (piggybacking): every datagram carries as many pending broadcasts as fit
        in the budget. ``prefix`` parts go first (buddy-system suspicion)."""
        bq = self.broadcasts
        if not prefix and not len(bq):
            self._out.sends.append(_send(dest, msg))
            return
        primary = wire.encode(msg)
        cfg = self.config
        budget = cfg.udp_buffer_size - cfg.packet_overhead - _COMPOUND_OVERHEAD
        budget -= len(primary) + PART_OVERHEAD + sum(len(p) + PART_OVERHEAD for p in prefix)
        extra = bq.get(budget, self._n(), dest, self.table.live_count - 1) if len(bq) else []
        if not prefix and not extra:
            self._out.sends.append(_send(dest, msg))
            return
        self._out.sends.append(_send(dest, Compound((*prefix, primary, *extra))))

    # ---------------------------------------------------------- failure detection

    def _probe_accept(self, name: str) -> bool:
        rec = self.table.by_name.get(name)
        return rec is not None and name != self.name and rec.status in (ALIVE, SUSPECT)

    def _probe_round(self, now: float) -> None:
        """Rule (SWIM protocol period): once per (awareness-scaled) probe interval, ping
        the next member in round-robin order."""
        interval = self.awareness.scale_timeout(self.config.probe_interval)
        self._start_probe(now, interval)
        # Pushed after the probe's own end-of-period timer, so that at the same
        # instant the old probe is concluded before the next one starts.
        self._at(now + interval, _PROBE)

    def _start_probe(self, now: float, interval: float) -> None:
        if self.leaving or self._probe is not None:
            return
        target = self.ring.next_target(self.table.names, self._probe_accept)
        if target is None:
            return
        rec = self.table.by_name[target]
        self._seq += 1
        seq = self._seq
        self._probe = Probe(seq, target, rec.addr, now)
        self.stats["probes"] += 1
        prefix: tuple[bytes, ...] = ()
        if rec.status == SUSPECT:
            prefix = self._buddy_suspicion(rec)
        self._send(rec.addr, Ping(seq, target, self.name, self.addr), prefix)
        timeout = self.awareness.scale_timeout(self.config.probe_timeout)
        self._at(now + timeout, _PROBE_TIMEOUT, seq)
        self._at(now + interval, _PROBE_END, seq)

    def _buddy_suspicion(self, rec: MemberRecord) -> tuple[bytes, ...]:
        """Rule (Lifeguard buddy system): a ping to a member we suspect carries the
        suspicion, placed before the ping, so the member refutes at once and its ack
        already piggybacks the refutation."""
        return (wire.encode(Suspect(rec.incarnation, rec.name, self.name)),)

    def _on_ping(self, now: float, src: str, msg: Ping, raw: bytes | None, stream: bool) -> None:
        """Rule (SWIM): answer a ping addressed to us with an ack (plus gossip)."""
        if msg.target != self.name:
            self.stats["misdirected"] += 1
            return
        dest = msg.source_addr if _valid_addr(msg.source_addr) else src
        self._send(dest, Ack(msg.seq, self.name, self.vivaldi.coord))

    def _probe_indirect(self, now: float, seq: int) -> None:
        """Rule (SWIM ping-req): no ack within the probe timeout: ask k random members
        to ping the target for us, each promising a nack if they cannot reach it."""
        p = self._probe
        if p is None or p.seq != seq or p.acked:
            return
        p.indirect = True
        target = p.target

        def accept(rec: MemberRecord) -> bool:
            return rec.status == ALIVE and rec.name != self.name and rec.name != target

        helpers = self.table.random_members(self.rng, self.config.indirect_checks, accept)
        for h in helpers:
            self._send(h.addr, IndirectPing(seq, target, p.target_addr, self.name, self.addr, True))
        p.expected_nacks = len(helpers)
        self.stats["indirect"] += len(helpers)

    def _on_indirect_ping(
        self, now: float, src: str, msg: IndirectPing, raw: bytes | None, stream: bool
    ) -> None:
        """Rule (SWIM ping-req, relay side): ping the target with our own sequence number
        and relay its ack; send a nack if it does not answer within the probe timeout."""
        if not _valid_addr(msg.target_addr):
            self.stats["invalid"] += 1
            return
        origin = msg.source_addr if _valid_addr(msg.source_addr) else src
        self._seq += 1
        seq = self._seq
        self._relays[seq] = Relay(origin, msg.seq, msg.target, msg.nack)
        self._send(msg.target_addr, Ping(seq, msg.target, self.name, self.addr))
        self._at(now + self.config.probe_timeout, _RELAY, seq)

    def _relay_timeout(self, now: float, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and relay.nack:
            self._send(relay.origin_addr, Nack(relay.origin_seq, self.name))

    def _on_ack(self, now: float, src: str, msg: Ack, raw: bytes | None, stream: bool) -> None:
        """Rule (SWIM): an ack for our probe ends it successfully (Lifeguard: health
        improves; Vivaldi: a direct ack is an RTT sample). An ack for a relayed ping
        is forwarded to whoever asked."""
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self._send(relay.origin_addr, Ack(relay.origin_seq, msg.source, None))
            return
        p = self._probe
        if p is None or p.seq != msg.seq or p.acked:
            self.stats["stale"] += 1
            return
        p.acked = True
        self._probe = None
        self.awareness.apply_delta(aw.PROBE_SUCCESS_DELTA)
        coord = msg.coord
        direct = not p.indirect and msg.source == p.target
        if (
            direct
            and coord is not None
            and self.vivaldi.update(p.target, coord, now - p.sent) is not None
        ):
            self.coords[p.target] = coord

    def _on_nack(self, now: float, src: str, msg: Nack, raw: bytes | None, stream: bool) -> None:
        p = self._probe
        if p is not None and p.seq == msg.seq and not p.acked:
            p.nacks += 1
            self.stats["nacks"] += 1

    def _probe_end(self, now: float, seq: int) -> None:
        """Rule (SWIM + Lifeguard): no ack by the end of the protocol period: our health
        score rises by the missing nacks, and the target becomes suspect."""
        p = self._probe
        if p is None or p.seq != seq or p.acked:
            return
        self._probe = None
        self.stats["probe_failures"] += 1
        self.awareness.apply_delta(aw.probe_failure_delta(p.expected_nacks, p.nacks))
        rec = self.table.by_name.get(p.target)
        if rec is None or rec.status not in (ALIVE, SUSPECT):
            return
        self._on_suspect(now, self.addr, Suspect(rec.incarnation, rec.name, self.name), None, False)

    # ---------------------------------------------------------- membership rules

    def _refute(self, now: float, incarnation: int) -> None:
        """Rule (SWIM refutation): someone holds a claim about us at ``incarnation`` that
        we dispute: jump above it and disseminate that we are alive. This is also how
        a restarted node learns its old incarnation and rejoins above it (Lifeguard:
        having to refute lowers our health)."""
        if self.leaving:
            return
        if "swim-never-refute" in self.config.mutants:
            return  # MUTANT: breaks SWIM 4.2 (refute a suspicion with a higher incarnation)
        # Capped: peers accept no incarnation above the bound (claims are accepted
        # only below it, so the cap always still beats the claim being answered).
        self.incarnation = min(max(self.incarnation, incarnation) + 1, MAX_INCARNATION)
        me = self.table.by_name[self.name]
        me.incarnation = self.incarnation
        self.stats["refutes"] += 1
        self.awareness.apply_delta(aw.REFUTE_DELTA)
        self._trace_member(me)
        self._out.emit("gossip.refute", incarnation=self.incarnation)
        self._queue_update(self.name, Alive(self.incarnation, self.name, self.addr, me.tags), None)

    def _claim_about_us(self, now: float, incarnation: int, src: str) -> None:
        """Rule (SWIM refutation, for stale claims as memberlist: no new incarnation;
        the direct answer is ours): a suspicion, death or leave claimed about us at
        our incarnation or above is refuted (:meth:`_refute`). A claim below it is
        one we have refuted already: refuting it again would raise our incarnation
        once per stale copy still in flight. Its sender evidently missed the
        refutation (or still announces an old suspicion, see
        :meth:`_refresh_suspicion`), so it gets our current Alive, directly. A
        member that is leaving answers nothing (its Leave is what it announces)."""
        if self.leaving:
            return
        if incarnation >= self.incarnation:
            self._refute(now, incarnation)
            return
        self.stats["stale"] += 1
        if _valid_addr(src) and src != self.addr:
            me = self.table.by_name[self.name]
            self._send(src, Alive(self.incarnation, self.name, self.addr, me.tags))

    def _bump_self(self, now: float) -> None:
        self.incarnation += 1
        me = self.table.by_name[self.name]
        me.incarnation = self.incarnation
        self._trace_member(me)
        self._queue_update(self.name, Alive(self.incarnation, self.name, self.addr, me.tags), None)

    def _cancel_suspicion(self, name: str) -> None:
        self._suspicions.pop(name, None)

    def _on_alive(self, now: float, src: str, msg: Alive, raw: bytes | None, stream: bool) -> None:
        self._alive_node(now, msg, raw)

    def _alive_node(
        self, now: float, msg: Alive, raw: bytes | None, rebroadcast: bool = True
    ) -> None:
        self._alive(now, msg.incarnation, msg.node, msg.addr, msg.tags, msg, raw, rebroadcast)

    def _alive(
        self,
        now: float,
        incarnation: int,
        name: str,
        addr: str,
        tags: dict[str, str],
        msg: Alive | None,
        raw: bytes | None,
        rebroadcast: bool,
    ) -> None:
        """Rule (memberlist aliveNode): learn a new member, or accept an Alive with a
        higher incarnation than ours (which clears suspicion, revives a dead or left
        member, and carries new tags / address). About ourselves: refute any claim
        at a higher incarnation, or at ours with other tags or address.

        The Alive is given as its fields (``msg``, when there is one, is that Alive:
        a push-pull entry has none, and one is made only to re-gossip it)."""
        if not 0 <= incarnation <= MAX_INCARNATION or (
            name == self.name and not _refutable(incarnation)
        ):
            self.stats["invalid"] += 1
            return
        rec = self.table.by_name.get(name)
        if rec is not None and incarnation <= rec.incarnation and name != self.name:
            self.stats["stale"] += 1  # the common case: an update we already have
            return
        if (
            not _valid_name(name)
            or not _valid_addr(addr)
            or encoded_tags_size(tags) > self.config.tags_max_bytes
        ):
            self.stats["invalid"] += 1
            return
        if name == self.name:
            me = self.table.by_name[name]
            if incarnation > self.incarnation or (
                incarnation == self.incarnation and (addr != me.addr or tags != me.tags)
            ):
                self._refute(now, incarnation)
            return
        if rec is None:
            self._learn(now, incarnation, name, addr, tags, msg, raw, rebroadcast)
            return
        old_status = rec.status
        changed = rec.addr != addr or rec.tags != tags
        rec.incarnation = incarnation
        rec.addr = addr
        rec.tags = dict(tags)
        self.table.set_status(rec, ALIVE, now)
        self._cancel_suspicion(name)
        self._trace_member(rec)
        if rebroadcast:
            self._queue_update(
                name, msg if msg is not None else Alive(incarnation, name, addr, tags), raw
            )
        if old_status in (DEAD, LEFT):
            self._member_event(MemberJoined, rec)
        elif changed or old_status == SUSPECT:
            self._member_event(MemberUpdated, rec)

    def _learn(
        self,
        now: float,
        incarnation: int,
        name: str,
        addr: str,
        tags: dict[str, str],
        msg: Alive | None,
        raw: bytes | None,
        rebroadcast: bool,
        entry: MemberState | None = None,
    ) -> None:
        """A new member, alive (:meth:`_alive` after its checks): added to the table and
        to a random place of the probe ring (:meth:`ProbeRing.add`), traced, re-gossiped
        if ``rebroadcast``, published as :class:`MemberJoined`.

        ``entry``: the push-pull entry it was learnt from (alive, these fields): it
        serves as the member's own entry in our state (no copy), its tag map as the
        record's (:meth:`MemberTable.add_entry`)."""
        if entry is None:
            self.table.add(MemberRecord(name, addr, incarnation, ALIVE, dict(tags), now))
        else:
            self.table.add_entry(entry, now)
        self.ring.add(name)
        out = self._out
        # _trace_member, inlined: a mass join learns n^2 members
        out.trace.append(
            ("gossip.member", {"member": name, "status": ALIVE, "incarnation": incarnation})
        )
        if rebroadcast:
            self._queue_update(
                name, msg if msg is not None else Alive(incarnation, name, addr, tags), raw
            )
        if self.member_events:
            out.events.append(MemberJoined(Member(name, addr, ALIVE, incarnation, dict(tags))))

    def _accused(
        self, now: float, msg: Suspect | Dead, refute: bool, src: str = ""
    ) -> MemberRecord | None:
        """The screening shared by suspicion and death claims: drop (and count) a claim
        with an impossible incarnation, about an unknown member, or older than what we
        know (or about a member already dead or gone); a claim about ourselves is
        answered when ``refute`` (:meth:`_claim_about_us`). Returns the member record
        to act on, else None."""
        if not _refutable(msg.incarnation):
            self.stats["invalid"] += 1
            return None
        if msg.node == self.name:
            if refute:
                self._claim_about_us(now, msg.incarnation, src)
            return None
        rec = self.table.get(msg.node)
        if rec is None:
            self.stats["unknown_member"] += 1
            return None
        if msg.incarnation < rec.incarnation or rec.status in (DEAD, LEFT):
            self.stats["stale"] += 1
            return None
        return rec

    def _on_suspect(
        self, now: float, src: str, msg: Suspect, raw: bytes | None, stream: bool
    ) -> None:
        """Rule (SWIM suspicion + Lifeguard): a member suspected at its current (or a
        newer) incarnation becomes suspect with a local-health-aware timer; further
        suspicions from other members confirm it and shorten the timer. A suspicion
        about ourselves is refuted."""
        name = msg.node
        rec = self._accused(now, msg, refute=True, src=src)
        if rec is None:
            return
        if "gossip-dead-without-suspicion" in self.config.mutants:
            # MUTANT: breaks SWIM 4.2 / Lifeguard: dead at once, no time to refute
            self._dead_node(now, Dead(msg.incarnation, name, msg.accuser), None)
            return
        if rec.status == SUSPECT and msg.incarnation == rec.incarnation:
            s = self._suspicions.get(name)
            if s is not None and s.confirm(msg.accuser):
                self._at(s.next_wake(), _SUSPICION, name)
                self._queue_update(name, msg, raw)
            return
        rec.incarnation = msg.incarnation
        self.table.set_status(rec, SUSPECT, now)
        self.stats["suspicions"] += 1
        n = self._n()
        cfg = self.config
        k = su.expected_confirmations(cfg.suspicion_mult, n)
        tmin = su.suspicion_min_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        tmax = su.suspicion_max_timeout(cfg.suspicion_max_timeout_mult, tmin)
        s = su.Suspicion(now, msg.incarnation, msg.accuser, k, tmin, tmax)
        self._suspicions[name] = s
        self._at(s.next_wake(), _SUSPICION, name)
        self._trace_member(rec)
        self._queue_update(name, msg, raw)
        self._member_event(MemberSuspect, rec)

    def _suspicion_timer(self, now: float, name: str) -> None:
        """A suspicion's timer: the member dies at the deadline (:meth:`_suspicion_timeout`);
        before that, the suspicion is announced again at its refresh points
        (:meth:`_refresh_suspicion`). A refresh point that passed unserved (we
        were stalled) is served first, which moves the deadline to one min timeout
        later. Wake-ups left behind by a moved deadline do nothing."""
        s = self._suspicions.get(name)
        if s is None:
            return
        rec = self.table.get(name)
        if rec is None or rec.status != SUSPECT or rec.incarnation != s.incarnation:
            self._suspicions.pop(name, None)
            return
        due = s.next_refresh()
        if due is not None and now >= due:
            s.last_call = now
            self._refresh_suspicion(now, rec, s)
            self._at(s.next_wake(), _SUSPICION, name)
        elif now >= s.deadline:
            self._suspicion_timeout(now, rec)

    def _suspicion_timeout(self, now: float, rec: MemberRecord) -> None:
        """Rule (SWIM confirm): an unrefuted suspicion whose (shrinking) timeout has
        passed makes the member dead."""
        self._dead_node(now, Dead(rec.incarnation, rec.name, self.name), None)

    def _refresh_suspicion(self, now: float, rec: MemberRecord, s: su.Suspicion) -> None:
        """Rule (ours, suspicion refresh; see :mod:`.suspicion`): a pending suspicion
        is queued for dissemination again, unchanged (same incarnation, same
        accuser, so it counts as no new confirmation anywhere), at each refresh
        point, the last one a min timeout before the deadline. Its first
        announcement may have been spent on one side of a partition that has healed
        since; the suspect then hears of it in time to refute instead of being
        declared dead."""
        self._queue_update(rec.name, Suspect(s.incarnation, rec.name, s.accuser), None)
        # Buddy system: the suspect is the one member that must hear it; it goes
        # first in a gossip packet sent to it now (one of its transmissions).
        self._gossip_to(rec.addr)

    def _on_dead(self, now: float, src: str, msg: Dead, raw: bytes | None, stream: bool) -> None:
        self._dead_node(now, msg, raw, src)

    def _dead_node(self, now: float, msg: Dead, raw: bytes | None, src: str = "") -> None:
        """Rule (SWIM confirm, memberlist deadNode): a member declared dead at its
        current (or a newer) incarnation is failed; a claim that we are dead is
        refuted."""
        name = msg.node
        rec = self._accused(now, msg, refute=not self.leaving, src=src)
        if rec is None:
            return
        rec.incarnation = msg.incarnation
        self.table.set_status(rec, DEAD, now)
        self._cancel_suspicion(name)
        self._trace_member(rec)
        self._queue_update(name, msg, raw)
        self._member_event(MemberFailed, rec)

    def _on_leave(self, now: float, src: str, msg: Leave, raw: bytes | None, stream: bool) -> None:
        self._leave_node(now, msg, raw, src)

    def _leave_node(self, now: float, msg: Leave, raw: bytes | None, src: str = "") -> None:
        """Rule (Serf leave intent): a graceful leave at the member's current (or a
        newer) incarnation marks it left -- not failed -- and keeps a tombstone until
        ``tombstone_timeout``. A leave claimed for us while we are not leaving is
        refuted."""
        name = msg.node
        if not _refutable(msg.incarnation) or not _refutable(msg.ltime):
            self.stats["invalid"] += 1
            return
        self.member_clock.witness(msg.ltime)
        if name == self.name:
            if not self.leaving:
                self._claim_about_us(now, msg.incarnation, src)
            return
        rec = self.table.get(name)
        if rec is None:
            self.stats["unknown_member"] += 1
            return
        if msg.incarnation < rec.incarnation or rec.status == LEFT:
            self.stats["stale"] += 1
            return
        if rec.status == DEAD and msg.incarnation == rec.incarnation:
            # It left after we declared it failed (or the leave raced the failure):
            # a leave is the more precise verdict, keep it.
            pass
        rec.incarnation = msg.incarnation
        self.table.set_status(rec, LEFT, now)
        self._cancel_suspicion(name)
        self._trace_member(rec)
        self._queue_update(name, msg, raw)
        self._member_event(MemberLeft, rec)

    # ---------------------------------------------------------- dissemination

    def _gossip_accept(self, now: float) -> Callable[[MemberRecord], bool]:
        dead_window = self.config.gossip_to_the_dead_time
        me = self.name

        def accept(rec: MemberRecord) -> bool:
            if rec.name == me:
                return False
            if rec.status in (ALIVE, SUSPECT):
                return True
            return now - rec.since < dead_window

        return accept

    def _gossip_round(self, now: float, reschedule: bool = True) -> None:
        """Rule (memberlist gossip): every gossip interval, send pending broadcasts to
        gossip_nodes random members -- alive or suspect ones, and dead or left ones
        for gossip_to_the_dead_time after they went (so they can refute).

        A round that finds nothing to send arms no next round (the dormant gossip
        timer): rounds with an empty queue do nothing, so the node does not wake for
        them. The first update queued after it re-arms the timer at the next point of
        the same cadence (:meth:`_wake_gossip`), when the round would have come."""
        bq = self.broadcasts
        if not len(bq):
            if reschedule:
                self._gossip_idle = now
            return
        if reschedule:
            self._at(now + self.config.gossip_interval, _GOSSIP)
        targets = self.table.random_members(
            self.rng, self.config.gossip_nodes, self._gossip_accept(now)
        )
        for rec in targets:
            self._gossip_to(rec.addr)

    def _wake_gossip(self) -> None:
        """Re-arm the dormant gossip timer at the first round time, on the cadence of
        the round that went idle, not before the current input (the same additions
        as the rounds that were skipped: the same times)."""
        t = self._gossip_idle
        assert t is not None
        self._gossip_idle = None
        interval = self.config.gossip_interval
        t += interval
        now = self._now
        while t < now:
            t += interval
        self._at(t, _GOSSIP)

    def _gossip_to(self, addr: str) -> None:
        """One gossip packet to ``addr``: as many pending broadcasts as fit, the least
        transmitted first (nothing is sent if there are none)."""
        cfg = self.config
        budget = cfg.udp_buffer_size - cfg.packet_overhead - _COMPOUND_OVERHEAD
        parts = self.broadcasts.get(budget, self._n(), addr, self.table.live_count - 1)
        if parts:
            self._out.sends.append(_send(addr, Compound(tuple(parts))))

    # ---------------------------------------------------------- anti-entropy

    def _local_state(self, join: bool, reply: bool) -> PushPull:
        serf = self.serf
        return PushPull(
            self.name,
            self.addr,
            join,
            reply,
            self.table.wire_states(),
            self.member_clock.time,
            serf.event_clock.time,
            serf.query_clock.time,
            serf.recent_events(),
        )

    def _reply_state(self, msg: PushPull) -> PushPull:
        """Rule (ours, delta reply): the answer to a push-pull carries the entries of our
        state that the initiator's merge (:meth:`_merge_state`) would not skip, judged
        against the state it has just sent us. An entry is left out when the initiator
        listed that member at an incarnation at least ours and with a status our entry
        cannot change there (ours is alive, or the same as its); the entry about the
        initiator itself always goes back. memberlist answers with its full state: the
        entries left out are those the initiator would skip as stale on arrival (its
        view of a member only moves forward), so what it merges is the same, while a
        push-pull between two members that already agree -- the settle after a join,
        most periodic rounds -- carries one full state instead of two."""
        state = self._local_state(msg.join, True)
        by_name = self.table.by_name
        source = msg.source
        # what the initiator holds, as (name, incarnation, status): its entries, and
        # a settle digest's triples (lengths checked in _on_push_pull)
        held: Iterable[tuple[str, int, str]] = (
            (st.name, st.incarnation, st.status) for st in msg.members)
        if msg.digest_names:
            held = chain(held, zip(msg.digest_names, msg.digest_incarnations,
                                   map(_LETTER_STATUS.__getitem__, msg.digest_statuses),
                                   strict=True))
            state = attrs.evolve(state, want=self._wanted(msg))
        omit: set[str] = set()
        for name, inc, status in held:
            rec = by_name.get(name)
            if (
                rec is not None
                and rec.incarnation <= inc
                and name != source
                and (rec.status == ALIVE or rec.status == status)
            ):
                omit.add(name)
        if not omit:
            return state
        members = tuple([e for e in state.members if e.name not in omit])
        return attrs.evolve(state, members=members)

    def _push_pull_round(self, now: float) -> None:
        """Rule (memberlist push-pull): every push_pull_interval (scaled beyond 32
        members) exchange full state with one random live member over a stream."""
        interval = push_pull_scale(self.config.push_pull_interval, self._n())
        self._at(now + interval, _PUSH_PULL)
        self._push_pull_once(now)

    def _push_pull_once(self, now: float) -> None:
        """One push-pull with a random alive member (the periodic round)."""
        if self.leaving:
            return
        me = self.name
        peers = self.table.random_members(self.rng, 1, lambda r: r.name != me and r.status == ALIVE)
        for rec in peers:
            self._out.sends.append(_send(rec.addr, self._local_state(False, False), True))
            self.stats["push_pulls"] += 1

    def _settle(self, now: float) -> None:
        """Rule (ours: anti-entropy after join): once, 2-5 protocol periods after
        joining, a push-pull with a random alive member, so that members who joined
        concurrently -- whose alive gossip was spent before we were known -- converge
        at once instead of a push-pull interval later.

        It starts with a digest (:meth:`_digest_state`: our own entry, and name,
        incarnation and status of every other member), not our full state: by then
        the two members agree on nearly everything. The answer is the delta as for
        a full state (:meth:`_reply_state`) plus the names whose entries the peer's
        merge would take (``want``), which we then send in a one-way push
        (:meth:`_push_wanted`). Both sides end as after a full push-pull; the
        entries that would be stale on arrival are not sent."""
        if self.leaving:
            return
        me = self.name
        peers = self.table.random_members(self.rng, 1, lambda r: r.name != me and r.status == ALIVE)
        for rec in peers:
            self._out.sends.append(_send(rec.addr, self._digest_state(rec.name, rec.addr), True))
            self.stats["push_pulls"] += 1

    def _digest_state(self, peer: str, addr: str) -> PushPull:
        """A push-pull request carrying a digest of our members (see :meth:`_settle`);
        the state digested is kept until ``peer`` answers."""
        states = self.table.wire_states()
        me = self.name
        own = tuple([e for e in states if e.name == me])
        others = [e for e in states if e.name != me]
        digests = self._digests
        digests.pop(peer, None)
        if len(digests) >= _MAX_DIGESTS:
            del digests[next(iter(digests))]
        digests[peer] = (addr, states)
        letter = _STATUS_LETTER
        return attrs.evolve(
            self._local_state(False, False),
            members=own,
            digest_names=tuple([e.name for e in others]),
            digest_incarnations=tuple([e.incarnation for e in others]),
            digest_statuses="".join([letter[e.status] for e in others]),
        )

    def _wanted(self, msg: PushPull) -> tuple[str, ...]:
        """The members of a digest whose entries :meth:`_merge_state` would not skip
        here (the same test as its, from name, incarnation and status), and unknown
        ones it would learn (alive, or left: a tombstone)."""
        by_name = self.table.by_name
        me = self.name
        status_of = _LETTER_STATUS
        want = []
        for name, inc, letter in zip(
            msg.digest_names, msg.digest_incarnations, msg.digest_statuses, strict=True
        ):
            status = status_of[letter]
            rec = by_name.get(name)
            if rec is None:
                if status in (ALIVE, LEFT):
                    want.append(name)
            elif not (
                inc <= rec.incarnation
                and name != me
                and (status == ALIVE or status == rec.status)
            ):
                want.append(name)
        return tuple(want)

    def _push_wanted(self, msg: PushPull) -> None:
        """The answer to our settle digest named members its sender wants: send their
        entries as they were digested, in a one-way push (``reply=True``, not
        answered)."""
        sent = self._digests.pop(msg.source, None)
        if sent is None or self.leaving:
            return
        addr, states = sent
        want = set(msg.want)
        entries = tuple([e for e in states if e.name in want])
        if entries:
            push = attrs.evolve(self._local_state(False, True), members=entries, events=())
            self._out.sends.append(_send(addr, push, True))

    def _join_retry(self, now: float) -> None:
        if self.joined or not self._join_seeds or self.leaving:
            return
        if self._join_attempts >= self.config.join_max_attempts:
            self._join_gave_up = True
            self._out.emit("gossip.join_failed", seeds=list(self._join_seeds))
            return
        self._join_attempts += 1
        state = self._local_state(True, False)
        for seed in self._join_seeds:
            self._out.sends.append(_send(seed, state, True))
        self._at(now + self.config.join_retry_interval, _JOIN_RETRY)

    def _reconnect(self, now: float) -> None:
        """Rule (Serf reconnect): every reconnect_interval try one random failed member
        with a push-pull, so that the two sides of a healed partition merge again."""
        self._at(now + self.config.reconnect_interval, _RECONNECT)
        counts = self.table.counts
        if self.leaving or counts[DEAD] == 0:
            return
        # Serf: attempt with probability failed / alive, so that the cluster as a
        # whole makes about one attempt per interval per failed member.
        if self.rng.random() > counts[DEAD] / max(1, counts[ALIVE]):
            return
        peers = self.table.random_members(self.rng, 1, lambda r: r.status == DEAD)
        if not peers and self.table.counts[DEAD]:
            dead = [n for n in self.table.names if self.table.by_name[n].status == DEAD]
            peers = [self.table.by_name[self.rng.choice(dead)]]
        for rec in peers:
            self._out.sends.append(_send(rec.addr, self._local_state(False, False), True))

    def _on_push_pull(
        self, now: float, src: str, msg: PushPull, raw: bytes | None, stream: bool
    ) -> None:
        """Rule (memberlist push-pull): answer an initiating push-pull with our state,
        then merge the remote state."""
        clocks = (msg.member_ltime, msg.event_ltime, msg.query_ltime)
        if not stream or not all(_refutable(t) for t in clocks):
            self.stats["invalid"] += 1  # full state only travels on streams
            return
        names = msg.digest_names
        if (names or msg.digest_incarnations or msg.digest_statuses) and (
            msg.reply
            or len(msg.digest_incarnations) != len(names)
            or len(msg.digest_statuses) != len(names)
            or not _LETTERS.issuperset(msg.digest_statuses)
        ):
            self.stats["invalid"] += 1  # a digest is a request's, one triple per member
            return
        if msg.want and not msg.reply:
            self.stats["invalid"] += 1
            return
        if not msg.reply:
            dest = msg.source_addr if _valid_addr(msg.source_addr) else src
            if not self.leaving:
                self._out.sends.append(_send(dest, self._reply_state(msg), True))
        elif not self.joined and (msg.join or self._join_seeds):
            self.joined = True
            self._out.emit("gossip.joined", via=msg.source)
            interval = self.config.probe_interval
            self._at(now + interval * (2.0 + 3.0 * self.rng.random()), _SETTLE)
        self.member_clock.witness(msg.member_ltime)
        self.serf.witness(msg.event_ltime, msg.query_ltime)
        self.serf.merge_events(now, msg.events)
        rebroadcast = self.REBROADCAST_JOIN or not (msg.reply and msg.join)
        self._merge_state(now, msg.members, rebroadcast)
        if msg.reply and msg.source in self._digests:
            self._push_wanted(msg)

    def _merge_state(
        self, now: float, states: tuple[MemberState, ...], rebroadcast: bool = True
    ) -> None:
        """Rule (memberlist mergeRemoteState): alive entries are merged as Alive, left
        ones as Leave; a remote dead or suspect entry only makes the member suspect
        here (it gets its chance to refute before we call it dead).

        A joiner merging the seed's reply does not re-gossip the alive entries: they
        are news to nobody but itself (this keeps a mass join from flooding)."""
        by_name = self.table.by_name
        me = self.name
        alive = self._alive
        learn = self._learn
        max_tags = self.config.tags_max_bytes
        stale = 0
        for st in states:
            name = st.name
            status = st.status
            rec = by_name.get(name)
            if rec is not None:
                if (
                    st.incarnation <= rec.incarnation
                    and name != me
                    and (status == ALIVE or status == rec.status)
                ):
                    stale += 1  # nothing new (the common case)
                    continue
            elif status == ALIVE and 0 < len(name) <= MAX_NAME:  # a member to learn
                # (the checks of _alive for an unknown member, then _learn)
                inc = st.incarnation
                addr = st.addr
                tags = st.tags
                if (
                    0 <= inc <= MAX_INCARNATION
                    and _valid_addr(addr)
                    and encoded_tags_size(tags) <= max_tags
                ):
                    learn(now, inc, name, addr, tags, None, None, rebroadcast, st)
                else:
                    self.stats["invalid"] += 1
                continue
            if status not in STATUSES or not _valid_name(name):
                self.stats["invalid"] += 1
                continue
            if status == ALIVE:
                alive(now, st.incarnation, name, st.addr, st.tags, None, None, rebroadcast)
                continue
            if st.name not in self.table:
                if st.status == LEFT and _valid_addr(st.addr):
                    # A tombstone we never knew: keep it, so the member's old alive
                    # messages cannot resurrect it here.
                    rec = MemberRecord(st.name, st.addr, st.incarnation, LEFT, dict(st.tags), now)
                    self.table.add(rec)
                    self._trace_member(rec)
                else:  # memberlist: unknown dead / suspect members are not learnt
                    self.stats["unknown_member"] += 1
                continue
            if st.status == LEFT:
                self._leave_node(now, Leave(st.incarnation, st.name, 0), None)
            else:
                self._on_suspect(now, "", Suspect(st.incarnation, st.name, self.name), None, False)
        self.stats["stale"] += stale

    # ---------------------------------------------------------- reaping

    def _reap(self, now: float) -> None:
        """Rule (Serf reaper): forget members dead for longer than reconnect_timeout and
        tombstones of members that left longer than tombstone_timeout ago."""
        cfg = self.config
        self._at(now + cfg.reap_interval, _REAP)
        table = self.table
        if table.counts[DEAD] == 0 and table.counts[LEFT] == 0:
            return
        doomed = []
        for name in table.names:
            rec = table.by_name[name]
            if (rec.status == DEAD and now - rec.since >= cfg.reconnect_timeout) or (
                rec.status == LEFT
                and name != self.name
                and now - rec.since >= cfg.tombstone_timeout
            ):
                doomed.append(rec)
        for rec in doomed:
            table.remove(rec.name)
            self.coords.pop(rec.name, None)
            self.vivaldi.forget(rec.name)
            self._out.emit(
                "gossip.reap", member=rec.name, status=rec.status, incarnation=rec.incarnation
            )
            self._member_event(MemberReaped, rec)
