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

from clusterfunk.runtime.api import DEFAULT_DATAGRAM_BUDGET, Core, Persister
from clusterfunk.runtime.auth import Authorizer
from clusterfunk.runtime.driver import Driver
from clusterfunk.sim.disk import SimDisk
from clusterfunk.sim.netmodel import LinkConfig, Partitions
from clusterfunk.trace import Tracer

# Event kinds.
_DGRAM = 0
_FRAME = 1
_TIMER = 2
_CALL = 3


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
        token = host.timer_tokens.get(driver, 0) + 1
        host.timer_tokens[driver] = token
        if deadline == math.inf:
            return
        sim = self._sim
        t = self.to_true(deadline)
        # Invariant: at true time t the local clock reads >= deadline (rounding in
        # to_true can land one ulp early, which would make the wake-up spurious forever).
        scale = 1.0 + self.drift
        while t * scale + self.offset < deadline:
            t = math.nextafter(t, math.inf)
        if t < sim.now:
            t = sim.now
        sim._push(t, _TIMER, driver, token, host.name)


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
        if self._host.alive:
            self._sim._send_datagram(self.local_address, self._host.name, dest, data)

    def send_frame(self, dest: str, data: bytes) -> None:
        if self._host.alive:
            self._sim._send_frame(self.local_address, self._host.name, dest, data)


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
        if decode is not None:
            kw["decode"] = decode
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
        self._queue: list[tuple[Any, ...]] = []
        self._seq = 0
        self.net_rng = random.Random(f"{seed}/net")
        self.fault_rng = random.Random(f"{seed}/faults")
        self._frame_clock: dict[tuple[str, str], float] = {}
        self._conn_epoch: dict[tuple[str, str], int] = {}
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
        heapq.heappush(self._queue, (t, self._seq, kind, a, b, c, d))

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

    def _send_datagram(self, src_addr: str, src_host: str, dest: str, data: bytes) -> None:
        stats = self.stats
        stats["datagrams_sent"] += 1
        stats["bytes_sent"] += len(data)
        dst_host = dest.partition(":")[0]
        tracer = self.tracer
        if tracer.net:
            self._net(src_host, "net.send", src_addr, dest, "dgram", "bytes", len(data))
        if self.partitions.blocked(src_host, dst_host):
            stats["dropped_partition"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "dgram", "reason", "partition")
            return
        cfg = self.links.get((src_host, dst_host), self.link)
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
                delay += rng.expovariate(1.0 / cfg.jitter)
            if cfg.reorder and rng.random() < cfg.reorder:
                delay += rng.random() * cfg.reorder_window
                stats["reordered"] += 1
            self._seq += 1
            heapq.heappush(
                self._queue, (self.now + delay, self._seq, _DGRAM, dest, src_addr, data, src_host)
            )

    def _send_frame(self, src_addr: str, src_host: str, dest: str, data: bytes) -> None:
        stats = self.stats
        stats["frames_sent"] += 1
        stats["bytes_sent"] += len(data)
        dst_host = dest.partition(":")[0]
        tracer = self.tracer
        if tracer.net:
            self._net(src_host, "net.send", src_addr, dest, "stream", "bytes", len(data))
        key = (src_addr, dest)
        epoch = self._conn_epoch.get(key, 0)
        if self.partitions.blocked(src_host, dst_host):
            self._conn_epoch[key] = epoch + 1  # the connection breaks
            stats["dropped_partition"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "stream", "reason", "partition")
            return
        cfg = self.links.get((src_host, dst_host), self.link)
        rng = self.net_rng
        if cfg.stream_reset and rng.random() < cfg.stream_reset:
            # the connection breaks: this frame and every frame still in flight on it are lost
            self._conn_epoch[key] = epoch + 1
            stats["dropped_reset"] += 1
            if tracer.net:
                self._net(src_host, "net.drop", src_addr, dest, "stream", "reason", "reset")
            return
        delay = cfg.latency  # (as _delay: the hot path, without the call)
        if cfg.jitter > 0:
            delay += rng.expovariate(1.0 / cfg.jitter)
        t = self.now + delay
        frame_clock = self._frame_clock
        last = frame_clock.get(key, 0.0)
        if t < last:
            t = last  # streams are FIFO per connection
        frame_clock[key] = t
        hosts = self.hosts
        dst = hosts.get(dst_host)
        dst_inc = dst.incarnation if dst is not None else 0
        src_inc = hosts[src_host].incarnation
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, _FRAME, dest, src_addr, data,
                                     (src_host, src_inc, dst_inc, epoch)))

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
            heapq.heappush(self._queue, (self.now, self._seq, *ev[2:]))

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
        queue = self._queue
        pop = heapq.heappop
        hosts = self.hosts
        endpoints = self._endpoints
        stats = self.stats
        tracer = self.tracer
        while queue and queue[0][0] <= t_end:
            ev = pop(queue)
            t, _seq, kind, a, b, c, d = ev
            self.now = t
            stats["events"] += 1
            if kind == _DGRAM:
                host = hosts[d]  # d = src host; a = dest address
                ep = endpoints.get(a)
                if ep is None:
                    self._drop_undeliverable(a, b, "dgram")
                    continue
                dst = ep._host
                if dst.paused:
                    dst.held.append(ev)
                    continue
                if self.partitions.blocked(host.name, dst.name):
                    stats["dropped_partition"] += 1
                    if tracer.net:
                        self._net(dst.name, "net.drop", b, a, "dgram", "reason", "partition")
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
                current = self._conn_epoch.get(conn, 0)
                if epoch != current:
                    stats["dropped_reset"] += 1
                    if tracer.net:
                        self._net(dst.name, "net.drop", b, a, "stream", "reason", "reset")
                    continue
                if (
                    dst.incarnation != dst_inc
                    or hosts[src_host].incarnation != src_inc
                    or self.partitions.blocked(src_host, dst.name)
                ):
                    # the connection breaks: frames behind this one are lost too
                    self._conn_epoch[conn] = current + 1
                    reason = (
                        "partition"
                        if dst.incarnation == dst_inc and hosts[src_host].incarnation == src_inc
                        else "down"
                    )
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
