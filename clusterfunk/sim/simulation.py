"""The deterministic simulator: many nodes, one process, virtual time.

Determinism contract: the same seed and the same inputs give a byte-identical
trace in a fresh process, under any ``PYTHONHASHSEED``. How it is kept:

* One event queue ordered by ``(virtual time, sequence number)``; the sequence
  number is a global counter, so ties are broken by the order in which events
  were scheduled, never by object ids.
* Exactly one node handler runs at a time, to completion (the drivers are
  synchronous), so no scheduler decides interleavings.
* Every random draw comes from ``random.Random`` instances seeded from strings
  (``"<seed>/net"``, ``"<seed>/node/n3/2"``, ...): string seeding hashes with
  SHA-512, independent of hash randomisation.
* Nothing iterates unordered collections of strings; hosts are kept in the order
  they were added (``n1 .. nN``).

Faults: partitions (groups, one-way), crash (volatile state gone, synced disk
kept, a prefix of un-synced writes kept), restart, pause/resume (events for a
paused node wait, like a SIGSTOPped process's socket buffers), clock skew and
drift per node, per-link loss, duplication, reordering and latency.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from typing import Any, ClassVar

from clusterfunk import wire
from clusterfunk.runtime.api import DEFAULT_DATAGRAM_BUDGET, Core, Persister
from clusterfunk.runtime.auth import Authorizer
from clusterfunk.runtime.driver import Driver
from clusterfunk.sim.disk import SimDisk
from clusterfunk.sim.netmodel import LinkConfig, Partitions
from clusterfunk.trace import Tracer

_log = math.log

# Event kinds.
_DGRAM = 0
_FRAME = 1
_TIMER = 2
_CALL = 3


class DecodeMemo:
    """``wire.decode`` once per distinct byte string, for the simulator's drivers.

    In simulation one encoded message often reaches many nodes (a Raft heartbeat
    round is one byte string to every follower, a shard map proposal goes to every
    node). Equal bytes decode to equal messages, so for message classes whose
    instances are deeply immutable (:func:`clusterfunk.wire.is_immutable`) one
    decoded instance serves every receipt of the same bytes. Bytes that do not
    decode are decoded (and refused, and counted by the driver) at every receipt;
    messages of other classes are decoded afresh every time, and so are those of a
    class whose bytes turn out never to repeat (a reply names its sender: after
    ``REVIEW`` entries of a class with less than one hit in ``REVIEW // 16``, the
    class is no longer kept). Bounded: the memo is emptied when it holds
    ``max_entries`` messages or ``max_bytes`` of keys.
    """

    REVIEW = 1024

    def __init__(self, max_entries: int = 4096, max_bytes: int = 16 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._memo: dict[bytes, Any] = {}
        self._bytes = 0
        self._keep: dict[type, bool] = {}  # class -> keep its messages
        self._kept: dict[type, int] = {}  # class -> entries made since its last review
        self._hit: dict[type, int] = {}  # class -> hits since its last review
        self.hits = 0

    def decode(self, data: bytes) -> Any:
        if type(data) is not bytes:
            return wire.decode(data)
        memo = self._memo
        msg = memo.get(data)
        if msg is not None:
            self.hits += 1
            cls = type(msg)
            self._hit[cls] += 1
            return msg
        msg = wire.decode(data)
        cls = type(msg)
        keep = self._keep.get(cls)
        if keep is None:
            keep = self._keep[cls] = wire.is_immutable(cls)
            self._kept[cls] = self._hit[cls] = 0
        if keep:
            n = len(data)
            if len(memo) >= self.max_entries or self._bytes + n > self.max_bytes:
                memo.clear()
                self._bytes = 0
            memo[data] = msg
            self._bytes += n
            kept = self._kept[cls] = self._kept[cls] + 1
            if kept >= self.REVIEW:
                if self._hit[cls] * 16 < kept:
                    self._keep[cls] = False
                self._kept[cls] = self._hit[cls] = 0
        return msg


class SimClock:
    """A node's local clock: ``local = true * (1 + drift) + offset``."""

    def __init__(self, sim: Simulation, host: SimHost) -> None:
        self._sim = sim
        self._host = host
        self.offset = 0.0
        self.drift = 0.0

    def now(self) -> float:
        return self._sim.now * (1.0 + self.drift) + self.offset

    def to_true(self, local: float) -> float:
        return (local - self.offset) / (1.0 + self.drift)

    def schedule(self, driver: Any, deadline: float) -> None:
        host = self._host
        tokens = host.timer_tokens
        token = tokens.get(driver, 0) + 1
        tokens[driver] = token
        if deadline == math.inf:
            return
        sim = self._sim
        offset = self.offset
        scale = 1.0 + self.drift
        t = (deadline - offset) / scale  # self.to_true(deadline)
        # Invariant: at true time t the local clock reads >= deadline (rounding in
        # to_true can land one ulp early, which would make the wake-up spurious forever).
        while t * scale + offset < deadline:
            t = math.nextafter(t, math.inf)
        if t < sim.now:
            t = sim.now
        sim._seq += 1  # sim._push(t, _TIMER, driver, token, host.name), inlined
        ev = (t, sim._seq, _TIMER, driver, token, host.name, None)
        bucket = sim._buckets.get(t)
        if bucket is None:
            sim._buckets[t] = [ev]
            heapq.heappush(sim._times, t)
        else:
            bucket.append(ev)


