"""The routing client: a sans-I/O core that sends each request to its shard's owner.

:class:`RoutingClient` is a :class:`~clusterfunk.runtime.api.Core` with its own
endpoint (replies come back on the client's listening address: connections are
one-way). It runs on any :class:`~clusterfunk.runtime.host.Host`:
:class:`HostClient` wires it (a real process:
:func:`clusterfunk.routing.trio_client.open_client`; the simulator: a
:class:`~clusterfunk.sim.simulation.SimHost` node). A gossip-only
``Cluster(member=False)`` runs one too, only for its map.

Rules (one method each):

1. **Map rule** (:meth:`_refresh`, :meth:`_on_map`): learn the committed map and
   the members' request addresses from any node (``MapQuery`` to a seed, then to
   known members in turn); refresh every ``refresh_interval``, at once when an
   answer names a newer map index, and when a node does not answer. A newer
   index replaces the map; the addresses come with every answer of the same or
   a newer index.
2. **Routing rule** (:meth:`_send`): a request goes straight to the owner of its
   shard (``key % shards``) in the client's map; after ``moved`` it goes to the
   owner the answer named (unless the answer's map index is older than the
   client's map: a lagging node); with no map yet it waits for one.
3. **Retry rule** (:meth:`_on_reply`, :meth:`on_tick`): ``moved`` is retried at
   once (then with backoff if it repeats), ``busy`` and no answer within
   ``attempt_timeout`` with capped, jittered exponential backoff -- always with
   the same request id -- until the request's deadline. ``ok`` and ``error``
   (the service refused it) end the request.
4. **Deadline rule**: at its deadline a request ends with :class:`Finished`
   ``ok=False`` and a reason naming the last outcome seen (or that no node
   answered). Every request ends exactly once.

Delivery guarantee: **at-least-once**. A request that timed out or was lost may
have been handled; its retry carries the same ``(client, id)`` and may be handled
again (servers do not deduplicate: a handoff may move the shard between
attempts). A service that needs exactly-once effects deduplicates on its own
state, e.g. by carrying an idempotency token in the payload.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from clusterfunk.routing.api import APP, Outcome
from clusterfunk.routing.auth import routing_authorizer
from clusterfunk.routing.messages import MAX_ID, MapAnswer, MapQuery, Reply, Request
from clusterfunk.runtime.api import Outbox, Output
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.host import Host
from clusterfunk.sharding import ShardMap, ShardMapDecodeError


@attrs.frozen
class ClientConfig:
    """Client timing (seconds of the local clock).

    * ``attempt_timeout`` (0.5): an attempt without an answer this long is retried.
    * ``backoff_base`` (0.01) / ``backoff_cap`` (0.25): retry backoff (doubling,
      jittered to 50-100 %, capped).
    * ``refresh_interval`` (2.0): the map is re-read this often.
    * ``map_retry`` (0.25): a map query without an answer is re-sent this often
      (to the next known node).
    * ``max_pending`` (100000): more requests in flight are refused at once.
    """

    attempt_timeout: float = 0.5
    backoff_base: float = 0.01
    backoff_cap: float = 0.25
    refresh_interval: float = 2.0
    map_retry: float = 0.25
    max_pending: int = 100_000


@attrs.frozen
class Finished:
    """Public event: request ``id`` ended. ``outcome`` is the last outcome seen
    (``ok``, ``error``, ``moved``, ``busy``, or ``timeout`` when no node answered);
    ``ok`` only when the owner served it. ``latency`` is in seconds."""

    id: int
    ok: bool
    outcome: str
    payload: bytes
    error: str
    latency: float
    attempts: int
    node: str


@attrs.define
class _Pending:
    id: int
    key: int
    payload: bytes
    start: float
    deadline: float
    attempt: int = 0
    next_at: float = 0.0
    in_flight: bool = False
    target: str = ""
    hint: str = ""
    moves: int = 0
    failures: int = 0
    last: str = "no node answered"
    last_outcome: str = "timeout"


class RoutingClient(Outbox):
    """The client core; see the module docstring."""

    def __init__(
        self,
        client_id: str,
        rng: random.Random,
        seeds: Sequence[str] = (),
        config: ClientConfig | None = None,
    ) -> None:
        if not client_id or len(client_id) > MAX_ID:
            raise ValueError(f"client id must have 1..{MAX_ID} characters")
        self.id = client_id
        self.rng = rng
        self.seeds = list(seeds)
        self.cfg = config if config is not None else ClientConfig()
        self._out = Output()
        self.now = 0.0
        self.map: ShardMap | None = None
        self.index = 0
        #: request address of every member that publishes one, by node id
        self.endpoints: dict[str, str] = {}
        self.pending: dict[int, _Pending] = {}
        self._next_id = 1
        #: (time, sequence, request id): when a request's retry or deadline is due
        self._timers: list[tuple[float, int, int]] = []
        self._seq = 0
        self._map_due = 0.0  # next map query
        self._map_asked = ""  # where the outstanding query went ("" none)
        self._map_turn = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "ok", "failed", "retries", "moved", "busy", "timeouts",
             "map_queries", "map_updates", "stale_replies", "malformed"), 0)

    # ------------------------------------------------------------------ Core

    def start(self, now: float) -> None:
        self.now = now
        self._refresh(now)

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.now = now
        if isinstance(msg, Reply) and msg.client == self.id:
            self._on_reply(now, src, msg)
        elif isinstance(msg, MapAnswer):
            self._on_map(now, src, msg)
        else:
            self._count("malformed")

    def on_tick(self, now: float) -> None:
        self.now = now
        if now >= self._map_due:
            if self._map_asked:  # no answer: try the next node
                self._map_asked = ""
            self._refresh(now)
        heap = self._timers
        due: list[int] = []
        seen: set[int] = set()
        while heap and heap[0][0] <= now:
            rid = heapq.heappop(heap)[2]
            if rid not in seen:
                seen.add(rid)
                due.append(rid)
        for rid in due:
            p = self.pending.get(rid)
            if p is None:
                continue
            if now >= p.deadline:
                self._finish(now, p, False, p.last_outcome, b"", self._reason(p), "")
            elif now >= p.next_at:
                if p.in_flight:
                    p.in_flight = False
                    p.failures += 1
                    p.last, p.last_outcome = f"no answer from {p.target}", "timeout"
                    self._count("timeouts")
                    self._refresh(now, urgent=True)
                self._send(now, p)

    def next_deadline(self) -> float:
        heap = self._timers
        while heap and heap[0][2] not in self.pending:
            heapq.heappop(heap)
        return min(self._map_due, heap[0][0]) if heap else self._map_due


    # ------------------------------------------------------------------ API (driver.call)

    def request(self, now: float, key: int, payload: bytes, timeout: float) -> int:
        """Start a request for ``key``; returns its id. It ends with :class:`Finished`
        (ok, or failed at ``now + timeout`` at the latest)."""
        self.now = now
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError("key must be an int")
        if not isinstance(payload, bytes):
            raise TypeError("payload must be bytes")
        rid = self._next_id
        self._next_id += 1
        self._count("requests")
        p = _Pending(rid, key, payload, now, now + max(0.0, min(timeout, 3600.0)))
        self.pending[rid] = p
        if len(self.pending) > self.cfg.max_pending:
            self._finish(now, p, False, "error", b"", "too many requests in flight", "")
        elif timeout <= 0:
            self._finish(now, p, False, "timeout", b"", "timeout must be > 0", "")
        else:
            self._send(now, p)
        return rid

    def set_seeds(self, now: float, seeds: Sequence[str]) -> None:
        """Replace the seed addresses (a nonmember: its members' request addresses);
        asks for the map at once when it has none."""
        self.now = now
        self.seeds = list(seeds)
        if self.map is None and not self._map_asked:
            self._refresh(now)

    def owner(self, key: int) -> str | None:
        m = self.map
        return m.owner(key % m.n_shards) if m is not None else None

    # ------------------------------------------------------------------ rules

    def _send(self, now: float, p: _Pending) -> None:
        """Routing rule: to the owner named by the last ``moved``, else the map's."""
        target = p.hint
        p.hint = ""
        if not target:
            owner = self.owner(p.key)
            target = self.endpoints.get(owner, "") if owner is not None else ""
        if not target:
            # no map (or no address for the owner) yet: wait for the map
            p.in_flight = False
            self._at(p, now + self.cfg.map_retry)
            p.last, p.last_outcome = "no shard map or owner address known", "timeout"
            self._refresh(now, urgent=True)
            return
        if p.attempt > 0:
            self._count("retries")
        p.attempt += 1
        p.target = target
        p.in_flight = True
        budget = max(0.0, p.deadline - now)
        self._at(p, now + min(self.cfg.attempt_timeout, budget))
        self._out.send(target, Request(self.id, p.id, p.key, p.payload, budget, 0,
                                       p.attempt), True)

    def _on_reply(self, now: float, src: str, msg: Reply) -> None:
        """Retry rule: ok / error end the request; moved retries at the named owner
        (refreshing the map if the answer's index is newer); busy retries later."""
        p = self.pending.get(msg.id)
        if p is None:
            self._count("stale_replies")
            return
        if msg.outcome == Outcome.OK:
            self._finish(now, p, True, "ok", msg.payload, "", msg.node)
            return
        if msg.attempt != p.attempt:  # a late answer to an earlier attempt
            self._count("stale_replies")
            return
        p.in_flight = False
        if msg.outcome == Outcome.ERROR:
            self._finish(now, p, False, "error", b"", msg.error or "error", msg.node)
        elif msg.outcome == Outcome.MOVED:
            self._count("moved")
            p.moves += 1
            p.last, p.last_outcome = f"moved by {msg.node} to {msg.owner or '?'}", "moved"
            if msg.index > self.index or not msg.address:
                self._refresh(now, urgent=True, prefer=src)
            # follow the named owner unless the answer comes from a map older than
            # ours (a lagging node): then our own map decides, after a backoff
            if msg.address and msg.address != p.target and msg.index >= self.index:
                p.hint = msg.address
            if p.moves <= 2 and p.hint:
                self._send(now, p)
            else:
                self._at(p, now + self._backoff(p.moves))
        elif msg.outcome == Outcome.BUSY:
            self._count("busy")
            p.failures += 1
            p.last, p.last_outcome = f"busy at {msg.node}: {msg.error}", "busy"
            self._at(p, now + self._backoff(p.failures))
        else:
            self._count("malformed")
            self._at(p, now + self._backoff(p.failures))

    def _at(self, p: _Pending, t: float) -> None:
        """Set when ``p`` is next looked at (a timer: earlier entries of it go stale)."""
        p.next_at = t
        self._seq += 1
        heapq.heappush(self._timers, (min(t, p.deadline), self._seq, p.id))

    def _backoff(self, n: int) -> float:
        base = min(self.cfg.backoff_cap, self.cfg.backoff_base * (2 ** min(n, 20)))
        return base * (0.5 + 0.5 * self.rng.random())

    def _reason(self, p: _Pending) -> str:
        return f"deadline passed after {p.attempt} attempt(s); last: {p.last}"

    def _finish(self, now: float, p: _Pending, ok: bool, outcome: str, payload: bytes,
                error: str, node: str) -> None:
        del self.pending[p.id]
        self._count("ok" if ok else "failed")
        self._out.events.append(Finished(p.id, ok, outcome, payload, error, now - p.start,
                                         p.attempt, node))

    def _refresh(self, now: float, urgent: bool = False, prefer: str = "") -> None:
        """Map rule (asking): one query at a time, to ``prefer`` or the next known
        node (members' request addresses, then seeds, in turn)."""
        if self._map_asked and (not urgent or now < self._map_due):
            return
        choices = sorted(set(self.endpoints.values()) | set(self.seeds))
        if not choices and not prefer:
            self._map_due = now + self.cfg.map_retry
            return
        target = prefer or choices[self._map_turn % len(choices)]
        self._map_turn += 1
        self._map_asked = target
        self._map_due = now + self.cfg.map_retry
        self._count("map_queries")
        self._out.send(target, MapQuery(self.index if self.map is not None else 0), True)

    def _on_map(self, now: float, src: str, msg: MapAnswer) -> None:
        """Map rule (learning): a newer index replaces the map; addresses are taken
        from answers of the current or a newer index."""
        if msg.index < self.index:
            self._count("stale_replies")
            return
        if msg.index > self.index or self.map is None:
            if not msg.blob:
                if msg.index == 0:  # the cluster has no committed map yet
                    self._map_asked = ""
                    self._map_due = now + self.cfg.map_retry
                    return
                self._count("malformed")
                return
            try:
                m = ShardMap.decode(msg.blob)
            except ShardMapDecodeError:
                self._count("malformed")
                return
            self.map, self.index = m, msg.index
            self._count("map_updates")
        self.endpoints = {k: v for k, v in msg.endpoints.items() if len(k) <= MAX_ID}
        self._map_asked = ""
        self._map_due = now + self.cfg.refresh_interval
        for p in sorted(self.pending.values(), key=lambda p: p.id):
            if not p.in_flight and p.last_outcome == "timeout" and p.next_at > now:
                self._send(now, p)  # was waiting for a map or an address

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


class HostClient:
    """A :class:`RoutingClient` on a host's ``app`` endpoint (any
    :class:`~clusterfunk.runtime.host.Host`: a real one, or a simulated node --
    ``sim.add_node("c1", lambda host: HostClient(host, seeds))``).

    ``on_finished(ev)`` is called with every :class:`Finished` event (inside the
    driver's step: only record or enqueue there). :meth:`request` starts a
    request and returns its id; call it outside any driver step (a task, a
    simulator event). The rng is the host's (seeded per node in the simulator)
    unless one is given.
    """

    def __init__(
        self,
        host: Host,
        seeds: Sequence[str],
        *,
        client_id: str | None = None,
        config: ClientConfig | None = None,
        rng: random.Random | None = None,
        on_finished: Callable[[Finished], None] | None = None,
    ) -> None:
        if rng is None:
            rng = getattr(host, "rng", None)
            if not isinstance(rng, random.Random):
                rng = random.Random()
        self.host = host
        self.core = RoutingClient(client_id or host.name, rng, seeds, config)
        self.driver: Driver = host.driver(
            self.core, APP, authorizer=routing_authorizer(require_identity=host.authenticated))
        self.on_finished = on_finished
        self.driver.subscribe(self._on_event)

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Finished) and self.on_finished is not None:
            self.on_finished(ev)

    def request(self, key: int, payload: bytes, timeout: float) -> int:
        return int(self.driver.call(lambda c, now: c.request(now, key, payload, timeout)))

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.core.stats)


__all__ = ["ClientConfig", "Finished", "HostClient", "RoutingClient"]
