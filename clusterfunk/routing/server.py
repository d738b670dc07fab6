"""The request server: a node's sans-I/O routing core (port ``app``, default 8600).

A :class:`RequestServer` runs on every cluster member that has a
:class:`~clusterfunk.routing.api.ShardService`, driven by a
:class:`~clusterfunk.runtime.driver.Driver` that
:class:`~clusterfunk.cluster.assembly.ClusterNode` creates -- the same wiring on
a real host and in the simulator. It reads the coordinator through
:class:`OwnershipView` (``serves``, the committed map, the pending proposal) and
gossip through :class:`~clusterfunk.cluster.views.MembershipView` (the members'
request addresses, tag :data:`~clusterfunk.routing.api.TAG_REQUESTS`); it never
changes them. Pure: no trio, no clock, no global random.

Rules (one method each, named in its docstring):

1. **Serve rule** (:meth:`_serve`): a request is handled by the service only
   while the coordinator says ``serves(now, shard)`` *and* the service acquired
   the shard (its handoff finished). Nothing else calls ``service.handle``, so no
   ``ok`` answer ever comes from a node that does not own the shard at that
   instant (docs/routing.md).
2. **Moved rule** (:meth:`_moved`): a request for a shard whose owner in the
   latest map this node applied (the pending proposal if any, else the committed
   map) is another node is answered ``moved`` naming that owner, its request
   address and the map index.
3. **Forward rule** (:meth:`_forward`, ``ForwardMode.FORWARD``): instead, the
   request is forwarded once (``hops=1``: never again) to the owner and the
   owner's answer relayed; no answer within ``forward_wait`` (or the request's
   budget) -> ``busy``.
4. **Queue rule** (:meth:`_enqueue`, :meth:`_drain`): a request for a shard this
   node owns in the latest map but does not serve yet (gained under a pending
   proposal, the gain waiting for the commit or the lease, or the handoff
   state not in yet) waits in a queue bounded in count (``max_queue``) and time
   (``queue_wait``, and the request's own budget). It is served when the shard
   is served, answered ``moved`` if the map gives the shard away, and ``busy``
   past its bound or when the queue is full. Never dropped silently.
5. **Release rule** (:meth:`release`): when the coordinator releases shards
   (``ReleaseShards``, before the node acks the proposal), the service's
   ``release`` returns their state, which is parked and handed to each shard's
   owner in the latest map (:meth:`_send_parked`); the release is reported done
   (:class:`Released`, after which the held ack leaves) once every handoff is
   acknowledged or ``handoff_ack_wait`` passed.
6. **Gain rule** (:meth:`ownership`): shards the coordinator starts serving are
   acquired by the service with the state parked here; a shard whose previous
   owner is in the new committed map (so it released it and handed its state
   over before acking) and whose state is not here in a version at least that
   of the previous map (parked state from an older fence is stale) waits for
   the handoff, at most ``handoff_wait``; then it is acquired with what is here
   (an older parked version, or nothing; counted). A shard whose state this node
   handed away under a proposal newer than the previous map (a superseded
   proposal) waits the same way for that state to come back.
7. **Parked state rule** (:meth:`_send_parked`, :meth:`_on_handoff`): state this
   node holds for a shard it does not serve (a superseded proposal, a fence) is
   sent to the shard's owner in the latest map, re-sent every
   ``handoff_retry`` until acknowledged; a receiver keeps the newest version
   (map index) and drops state for a shard it already serves (late, counted).
   A node that is stopping (a graceful leave: it will not see the map that
   leaves it out, since it is removed from Raft first) sends it to the owner in
   the committed map updated without it (:meth:`_successor`, the map the leader
   will propose unless other members change too; a wrong guess is corrected by
   the receiver, which moves parked state on by this same rule).
8. **Map rule** (:meth:`_on_map_query`): any asker gets the committed map (blob
   and index; the blob only when the asker's index is older) and the live
   members' request addresses.
9. **Hostile input rule**: anything from the network is validated (payload size,
   shard range, message kind); bad input is answered ``error`` when it is a
   request, otherwise dropped and counted in :attr:`RequestServer.stats`.

Trace records: ``app.request`` (the node that answered a request itself:
``client``, ``id``, ``key``, ``shard``, ``outcome``), ``app.forward`` (a node
relayed the owner's answer) and ``app.handoff`` (state sent); docs/trace.md.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from clusterfunk.cluster.statemachine import MapRecord
from clusterfunk.cluster.views import MembershipView
from clusterfunk.routing.api import TAG_REQUESTS, ForwardMode, Outcome, ServiceError, ShardService
from clusterfunk.routing.messages import (
    Handoff,
    HandoffAck,
    MapAnswer,
    MapQuery,
    Reply,
    Request,
)
from clusterfunk.runtime.api import Outbox, Output
from clusterfunk.sharding import ShardMap, ShardMapDecodeError


@attrs.frozen
class ServerConfig:
    """Bounds of the request server (seconds of the local clock).

    * ``forward`` (moved): what to do with a request for a shard served elsewhere.
    * ``max_queue`` (1000) / ``queue_wait`` (1.0): the handoff queue's bounds.
    * ``handoff_wait`` (0.5): a gained shard waits this long for its state.
    * ``handoff_ack_wait`` (0.2): a release waits this long for the handoff acks
      before it is reported done (keep it well below the coordinator's
      ``ack_timeout``, 0.5 s by default, or the node is quarantined).
    * ``handoff_retry`` (0.1): unacknowledged parked state is re-sent this often
      (well below ``handoff_wait``, so one lost frame does not cost the state).
    * ``forward_wait`` (1.0) / ``max_forwards`` (1000): forwarded requests in
      flight, bounded in time and count (over the count: answered ``moved``).
    * ``max_payload`` (1 MiB): larger requests are answered ``error``.
    * ``max_early_handoffs`` (64): handoffs that arrive before this node applied
      the proposal they come from (a joiner, a lagging node) are held, at most this
      many and at most ``queue_wait`` each, until it applies it.
    """

    forward: ForwardMode = ForwardMode.MOVED
    max_queue: int = 1000
    queue_wait: float = 1.0
    handoff_wait: float = 0.5
    handoff_ack_wait: float = 0.2
    handoff_retry: float = 0.1
    forward_wait: float = 1.0
    max_forwards: int = 1000
    max_payload: int = 1 << 20
    max_early_handoffs: int = 64

    def __attrs_post_init__(self) -> None:
        if self.max_queue < 0 or self.max_forwards < 0 or self.max_early_handoffs < 0:
            raise ValueError("max_queue, max_forwards and max_early_handoffs must be >= 0")
        for name in ("queue_wait", "handoff_wait", "handoff_ack_wait", "handoff_retry",
                     "forward_wait"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")


class OwnershipView(Protocol):
    """What the request server reads of the coordinator (current values; the
    :class:`~clusterfunk.cluster.coordinator.CoordinatorCore` provides it)."""

    @property
    def committed(self) -> MapRecord | None: ...

    @property
    def pending(self) -> MapRecord | None: ...

    @property
    def state(self) -> str:
        """The node's cluster state (``stopping`` once a graceful stop began)."""
        ...

    def serves(self, now: float, shard: int) -> bool: ...