class SimEndpoint:
    """A simulated transport endpoint bound to ``host:port``."""

    def __init__(self, sim: Simulation, host: SimHost, port: int, max_datagram: int) -> None:
        self._sim = sim
        self._host = host
        self.local_address = f"{host.name}:{port}"
        self.max_datagram = max_datagram
        self.handler: Any = None

    def bind(self, handler: Any) -> None:
        self.handler = handler

    def send_datagram(self, dest: str, data: bytes) -> None:
        host = self._host
        if host.alive:
            self._sim._send_datagram(self.local_address, host, dest, data)

    def send_frame(self, dest: str, data: bytes) -> None:
        host = self._host
        if host.alive:
            self._sim._send_frame(self.local_address, host, dest, data)


class SimHost:
    """One simulated machine: its disk survives crashes; everything else is rebuilt
    by the node factory at each (re)start."""

    def __init__(self, sim: Simulation, name: str, factory: Callable[[SimHost], Any]) -> None:
        self.sim = sim
        self.name = name
        self.factory = factory
        self.disk = SimDisk()
        self.clock = SimClock(sim, self)
        self.alive = False
        self.paused = False
        self.incarnation = 0
        self.rng = random.Random(0)
        self.drivers: list[Driver] = []
        self.endpoints: dict[int, SimEndpoint] = {}
        self.timer_tokens: dict[Any, int] = {}
        self.held: list[tuple[Any, ...]] = []
        self.app: Any = None
        self.on_stop: list[Callable[[], None]] = []

    # API used by node factories -------------------------------------------

    @property
    def tracer(self) -> Tracer:
        return self.sim.tracer

    #: Port numbers of the named ports of a node assembly (:mod:`clusterfunk.runtime.host`).
    PORT_NUMBERS: ClassVar[dict[str, int]] = {
        "gossip": 7946, "raft": 8300, "coord": 8400, "app": 8600,
    }

    def _port(self, port: int | str) -> int:
        return port if isinstance(port, int) else self.PORT_NUMBERS[port]

    def address(self, port: int | str) -> str:
        return f"{self.name}:{self._port(port)}"

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` as its own simulator event at the current time, unless this
        incarnation of the node has stopped by then."""
        incarnation = self.incarnation

        def run() -> None:
            if self.alive and self.incarnation == incarnation:
                fn()

        self.sim.at(self.sim.now, run)

    def wall_offset(self) -> float:
        """Simulated wall clock = virtual local clock (offset 0)."""
        return 0.0

    @property
    def authenticated(self) -> bool:
        """Frames carry the sending host's name as their identity (see ``_FRAME``)."""
        return True

    def endpoint(self, port: int) -> SimEndpoint:
        if port in self.endpoints:
            raise ValueError(f"{self.name}: port {port} already bound")
        ep = SimEndpoint(self.sim, self, port, self.sim.datagram_budget)
        self.endpoints[port] = ep
        self.sim._endpoints[ep.local_address] = ep
        return ep

    def driver(
        self,
        core: Core,
        port: int | str,
        *,
        persister: Persister | None = None,
        lazy_timer: bool = False,
        authorizer: Authorizer | None = None,
        encode: Callable[[Any], bytes] | None = None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Driver:
        """Create a driver for ``core`` on ``host:port``; it starts with the host."""
        kw: dict[str, Any] = {"lazy_timer": lazy_timer, "authorizer": authorizer}
        if encode is not None:
            kw["encode"] = encode
        kw["decode"] = decode if decode is not None else self.sim._decode_memo.decode
        d = Driver(
            self.name,
            core,
            self.endpoint(self._port(port)),
            self.clock,
            tracer=self.sim.tracer,
            persister=persister,
            **kw,
        )
        self.drivers.append(d)
        return d

    # lifecycle (called by the simulation) ----------------------------------

    def _boot(self) -> None:
        self.incarnation += 1
        self.rng = random.Random(f"{self.sim.seed}/node/{self.name}/{self.incarnation}")
        self.alive = True
        self.paused = False
        self.app = self.factory(self)
        for d in self.drivers:
            d.start()

    def _halt(self) -> None:
        self.alive = False
        for cb in self.on_stop:
            cb()
        self.on_stop = []
        for d in self.drivers:
            d.stop()
        for ep in self.endpoints.values():
            self.sim._endpoints.pop(ep.local_address, None)
        self.drivers = []
        self.endpoints = {}
        self.timer_tokens = {}
        self.held = []
        self.app = None


class Simulation:
    """A seeded, in-memory, virtual-time world of nodes.

    Typical use::

        sim = Simulation(seed=7)
        for i in range(1, 6):
            sim.add_node(f"n{i}", factory)   # factory(host) builds drivers, returns an app
        sim.start()
        sim.crash("n2", at=10.0); sim.restart("n2", at=20.0)
        sim.run_until(60.0)
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        tracer: Tracer | None = None,
        link: LinkConfig | None = None,
        datagram_budget: int = DEFAULT_DATAGRAM_BUDGET,
    ) -> None:
        self.seed = seed
        self.now = 0.0
        self.tracer = tracer if tracer is not None else Tracer(lambda: self.now)
        if tracer is not None:
            tracer.now = lambda: self.now
        self.link = link if link is not None else LinkConfig()
        self.links: dict[tuple[str, str], LinkConfig] = {}
        self.datagram_budget = datagram_budget
        self.partitions = Partitions()
        self.hosts: dict[str, SimHost] = {}
        self._endpoints: dict[str, SimEndpoint] = {}
        # The event queue: a heap of the distinct times of pending events, and each
        # time's events in the order they were scheduled (a float heap is several
        # times cheaper than one of (time, sequence, ...) tuples; same order).
        # Every event is a tuple (time, sequence number, kind, a, b, c, d).
        self._times: list[float] = []
        self._buckets: dict[float, list[tuple[Any, ...]]] = {}
        self._seq = 0
        self.net_rng = random.Random(f"{seed}/net")
        self.fault_rng = random.Random(f"{seed}/faults")
        self._frame_clock: dict[tuple[str, str], float] = {}
        self._conn_epoch: dict[tuple[str, str], int] = {}
        self._host_of: dict[str, str] = {}  # address -> host name (dest.partition(":")[0])
        self._decode_memo = DecodeMemo()
        self.started = False
        self.stats = {
            "events": 0,
            "datagrams_sent": 0,
            "datagrams_delivered": 0,
            "frames_sent": 0,
            "frames_delivered": 0,
            "dropped_loss": 0,
            "dropped_partition": 0,
            "dropped_down": 0,
            "dropped_unbound": 0,
            "dropped_reset": 0,
            "duplicated": 0,
            "reordered": 0,
            "bytes_sent": 0,
        }

    # -- setup ---------------------------------------------------------------

    def rng(self, name: str) -> random.Random:
        """A named RNG stream derived from the seed (for workloads, nemesis, ...)."""
        return random.Random(f"{self.seed}/{name}")

    def add_node(self, name: str, factory: Callable[[SimHost], Any]) -> SimHost:
        if name in self.hosts:
            raise ValueError(f"node {name!r} already exists")
        if ":" in name or not name:
            raise ValueError(f"bad node name {name!r}")
        host = SimHost(self, name, factory)
        self.hosts[name] = host
        if self.started:
            self._emit("sim.add", {"target": name})
            host._boot()
        return host

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self._emit("sim.start", {"seed": self.seed, "nodes": self.names})
        for host in self.hosts.values():
            host._boot()

    # -- scheduling ----------------------------------------------------------

    def _push(
        self, t: float, kind: int, a: Any, b: Any = None, c: Any = None, d: Any = None
    ) -> None:
        self._seq += 1
        self._enqueue(t, (t, self._seq, kind, a, b, c, d))

    def _enqueue(self, t: float, ev: tuple[Any, ...]) -> None:
        """Queue ``ev`` at time ``t`` after every event already queued at ``t``."""
        bucket = self._buckets.get(t)
        if bucket is None:
            self._buckets[t] = [ev]
            heapq.heappush(self._times, t)
        else:
            bucket.append(ev)

    def at(self, t: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``t`` (not before now)."""
        self._push(max(t, self.now), _CALL, fn, args)

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def _emit(self, ev: str, fields: dict[str, Any]) -> None:
        self.tracer.emit("sim", ev, fields)

    # -- the network ---------------------------------------------------------

    def link_config(self, src: str, dst: str) -> LinkConfig:
        return self.links.get((src, dst), self.link)

    def set_link(self, src: str, dst: str, cfg: LinkConfig) -> None:
        """Override the model of the directed link ``src -> dst``."""
        self.links[(src, dst)] = cfg

    def _delay(self, cfg: LinkConfig) -> float:
        d = cfg.latency
        if cfg.jitter > 0:
            d += self.net_rng.expovariate(1.0 / cfg.jitter)
        return d

    def _dest_host(self, dest: str) -> str:
        """The host part of ``dest`` (memoised: the hot paths ask it per message)."""
        host_of = self._host_of
        name = host_of.get(dest)
        if name is None:
            if len(host_of) >= 65536:  # addresses are few; bound it anyway
                host_of.clear()
            name = host_of[dest] = dest.partition(":")[0]
        return name

    def _send_datagram(self, src_addr: str, src: SimHost, dest: str, data: bytes) -> None:
        stats = self.stats
        stats["datagrams_sent"] += 1
        stats["bytes_sent"] += len(data)
        src_host = src.name
        dst_host = self._host_of.get(dest) or self._dest_host(dest)
        tracer = self.tracer
        if tracer.net:
            self._net(src_host, "net.send", src_addr, dest, "dgram", "bytes", len(data))
        blocked = self.partitions.pairs
        if blocked and (src_host, dst_host) in blocked:
            stats["dropped_partition"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "dgram", "reason", "partition")
            return
        links = self.links
        cfg = links.get((src_host, dst_host), self.link) if links else self.link
        rng = self.net_rng
        if cfg.loss and rng.random() < cfg.loss:
            stats["dropped_loss"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "dgram", "reason", "loss")
            return
        copies = 1
        if cfg.duplicate and rng.random() < cfg.duplicate:
            copies = 2
            stats["duplicated"] += 1
        for _ in range(copies):
            delay = cfg.latency
            if cfg.jitter:
                # rng.expovariate(1.0 / jitter), inlined (the same expression as CPython's)
                delay += -_log(1.0 - rng.random()) / (1.0 / cfg.jitter)
            if cfg.reorder and rng.random() < cfg.reorder:
                delay += rng.random() * cfg.reorder_window
                stats["reordered"] += 1
            self._seq += 1
            t = self.now + delay
            ev = (t, self._seq, _DGRAM, dest, src_addr, data, src_host)
            bucket = self._buckets.get(t)  # self._enqueue(t, ev), inlined
            if bucket is None:
                self._buckets[t] = [ev]
                heapq.heappush(self._times, t)
            else:
                bucket.append(ev)

    def _send_frame(self, src_addr: str, src: SimHost, dest: str, data: bytes) -> None:
        stats = self.stats
        stats["frames_sent"] += 1
        stats["bytes_sent"] += len(data)
        src_host = src.name
        dst_host = self._host_of.get(dest) or self._dest_host(dest)
        tracer = self.tracer
        if tracer.net:
            self._net(src_host, "net.send", src_addr, dest, "stream", "bytes", len(data))
        key = (src_addr, dest)
        epoch = self._conn_epoch.get(key, 0)
        blocked = self.partitions.pairs
        if blocked and (src_host, dst_host) in blocked:
            self._conn_epoch[key] = epoch + 1  # the connection breaks
            stats["dropped_partition"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "stream", "reason", "partition")
            return
        links = self.links
        cfg = links.get((src_host, dst_host), self.link) if links else self.link
        rng = self.net_rng
        if cfg.stream_reset and rng.random() < cfg.stream_reset:
            # the connection breaks: this frame and every frame still in flight on it are lost
            self._conn_epoch[key] = epoch + 1
            stats["dropped_reset"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "stream", "reason", "reset")
            return
        delay = cfg.latency  # (as _delay: the hot path, without the calls)
        if cfg.jitter > 0:
            delay += -_log(1.0 - rng.random()) / (1.0 / cfg.jitter)
        t = self.now + delay
        frame_clock = self._frame_clock
        last = frame_clock.get(key, 0.0)
        if t < last:
            t = last  # streams are FIFO per connection
        frame_clock[key] = t
        dst = self.hosts.get(dst_host)
        dst_inc = dst.incarnation if dst is not None else 0
        self._seq += 1
        ev = (t, self._seq, _FRAME, dest, src_addr, data,
              (src_host, src.incarnation, dst_inc, epoch))
        bucket = self._buckets.get(t)  # self._enqueue(t, ev), inlined
        if bucket is None:
            self._buckets[t] = [ev]
            heapq.heappush(self._times, t)
        else:
            bucket.append(ev)

    # -- faults --------------------------------------------------------------

    def _host(self, name: str) -> SimHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise ValueError(f"unknown node {name!r}") from None

    def crash(self, name: str) -> None:
        """Kill a node: volatile state gone, synced disk kept (plus a prefix of the rest)."""
        host = self._host(name)
        if not host.alive:
            return
        host._halt()
        host.disk.crash(self.fault_rng)
        self._emit("sim.crash", {"target": name})

    def restart(self, name: str) -> None:
        """Boot a crashed node again from its disk."""
        host = self._host(name)
        if host.alive:
            return
        self._emit("sim.restart", {"target": name})
        host._boot()

    def pause(self, name: str) -> None:
        """Freeze a node (SIGSTOP, a long GC pause): its events wait until resume."""
        host = self._host(name)
        if not host.alive or host.paused:
            return
        host.paused = True
        self._emit("sim.pause", {"target": name})

    def resume(self, name: str) -> None:
        host = self._host(name)
        if not host.paused:
            return
        host.paused = False
        self._emit("sim.resume", {"target": name})
        held, host.held = host.held, []
        for ev in held:  # re-queue in original order, now
            self._seq += 1
            self._enqueue(self.now, (self.now, self._seq, *ev[2:]))

    def partition(self, groups: list[list[str]]) -> None:
        """Cut the network into groups (unnamed nodes form one more group)."""
        norm = self.partitions.partition(groups, self.names)
        self._emit("sim.partition", {"groups": norm})

    def partition_oneway(self, src: list[str], dst: list[str]) -> None:
        """Nothing from ``src`` reaches ``dst``; the other direction still works."""
        for n in [*src, *dst]:
            self._host(n)
        self.partitions.block(sorted(src), sorted(dst))
        self._emit("sim.partition", {"groups": [sorted(src), sorted(dst)], "oneway": True})

    def heal(self) -> None:
        self.partitions.heal()
        self._emit("sim.heal", {})

    def stall(self, name: str, until: float) -> None:
        """Hold back every stream frame that ``name`` sends until true time ``until``,
        then deliver them in the order they were sent (a stuck TCP send buffer, or a
        sender whose I/O thread stops in a GC pause while the rest of it runs).
        Datagrams and what ``name`` receives are unaffected; a frame of a connection
        first used during the stall is not held."""
        self._host(name)
        prefix = f"{name}:"
        mine = [a for a in self._endpoints if a.startswith(prefix)]
        others = [a for a in self._endpoints if not a.startswith(prefix)]
        clock = self._frame_clock
        for src in mine:
            for dst in others:
                if clock.get((src, dst), 0.0) < until:
                    clock[(src, dst)] = until  # streams are FIFO: later frames wait too
        self._emit("sim.stall", {"target": name, "until": round(until, 6)})

    def set_skew(self, name: str, offset: float = 0.0, drift: float = 0.0) -> None:
        """Set a node's clock to ``true * (1 + drift) + offset`` and wake its drivers."""
        host = self._host(name)
        host.clock.offset = offset
        host.clock.drift = drift
        self._emit("sim.skew", {"target": name, "offset": offset, "drift": drift})
        if host.alive:
            for d in host.drivers:
                self._push(self.now, _TIMER, d, -1, name)

    def set_default_link(self, cfg: LinkConfig) -> None:
        self.link = cfg
        self._emit(
            "sim.link",
            {
                "latency": cfg.latency,
                "jitter": cfg.jitter,
                "loss": cfg.loss,
                "duplicate": cfg.duplicate,
                "reorder": cfg.reorder,
                "stream_reset": cfg.stream_reset,
            },
        )

    # -- running -------------------------------------------------------------

    def run_until(self, t_end: float, stop: Callable[[], bool] | None = None) -> None:
        """Process events up to virtual time ``t_end`` (or until ``stop()`` is true)."""
        if not self.started:
            self.start()
        times = self._times
        buckets = self._buckets
        pop = heapq.heappop
        hosts = self.hosts
        endpoints = self._endpoints
        stats = self.stats
        tracer = self.tracer
        blocked = self.partitions.pairs  # one set for the simulation's lifetime
        conn_epoch = self._conn_epoch
        while times and times[0] <= t_end:
            t = pop(times)
            bucket = buckets[t]  # stays queued: events scheduled at t now join it
            self.now = t
            i = 0
            try:
                while i < len(bucket):
                    ev = bucket[i]
                    i += 1
                    _t, _seq, kind, a, b, c, d = ev
                    stats["events"] += 1
                    if kind == _DGRAM:
                        ep = endpoints.get(a)  # a = dest address, d = src host
                        if ep is None:
                            self._drop_undeliverable(a, b, "dgram")
                            continue
                        dst = ep._host
                        if dst.paused:
                            dst.held.append(ev)
                            continue
                        if blocked and (d, dst.name) in blocked:
                            stats["dropped_partition"] += 1
                            if tracer.net:
                                self._net(dst.name, "net.drop", b, a, "dgram", "reason",
                                          "partition")
                            continue
                        stats["datagrams_delivered"] += 1
                        if tracer.net:
                            self._net(dst.name, "net.deliver", b, a, "dgram", "bytes", len(c))
                        ep.handler.on_datagram(b, c)
                    elif kind == _TIMER:
                        host = hosts[c]
                        if not host.alive:
                            continue
                        if host.paused:
                            host.held.append(ev)
                            continue
                        if b != -1 and host.timer_tokens.get(a) != b:
                            continue  # superseded
                        a.on_timer()
                    elif kind == _FRAME:
                        src_host, src_inc, dst_inc, epoch = d
                        ep = endpoints.get(a)
                        if ep is None:
                            self._drop_undeliverable(a, b, "stream")
                            continue
                        dst = ep._host
                        if dst.paused:
                            dst.held.append(ev)
                            continue
                        conn = (b, a)
                        current = conn_epoch.get(conn, 0)
                        if epoch != current:
                            stats["dropped_reset"] += 1
                            if tracer.net:
                                self._net(dst.name, "net.drop", b, a, "stream", "reason", "reset")
                            continue
                        if (
                            dst.incarnation != dst_inc
                            or hosts[src_host].incarnation != src_inc
                            or (blocked and (src_host, dst.name) in blocked)
                        ):
                            # the connection breaks: frames behind this one are lost too
                            conn_epoch[conn] = current + 1
                            same = dst.incarnation == dst_inc \
                                and hosts[src_host].incarnation == src_inc
                            reason = "partition" if same else "down"
                            stats["dropped_" + reason] += 1
                            if tracer.net:
                                self._net(dst.name, "net.drop", b, a, "stream", "reason", reason)
                            continue
                        stats["frames_delivered"] += 1
                        if tracer.net:
                            self._net(dst.name, "net.deliver", b, a, "stream", "bytes", len(c))
                        # the sending host is the frame's authenticated identity (as a TLS
                        # certificate's name is on the real network)
                        ep.handler.on_frame_from(b, src_host, c)
                    else:  # _CALL
                        a(*b)
                    if stop is not None and stop():
                        return
            finally:  # the events of this time not processed stay queued
                if i < len(bucket):
                    del bucket[:i]
                    heapq.heappush(times, t)
                else:
                    del buckets[t]
        if t_end != math.inf and self.now < t_end:
            self.now = t_end

    def run_for(self, duration: float, stop: Callable[[], bool] | None = None) -> None:
        self.run_until(self.now + duration, stop)

    def _net(self, node: str, ev: str, src: str, dst: str, kind: str, key: str, value: Any) -> None:
        """Write one verbose network trace record (callers check ``tracer.net`` first)."""
        self.tracer.emit(node, ev, {"src": src, "dst": dst, "kind": kind, key: value})

    def _drop_undeliverable(self, dest: str, src: str, kind: str) -> None:
        host = self.hosts.get(dest.partition(":")[0])
        reason = "down" if host is not None and not host.alive else "unbound"
        self.stats["dropped_down" if reason == "down" else "dropped_unbound"] += 1
        if self.tracer.net:
            self.tracer.emit(
                "sim", "net.drop", {"src": src, "dst": dest, "kind": kind, "reason": reason}
            )

    def alive(self, name: str) -> bool:
        return self._host(name).alive

    def app(self, name: str) -> Any:
        """The object a node's factory returned (None while the node is down)."""
        return self._host(name).app