@attrs.frozen
class Released:
    """Public event: the release of the ``ReleaseShards`` at ``index`` is done (the
    assembly reports it to the glue: the held ack may leave)."""

    index: int


@attrs.define
class _Queued:
    src: str
    msg: Request
    shard: int
    expires: float
    done: bool = False


@attrs.define
class _Forward:
    src: str
    msg: Request
    shard: int
    to: str
    expires: float


@attrs.define
class _Release:
    index: int
    waiting: set[int]
    deadline: float


#: Counter names of :attr:`RequestServer.stats` (every one present, from 0).
STAT_NAMES = (
    "ok", "moved", "busy", "error", "queued", "forwarded", "handoffs_sent",
    "handoffs_received", "handoff_timeouts", "late_handoffs", "handoff_ack_timeouts",
    "malformed", "stale_replies", "map_queries", "service_exceptions", "early_handoffs",
)


class RequestServer(Outbox):
    """The request server core; see the module docstring for its rules."""

    def __init__(
        self,
        node_id: str,
        service: ShardService,
        coord: OwnershipView,
        members: MembershipView,
        config: ServerConfig | None = None,
    ) -> None:
        self.id = node_id
        self.service = service
        self.coord = coord
        self.members = members
        self.cfg = config if config is not None else ServerConfig()
        self._out = Output()
        self.now = 0.0
        #: counters (see :data:`STAT_NAMES`) -- read by ``Cluster.request_stats``
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        #: shards the service acquired and not released
        self.active: set[int] = set()
        #: gained shards waiting for their handoff: shard -> deadline, and the map
        #: index (state version) they wait for
        self.waiting: dict[int, float] = {}
        self._wait_version: dict[int, int] = {}
        #: state held for shards not served here: shard -> (version, state or None)
        self.parked: dict[int, tuple[int, bytes | None]] = {}
        #: parked state sent and not acknowledged: shard -> (target node, resend time)
        self.outbox: dict[int, tuple[str, float]] = {}
        self._releases: dict[int, _Release] = {}
        self._release_seq = 0
        self.queue: list[_Queued] = []
        self._qheap: list[tuple[float, int, _Queued]] = []
        self._qseq = 0
        self.forwards: dict[tuple[str, int], _Forward] = {}
        self._fheap: list[tuple[float, int, tuple[str, int]]] = []
        self._fseq = 0
        self._maps: dict[int, ShardMap] = {}
        self._parked_retry_at = math.inf  # parked state with no known address yet
        self._succ: tuple[int, ShardMap | None] | None = None  # (index, map without us)
        #: committed map records seen, newest last (the previous owner of a gain)
        self._history: list[MapRecord] = []
        #: shard -> version of the state this node handed to another node (acked):
        #: gaining it back waits for that state to return
        self._handed: dict[int, int] = {}
        #: handoffs received before any map was applied here (a joiner), held
        self._early: list[tuple[float, str, Handoff]] = []

    # ------------------------------------------------------------------ Core

    def start(self, now: float) -> None:
        self.now = now

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.now = now
        if not stream:
            self._count("malformed")  # the routing port takes stream frames only
            return
        if isinstance(msg, Request):
            self._on_request(now, src, msg)
        elif isinstance(msg, Reply):
            self._on_reply(now, src, msg)
        elif isinstance(msg, MapQuery):
            self._on_map_query(now, src, msg)
        elif isinstance(msg, Handoff):
            self._on_handoff(now, src, msg)
        elif isinstance(msg, HandoffAck):
            self._on_handoff_ack(now, msg)
        else:
            self._count("malformed")

    def on_tick(self, now: float) -> None:
        self.now = now
        expired = frozenset(s for s, d in self.waiting.items() if now >= d)
        if expired:
            self.stats["handoff_timeouts"] += len(expired)
            self._acquire(now, expired)
        for seq, rel in sorted(self._releases.items()):
            if now >= rel.deadline:
                self._count("handoff_ack_timeouts")
                del self._releases[seq]
                self._out.events.append(Released(rel.index))
        self._drain(now)
        self._expire_forwards(now)
        self._send_parked(now)

    def next_deadline(self) -> float:
        times = [math.inf]
        if self.waiting:
            times.append(min(self.waiting.values()))
        if self._releases:
            times.append(min(r.deadline for r in self._releases.values()))
        while self._qheap and self._qheap[0][2].done:
            heapq.heappop(self._qheap)
        if self._qheap:
            times.append(self._qheap[0][0])
        while self._fheap and self._fheap[0][2] not in self.forwards:
            heapq.heappop(self._fheap)
        if self._fheap:
            times.append(self._fheap[0][0])
        if self.outbox:  # invariant: every entry is a parked shard sent to another owner
            times.append(min(t for _n, t in self.outbox.values()))
        times.append(self._parked_retry_at)
        return min(times)


    # ------------------------------------------------------------------ inputs from the node

    def note_map(self, committed: MapRecord | None) -> None:
        """Record the coordinator's committed map (the assembly calls this after each
        coordinator step in which it changed; no output): the gain rule asks who
        owned a shard before the commit that gave it to this node."""
        if committed is None:
            return
        h = self._history
        if h and h[-1].index >= committed.index:
            return
        h.append(committed)
        del h[:-3]

    def map_changed(self, now: float) -> None:
        """The committed map or the pending proposal changed: re-examine the queue
        (the owner may have moved) and send parked state to its new owner."""
        self.now = now
        if self._early:
            early, self._early = self._early, []
            for _t, src, msg in early:
                self._on_handoff(now, src, msg)  # held again if still ahead
        self._drain(now)
        self._send_parked(now)

    def ownership(self, now: float, gained: frozenset[int], index: int) -> None:
        """Gain rule: the coordinator started serving ``gained`` at the commit
        ``index``: acquire now the shards whose state is here or not expected; wait
        (at most ``handoff_wait``) for the handoff of those whose previous owner is
        in the new committed map (it released them and sent their state before it
        acked, so the state is on its way)."""
        self.now = now
        ready: set[int] = set()
        for s in sorted(gained):
            if s in self.active or s in self.waiting:
                continue
            got = self.parked.get(s)
            since = self._expect_handoff(s, index)
            # state parked here from before the previous owner's map (an old fence)
            # is stale: that owner is handing over a newer version; wait for it
            if since is not None and (got is None or got[0] < since):
                self.waiting[s] = now + self.cfg.handoff_wait
                self._wait_version[s] = since
            else:
                ready.add(s)
        if ready:
            self._acquire(now, frozenset(ready))
        self._drain(now)

    def release(self, now: float, index: int, shards: frozenset[int]) -> None:
        """Release rule: the coordinator stopped serving ``shards`` (``ReleaseShards``
        at ``index``). The service releases those it acquired; their state is parked
        and sent to each shard's owner in the latest map; :class:`Released` follows
        once every handoff is acknowledged, or after ``handoff_ack_wait``."""
        self.now = now
        mine = frozenset(s for s in shards if s in self.active)
        self.active -= shards
        for s in shards:
            self.waiting.pop(s, None)  # never acquired: its parked state stays parked
            self._wait_version.pop(s, None)
        states: Mapping[int, bytes] = {}
        if mine:
            try:
                states = self.service.release(mine)
            except Exception:
                self._count("service_exceptions")
                states = {}
        version = self._latest_index()
        for s in sorted(mine):
            st = states.get(s) if isinstance(states, Mapping) else None
            self.parked[s] = (version, st if isinstance(st, bytes) else None)
            self.outbox.pop(s, None)  # send now, to the current owner
        sent = self._send_parked(now, only=frozenset(shards))
        self._release_seq += 1
        if sent:
            self._releases[self._release_seq] = _Release(index, set(sent),
                                                         now + self.cfg.handoff_ack_wait)
        else:
            self._out.events.append(Released(index))
        self._drain(now)

    # ------------------------------------------------------------------ requests

    def _on_request(self, now: float, src: str, msg: Request) -> None:
        committed = self._committed_map()
        if committed is None:
            self._answer(src, msg, -1, Outcome.BUSY, error="no committed shard map yet")
            return
        shard = msg.key % committed.n_shards
        if len(msg.payload) > self.cfg.max_payload:
            self._count("malformed")
            self._answer(src, msg, shard, Outcome.ERROR, error="payload too large")
            return
        self._route(now, src, msg, shard)

    def _route(self, now: float, src: str, msg: Request, shard: int) -> None:
        if self._serving(now, shard):
            self._serve(src, msg, shard)
            return
        owner, index = self._latest_owner(shard)
        if owner == self.id:
            self._enqueue(now, src, msg, shard)
        elif (self.cfg.forward is ForwardMode.FORWARD and msg.hops == 0 and owner
              and self._address(owner) and len(self.forwards) < self.cfg.max_forwards):
            self._forward(now, src, msg, shard, owner)
        else:
            self._moved(src, msg, shard, owner, index)

    def _serving(self, now: float, shard: int) -> bool:
        return shard in self.active and self.coord.serves(now, shard)

    def _serve(self, src: str, msg: Request, shard: int) -> None:
        """Serve rule: called only when :meth:`_serving` holds at this instant."""
        try:
            result = self.service.handle(shard, msg.key, msg.payload)
        except ServiceError as exc:
            self._answer(src, msg, shard, Outcome.ERROR, error=str(exc)[:1000])
            return
        except Exception as exc:  # the application's bug: an error answer, counted
            self._count("service_exceptions")
            self._answer(src, msg, shard, Outcome.ERROR,
                         error=f"service failed: {type(exc).__name__}")
            return
        if not isinstance(result, bytes):
            self._count("service_exceptions")
            self._answer(src, msg, shard, Outcome.ERROR, error="service returned no bytes")
            return
        self._answer(src, msg, shard, Outcome.OK, payload=result)

    def _moved(self, src: str, msg: Request, shard: int, owner: str | None, index: int) -> None:
        """Moved rule: name the owner in the latest map, its address and the index."""
        self._answer(src, msg, shard, Outcome.MOVED, owner=owner or "",
                     address=self._address(owner) if owner else "", index=index)

    def _forward(self, now: float, src: str, msg: Request, shard: int, owner: str) -> None:
        """Forward rule: send a copy (``hops=1``) to the owner, relay its answer."""
        key = (msg.client, msg.id)
        old = self.forwards.get(key)
        addr = self._address(owner)
        wait = min(self.cfg.forward_wait, msg.budget)
        self.forwards[key] = _Forward(src, msg, shard, owner, now + wait)
        if old is None:
            self._fseq += 1
            heapq.heappush(self._fheap, (now + wait, self._fseq, key))
        self._count("forwarded")
        self._out.send(addr, attrs.evolve(msg, hops=1, budget=max(0.0, wait)), True)

    def _on_reply(self, now: float, src: str, msg: Reply) -> None:
        fwd = self.forwards.get((msg.client, msg.id))
        if fwd is None or src != self._address(fwd.to):
            self._count("stale_replies")
            return
        del self.forwards[(msg.client, msg.id)]
        self._out.emit("app.forward", client=msg.client, id=msg.id, key=fwd.msg.key,
                       shard=fwd.shard, to=fwd.to, outcome=msg.outcome)
        # relayed as this node's answer (the client checks who sent it)
        self._out.send(fwd.src, attrs.evolve(msg, attempt=fwd.msg.attempt, node=self.id), True)

    def _expire_forwards(self, now: float) -> None:
        heap = self._fheap
        while heap and heap[0][0] <= now:
            _t, _s, key = heapq.heappop(heap)
            fwd = self.forwards.get(key)
            if fwd is None:
                continue
            if fwd.expires > now:  # re-forwarded meanwhile: later deadline
                self._fseq += 1
                heapq.heappush(heap, (fwd.expires, self._fseq, key))
                continue
            del self.forwards[key]
            self._answer(fwd.src, fwd.msg, fwd.shard, Outcome.BUSY,
                         error=f"forwarded to {fwd.to}: no answer in time")

    def _enqueue(self, now: float, src: str, msg: Request, shard: int) -> None:
        """Queue rule (admission): wait for the handoff, bounded in count and time."""
        if len(self.queue) >= self.cfg.max_queue:
            self._answer(src, msg, shard, Outcome.BUSY, error="shard in handoff, queue full")
            return
        q = _Queued(src, msg, shard, now + min(self.cfg.queue_wait, msg.budget))
        self.queue.append(q)
        self._qseq += 1
        heapq.heappush(self._qheap, (q.expires, self._qseq, q))
        self._count("queued")

    def _drain(self, now: float) -> None:
        """Queue rule (exit): serve what is served now, answer ``moved`` what the map
        gave away, ``busy`` what waited past its bound; keep the rest, in order."""
        if not self.queue:
            return
        keep: list[_Queued] = []
        for q in self.queue:
            if self._serving(now, q.shard):
                self._serve(q.src, q.msg, q.shard)
            else:
                owner, index = self._latest_owner(q.shard)
                if owner != self.id:
                    self._moved(q.src, q.msg, q.shard, owner, index)
                elif now >= q.expires:
                    self._answer(q.src, q.msg, q.shard, Outcome.BUSY,
                                 error="shard in handoff past the queue bound")
                else:
                    keep.append(q)
                    continue
            q.done = True
        self.queue = keep

    def _answer(self, dest: str, msg: Request, shard: int, outcome: Outcome, *,
                payload: bytes = b"", error: str = "", owner: str = "", address: str = "",
                index: int = 0) -> None:
        self._count(outcome.value)
        self._out.emit("app.request", client=msg.client, id=msg.id, key=msg.key,
                       shard=shard, outcome=outcome.value)
        self._out.send(dest, Reply(msg.client, msg.id, outcome.value, payload, error, owner,
                                   address, index, self.id, msg.attempt), True)

    # ------------------------------------------------------------------ the map

    def _on_map_query(self, now: float, src: str, msg: MapQuery) -> None:
        """Map rule: the committed map (blob only if newer than the asker's) and the
        live members' request addresses."""
        self._count("map_queries")
        rec = self.coord.committed
        index = rec.index if rec is not None else 0
        blob = rec.blob if rec is not None and msg.have != index else b""
        self._out.send(src, MapAnswer(index, blob, self.endpoints(), self.id), True)

    def endpoints(self) -> dict[str, str]:
        """Request addresses of the live members that publish one, by node id."""
        eps: dict[str, str] = {}
        for m in self.members.members():
            addr = m.tags.get(TAG_REQUESTS)
            if addr and m.status.live:
                eps[m.name] = addr
        return eps

    def _address(self, node: str | None) -> str:
        if not node:
            return ""
        m = self.members.member(node)
        return m.tags.get(TAG_REQUESTS, "") if m is not None else ""

    def _decode(self, rec: MapRecord | None) -> ShardMap | None:
        if rec is None:
            return None
        m = self._maps.get(rec.index)
        if m is None:
            try:
                m = ShardMap.decode(rec.blob)
            except ShardMapDecodeError:
                return None
            if len(self._maps) >= 4:
                del self._maps[min(self._maps)]
            self._maps[rec.index] = m
        return m

    def _committed_map(self) -> ShardMap | None:
        return self._decode(self.coord.committed)

    def _latest_index(self) -> int:
        rec = self.coord.pending or self.coord.committed
        return rec.index if rec is not None else 0

    def _latest_owner(self, shard: int) -> tuple[str | None, int]:
        """The shard's owner in the latest map applied here (pending, else committed)."""
        rec = self.coord.pending or self.coord.committed
        m = self._decode(rec)
        if m is None or rec is None or not 0 <= shard < m.n_shards:
            return None, 0
        return m.owner(shard), rec.index

    # ------------------------------------------------------------------ handoff

    def _expect_handoff(self, shard: int, index: int) -> int | None:
        """The index of the previous committed map if its owner of ``shard`` is
        another node of the current committed map (it acked, so it released the
        shard and sent its state, of that version or newer); the version this node
        handed the shard's state away with, if it did (a superseded proposal moved
        it away and the next gives it back: the state returns from where it was
        parked); else None."""
        prev = next((r for r in reversed(self._history) if r.index < index), None)
        handed = self._handed.pop(shard, None)
        if handed is not None and handed > (prev.index if prev is not None else 0):
            return handed  # handed away under a proposal after that map: it comes back
        m = self._decode(prev)
        committed = self.coord.committed
        if prev is None or m is None or committed is None or not 0 <= shard < m.n_shards:
            return None
        before = m.owner(shard)
        if before is not None and before != self.id and before in committed.nodes:
            return prev.index
        return None

    def _acquire(self, now: float, shards: frozenset[int]) -> None:
        state: dict[int, bytes] = {}
        for s in sorted(shards):
            self.waiting.pop(s, None)
            self._wait_version.pop(s, None)
            self.outbox.pop(s, None)
            self._handed.pop(s, None)
            got = self.parked.pop(s, None)
            if got is not None and got[1] is not None:
                state[s] = got[1]
        try:
            self.service.acquire(shards, state)
        except Exception:
            self._count("service_exceptions")
        self.active |= shards
        self._drain(now)

    def _send_parked(self, now: float, only: frozenset[int] | None = None) -> set[int]:
        """Parked state rule (sending): every parked shard whose owner in the latest
        map is another node with a known request address is sent to it (at most once
        per ``handoff_retry`` until acknowledged). Returns the shards sent."""
        by_owner: dict[str, list[int]] = {}
        for s in sorted(self.parked if only is None else only & self.parked.keys()):
            if s in self.waiting:
                self.outbox.pop(s, None)  # kept for this node's own gain: nothing to retry
                continue
            owner, _index = self._latest_owner(s)
            if owner == self.id and self.coord.state == "stopping":
                owner = self._successor(s)
            if owner is None or owner == self.id:
                self.outbox.pop(s, None)  # no other owner now: no retry is due
                continue
            out = self.outbox.get(s)
            if out is not None and out[0] == owner and now < out[1]:
                continue
            by_owner.setdefault(owner, []).append(s)
        sent: set[int] = set()
        if only is None:
            self._parked_retry_at = math.inf
        for owner, shards in sorted(by_owner.items()):
            addr = self._address(owner)
            if not addr:  # the owner's address is not known yet: try again later
                self._parked_retry_at = min(self._parked_retry_at,
                                            now + self.cfg.handoff_retry)
                continue
            states = {s: st for s in shards if (st := self.parked[s][1]) is not None}
            empty = tuple(s for s in shards if self.parked[s][1] is None)
            version = max(self.parked[s][0] for s in shards)
            self._out.send(addr, Handoff(self.id, version, states, empty), True)
            self._out.emit("app.handoff", to=owner, index=version, shards=shards,
                           bytes=sum(len(b) for b in states.values()))
            self._count("handoffs_sent")
            for s in shards:
                self.outbox[s] = (owner, now + self.cfg.handoff_retry)
            sent.update(shards)
        return sent

    def _successor(self, shard: int) -> str | None:
        """The shard's owner in the committed map updated without this node."""
        rec = self.coord.committed
        if rec is None:
            return None
        got = self._succ
        if got is None or got[0] != rec.index:
            m = self._decode(rec)
            rest = [n for n in m.nodes if n != self.id] if m is not None else []
            got = self._succ = (rec.index, m.update(rest)[0] if m is not None and rest else None)
        m2 = got[1]
        return m2.owner(shard) if m2 is not None and 0 <= shard < m2.n_shards else None

    def _on_handoff(self, now: float, src: str, msg: Handoff) -> None:
        """Parked state rule (receiving): keep the newest version of each shard's
        state (checked against the latest map applied here; state from a proposal not
        applied here yet is held until it is, bounded in count and time); state for a
        shard served here already is late (dropped, counted); acknowledge every shard
        taken or refused; finish waiting gains."""
        m = self._decode(self.coord.pending or self.coord.committed)
        shards = [*msg.states.keys(), *msg.empty]
        if m is None or msg.index > self._latest_index():
            # from a proposal this node has not applied yet (a joiner, a lagging node;
            # the sender released the shards when *it* applied it): held until this
            # node applies it -- its older map would send the state on to a stale
            # owner -- bounded; past the bound not acked, so the sender sends again
            self._count("early_handoffs")
            # held for at most queue_wait (the sender re-sends what is not acked)
            self._early = [e for e in self._early if now - e[0] < self.cfg.queue_wait]
            if len(self._early) < self.cfg.max_early_handoffs:
                self._early.append((now, src, msg))
            return
        if any(not 0 <= s < m.n_shards for s in shards):
            self._count("malformed")
            return
        self._count("handoffs_received")
        took: list[int] = []
        for s in sorted(set(shards)):
            took.append(s)
            if s in self.active:
                self._count("late_handoffs")
                continue
            have = self.parked.get(s)
            if have is not None and have[0] > msg.index:
                continue
            self.parked[s] = (msg.index, msg.states.get(s))
            self.outbox.pop(s, None)
        self._out.send(src, HandoffAck(self.id, msg.index, tuple(took)), True)
        ready = frozenset(s for s in took if s in self.waiting and s in self.parked
                          and self.parked[s][0] >= self._wait_version.get(s, 0))
        if ready:
            self._acquire(now, ready)
        self._send_parked(now)  # state for a shard this node will not serve moves on

    def _on_handoff_ack(self, now: float, msg: HandoffAck) -> None:
        for s in msg.shards:
            out = self.outbox.get(s)
            if out is not None and out[0] == msg.node:
                del self.outbox[s]
                got = self.parked.pop(s, None)
                if got is not None:
                    self._handed[s] = got[0]
        for seq, rel in sorted(self._releases.items()):
            rel.waiting.difference_update(msg.shards)
            if not rel.waiting:
                del self._releases[seq]
                self._out.events.append(Released(rel.index))

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1
