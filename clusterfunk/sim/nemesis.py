"""The nemesis: random faults drawn from the seed at documented rates.

One fault at a time (unless ``--nemesis-overlap N``), all of them over by the end of
the fault window (by default the run's last quarter, at most 90 s, is quiet so that
workloads can check recovery; ``--nemesis-until`` moves it). After a warm-up, the
nemesis waits an exponentially distributed gap (mean ``mean_gap`` seconds), starts
one fault of a kind chosen uniformly from the enabled kinds, keeps it for a duration
drawn uniformly from ``[min_duration, max_duration]``, ends it, and repeats. Every
draw comes from the simulation's ``"<seed>/nemesis"`` stream, so the same seed gives
the same faults.

With ``overlap`` N > 1 (``--nemesis-overlap N``) N such chains run at once, so up to
N faults overlap (a partition during a crash, a slow node while the leader pauses).
Two running faults never share what they change: one partition at a time, one change
of the default link (loss, duplicate, reorder) at a time, one fault per target (but a
``slow`` network path may overlap a crash, pause or skew of its node); a
fault whose kind finds that taken (or no free target) is skipped and its chain waits
for the next gap. With N = 1 the draws and the faults are exactly those of the
single chain.

Kinds and what they do (defaults in :class:`NemesisConfig`):

* ``partition``: split the fault targets at a random point of a random
  permutation into two groups (sometimes a single node against the rest); heal.
* ``crash``: crash one random target; restart it at the end.
* ``pause``: pause one random target (SIGSTOP); resume it at the end.
* ``loss``: raise datagram loss on every link to U(5 %, 30 %), and the stream
  connection-reset probability to a tenth of that; restore.
* ``duplicate``: raise duplication to U(5 %, 30 %); restore.
* ``reorder``: reorder U(10 %, 50 %) of datagrams within a 50 ms window; restore.
* ``skew``: step one target's clock forward by U(0, 1) s and let it drift by
  U(-2 %, +2 %) for the duration; at the end the drift stops (the clock stays
  continuous, it never steps back).
* ``disk`` (not in ``all``: ``--nemesis disk`` or ``--nemesis all,disk``): one
  disk fault on one random live target, traced as ``sim.disk`` with ``target``
  and ``kind``, drawn uniformly from

  - ``fsync_error``: the target's next fsync fails. Its persister reports the
    failure, the driver stops at once (fail-stop: nothing that waited for the
    write leaves) and the node crashes (``sim.crash``); it is restarted at the
    end of the fault. If it did not sync during the fault, the fault is disarmed.
  - ``torn_write``: power fails while the target writes its next batch that must
    be synced (before the sync): the node stops at once, its disk keeps a random
    prefix of the un-synced writes with the last one torn (discarded on replay,
    as SQLite's WAL does); restarted at the end. If it wrote no such batch
    during the fault, the fault is disarmed.
  - ``corrupt``: one synced record of the target is damaged and the target
    crashes. At the end it is started again only if its store recovers; a store
    that detects the damage (a checksum or shape check) refuses to start, and
    the node stays down for the rest of the run (:attr:`Nemesis.refused` holds
    the error). Only while a majority of the targets that hold a Raft store can
    still start; otherwise (or with nothing synced yet) it is a ``torn_write``.

* ``slow`` (not in ``all``): every link to and from one random live target gets a
  one-way latency drawn from U(20 ms, 400 ms) and a mean exponential jitter of half
  of that (the rest of the default link as it is at the start): a node behind a
  congested or degraded network path, or a stalling TCP connection, that lags
  behind the others. Stream frames stay in order, so a late frame holds back
  those behind it. Traced as ``sim.link`` with ``target``; at the end the target's
  links follow the default link again (traced the same way).
* ``bounce`` (not in ``all``): crash one random live target and restart it after
  U(20 ms, 1 s) -- shorter than an election timeout: a process supervisor
  restarting a crashed process. The crash keeps what the disk synced plus a random
  prefix of the rest, as ``crash`` does. Traced as ``sim.crash`` / ``sim.restart``.

With ``focus`` P > 0 (``--nemesis-focus P``), a fault on one target (crash, pause,
skew, slow, bounce) hits the workload's primary -- the Raft leader -- with
probability P when there is one and it is free (as Jepsen's nemeses that target the
primary: the leader does the most work and is the node whose failure matters most).

* ``stall`` (not in ``all``, nor in ``harsh``): every stream frame one random live
  target sends is held back for U(1.5 s, 4 s) -- longer than an election timeout --
  then all are delivered at once, in the order they were sent
  (:meth:`Simulation.stall`): a stuck TCP send buffer, or a sender whose I/O thread
  stops in a GC pause while the rest of the process runs. What it receives and its
  datagrams are unaffected, so a stalled leader learns of a newer term at once
  while its old AppendEntries still wait in its send buffer. Traced as
  ``sim.stall`` with ``target`` and ``until``.
* ``vote-crash`` (not in ``all``, nor in ``harsh``): a targeted fault in the style
  of FoundationDB's "buggify". The nemesis arms it for the fault's duration; the
  first voter that then takes up a candidate's term (its ``raft.role`` record
  ``follower`` of a term some node is ``candidate`` in: it is answering that
  candidate's RequestVote) crashes U(0, 2) ms later and restarts after U(20 ms,
  1 s), as ``bounce``: a process that dies just after it voted. It reads the
  documented ``raft.role`` records only. Traced as ``sim.crash`` / ``sim.restart``.

``disk``, ``slow``, ``bounce``, ``stall`` and ``vote-crash`` are kept out of ``all`` so
that the traces of existing ``--nemesis all`` runs (the README's main job) do not
change. ``harsh`` is ``all`` plus ``slow`` and ``bounce``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from clusterfunk.raft.errors import StorageCorrupt
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.raft_storage import SimStorage
from clusterfunk.sim.simulation import Simulation

KINDS = ("partition", "crash", "pause", "loss", "duplicate", "reorder", "skew")
#: kinds that ``all`` does not include (see the module docstring)
EXTRA_KINDS = ("disk", "slow", "bounce", "stall", "vote-crash")
#: ``harsh``: every kind but ``disk`` (use with ``--nemesis-overlap``)
HARSH = (*KINDS, "slow", "bounce")
#: ``slow``: the target's one-way latency is drawn from this range (seconds)
SLOW_LATENCY = (0.02, 0.4)
#: ``bounce``: the target is down for a time drawn from this range (seconds)
BOUNCE_DOWN = (0.02, 1.0)
#: ``stall``: the target's outgoing stream frames are held back this long (seconds)
STALL_HOLD = (1.5, 4.0)
#: ``vote-crash``: the voter crashes this long after it took up the candidate's term
VOTE_CRASH_DELAY = (0.0, 0.002)
DISK_FAULTS = ("fsync_error", "torn_write", "corrupt")


@attrs.define
class NemesisConfig:
    kinds: tuple[str, ...] = KINDS
    warmup: float = 5.0
    mean_gap: float = 10.0
    min_duration: float = 3.0
    max_duration: float = 12.0
    #: at most this many faults at once (``--nemesis-overlap``)
    overlap: int = 1
    #: chance that a fault on one target hits the workload's primary (the Raft
    #: leader) when it has one (``--nemesis-focus``)
    focus: float = 0.0

    def __attrs_post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS + EXTRA_KINDS]
        if bad:
            raise ValueError(
                f"unknown nemesis kind(s) {', '.join(bad)}; "
                f"choose from {', '.join(KINDS + EXTRA_KINDS)}"
            )
        if not (0 <= self.min_duration <= self.max_duration) or self.mean_gap <= 0:
            raise ValueError("nemesis durations must satisfy 0 <= min <= max and mean_gap > 0")
        if self.overlap < 1:
            raise ValueError("the nemesis overlap must be at least 1")
        if not 0.0 <= self.focus <= 1.0:
            raise ValueError("the nemesis focus must be a probability in [0, 1]")


@attrs.define
class Fault:
    """One fault the nemesis started, in full (:attr:`Nemesis.schedule`): from ``at``
    to ``until`` (true seconds); ``target`` (crash, pause, skew), ``groups``
    (partition), ``link`` (the changed :class:`LinkConfig` fields of loss, duplicate,
    reorder; ``latency`` and ``jitter`` of slow), ``offset`` / ``drift`` (skew: the
    clock set at ``at``), ``disk`` (disk: the fault done). A ``bounce`` and a
    ``vote-crash`` are a crash from ``at`` to ``until``; a ``stall`` holds the
    target's frames from ``at`` to ``until``."""

    at: float
    until: float
    kind: str
    target: str = ""
    groups: list[list[str]] = attrs.Factory(list)
    link: dict[str, float] = attrs.Factory(dict)
    offset: float = 0.0
    drift: float = 0.0
    disk: str = ""  # disk: the fault done (fsync_error, torn_write, corrupt)


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"partition,crash"`` -> ``("partition", "crash")``; ``"all"`` -> every kind
    but ``disk``, ``slow`` and ``bounce``; ``"harsh"`` -> every kind but ``disk``;
    ``"all,disk"`` -> ``all`` plus disk faults."""
    text = text.strip()
    if text in ("all", "*"):
        return KINDS
    kinds: tuple[str, ...] = ()
    for k in (k.strip() for k in text.split(",") if k.strip()):
        kinds += KINDS if k in ("all", "*") else HARSH if k == "harsh" else (k,)
    NemesisConfig(kinds=kinds)  # validates
    return kinds


class Nemesis:
    def __init__(self, sim: Simulation, targets: list[str], config: NemesisConfig,
                 primary: Callable[[], str | None] | None = None) -> None:
        self.sim = sim
        self.targets = list(targets)
        self.config = config
        #: the workload's primary node now (the Raft leader), for ``focus``
        self.primary = primary
        self.rng = sim.rng("nemesis")
        self.faults: list[tuple[float, str, str]] = []
        #: the same faults in full, replayable as scenario events (clusterfunk shrink)
        self.schedule: list[Fault] = []
        #: (time, node, error) of nodes whose store refused to start (disk corrupt)
        self.refused: list[tuple[float, str, str]] = []
        self._until = float("inf")
        #: what running faults hold (overlap > 1): "net" (a partition), "link" (the
        #: default link), target names
        self._busy: set[str] = set()
        #: vote-crash: armed until this time; the terms nodes are candidates in; the
        #: last term each node was seen in
        self._vote_armed = -1.0
        self._candidate_terms: set[int] = set()
        self._terms: dict[str, int] = {}
        if "vote-crash" in config.kinds:
            sim.tracer.listeners.append(self._on_record)

    def start(self, until: float = float("inf")) -> None:
        """Schedule faults; every fault has ended by ``until`` (a quiet tail after it
        lets workloads check that the system recovers)."""
        self._until = until
        if self.config.kinds and self.targets:
            for _ in range(self.config.overlap):  # independent chains of faults
                self.sim.at(self.config.warmup, self._next)

    def _next(self) -> None:
        gap = self.rng.expovariate(1.0 / self.config.mean_gap)
        t = self.sim.now + gap
        if t + self.config.min_duration <= self._until:
            self.sim.at(t, self._begin)

    def _begin(self) -> None:
        cfg = self.config
        sim = self.sim
        rng = self.rng
        kind = rng.choice(cfg.kinds)
        duration = min(rng.uniform(cfg.min_duration, cfg.max_duration), self._until - sim.now)
        busy = self._busy
        def free(n: str) -> bool:
            return (f"{kind}:{n}" if kind in ("slow", "stall") else n) not in busy

        live = [n for n in self.targets if sim.alive(n) and free(n)]
        if kind == "bounce":  # a crash-restart (a supervisor restarting the process)
            duration = min(rng.uniform(*BOUNCE_DOWN), duration)
        elif kind == "stall":
            duration = min(rng.uniform(*STALL_HOLD), duration)
        end = None
        detail = ""
        held = ""
        fault = Fault(sim.now, sim.now + duration, kind)
        if (kind == "partition" and "net" in busy) or (
                kind in ("loss", "duplicate", "reorder") and "link" in busy) or (
                kind == "vote-crash" and "vote-crash" in busy):
            pass  # the resource is in use by another running fault: try again later
        elif kind == "vote-crash":
            # armed: the crash itself is recorded when a vote triggers it (_on_record)
            self._vote_armed = sim.now + duration
            held = "vote-crash"

            def disarm() -> None:
                self._vote_armed = -1.0

            busy.add(held)
            sim.after(duration, self._finish, held, disarm)
            return
        elif kind == "partition" and len(self.targets) >= 2:
            order = list(self.targets)
            rng.shuffle(order)
            cut = rng.randrange(1, len(order))
            sim.partition([sorted(order[:cut]), sorted(order[cut:])])
            fault.groups = [sorted(order[:cut]), sorted(order[cut:])]
            end = sim.heal
            held = "net"
        elif kind in ("crash", "pause", "skew", "bounce", "slow", "stall") and live:
            target = rng.choice(live)
            if cfg.focus and rng.random() < cfg.focus and self.primary is not None:
                primary = self.primary()
                if primary in live:
                    target = primary
            detail = held = fault.target = target
            if kind in ("crash", "bounce"):
                sim.crash(target)
                end = lambda: sim.restart(target)  # noqa: E731
            elif kind == "pause":
                sim.pause(target)
                end = lambda: sim.resume(target)  # noqa: E731
            elif kind == "stall":
                held = f"stall:{target}"  # a send path: may overlap a fault of the process
                sim.stall(target, sim.now + duration)
                end = lambda: None  # noqa: E731  (the frames leave at ``until``)
            elif kind == "slow":
                held = f"slow:{target}"  # a network path: may overlap a fault of the process
                latency = rng.uniform(*SLOW_LATENCY)
                fault.link = {"latency": latency, "jitter": latency / 2}
                end = start_slow(sim, target, latency, latency / 2)
            else:
                clock = sim.hosts[target].clock
                sim.set_skew(target, clock.offset + rng.uniform(0.0, 1.0), rng.uniform(-0.02, 0.02))
                fault.offset, fault.drift = clock.offset, clock.drift

                def end() -> None:
                    # stop drifting without stepping the clock: keep local time continuous
                    local = clock.now()
                    sim.set_skew(target, local - sim.now, 0.0)

        elif kind == "disk" and live:
            target = rng.choice(live)
            detail = held = fault.target = target
            fault.disk, end = start_disk_fault(
                sim, target, rng.choice(DISK_FAULTS), rng=rng, targets=self.targets,
                refused=self.refused)
        elif kind in ("loss", "duplicate", "reorder"):
            old = sim.link
            new = attrs.evolve(old)
            if kind == "loss":
                new.loss = rng.uniform(0.05, 0.30)
                new.stream_reset = new.loss / 10
            elif kind == "duplicate":
                new.duplicate = rng.uniform(0.05, 0.30)
            else:
                new.reorder = rng.uniform(0.10, 0.50)
                new.reorder_window = 0.05
            sim.set_default_link(new)
            fault.link = {
                k: getattr(new, k) for k in attrs.fields_dict(LinkConfig)
                if getattr(new, k) != getattr(old, k)
            }
            end = lambda: sim.set_default_link(old)  # noqa: E731
            held = "link"
        if end is None:  # nothing to do (no live target): try again later
            self._next()
            return
        self.faults.append((round(sim.now, 6), kind, detail))
        self.schedule.append(fault)
        if held:
            busy.add(held)

        sim.after(duration, self._finish, held, end)

    def _finish(self, held: str, end: Callable[[], None]) -> None:
        self._busy.discard(held)
        end()
        self._next()

    def _on_record(self, rec: dict[str, object]) -> None:
        """``vote-crash``: watch ``raft.role`` records; while armed, crash the first
        voter that takes up a candidate's term soon after (it is answering that
        candidate's RequestVote) and restart it after a short time."""
        if rec["ev"] != "raft.role":
            return
        node, term, role = str(rec["node"]), rec["term"], rec["role"]
        assert isinstance(term, int)
        before = self._terms.get(node, -1)
        self._terms[node] = term
        if role == "candidate":
            self._candidate_terms.add(term)
            return
        sim = self.sim
        if role != "follower" or term <= before or term not in self._candidate_terms \
                or sim.now > self._vote_armed or node in self._busy or node not in self.targets:
            return
        self._vote_armed = -1.0  # one crash per arming
        rng = self.rng
        at = sim.now + rng.uniform(*VOTE_CRASH_DELAY)
        down = min(rng.uniform(*BOUNCE_DOWN), max(self._until - at, 0.0))  # over by until
        self._busy.add(node)
        sim.at(at, self._vote_crash, node, at, down)

    def _vote_crash(self, node: str, at: float, down: float) -> None:
        sim = self.sim
        if not sim.alive(node):
            self._busy.discard(node)
            return
        sim.crash(node)
        self.faults.append((round(at, 6), "vote-crash", node))
        self.schedule.append(Fault(at, at + down, "vote-crash", target=node))

        def restart() -> None:
            self._busy.discard(node)
            sim.restart(node)

        sim.after(down, restart)


def start_disk_fault(
    sim: Simulation, target: str, what: str, *, rng: random.Random, targets: list[str],
    refused: list[tuple[float, str, str]],
) -> tuple[str, Callable[[], None]]:
    """Start one disk fault (``fsync_error``, ``torn_write`` or ``corrupt``) on
    ``target``, traced as ``sim.disk``; returns the kind done and what ends it.

    Shared by the nemesis and scenario files (``action = "disk"``), so that a shrunk
    schedule replays disk faults the way the nemesis made them. ``corrupt`` becomes
    ``torn_write`` when a majority of the Raft store holders among ``targets`` must
    stay able to start (``refused`` lists the nodes whose store refused so far) or
    when nothing is synced yet; ``rng`` picks the damaged record."""
    disk = sim.hosts[target].disk
    if what == "corrupt":
        # Keep a majority of the nodes that hold a Raft store able to start.
        holders = [t for t in targets
                   if any(_raft_key(k) for k in sim.hosts[t].disk.keys())]  # noqa: SIM118
        if len(refused) >= (len(holders) - 1) // 2:
            what = "torn_write"
    if what == "corrupt":
        keys = [k for k in disk.keys() if _raft_key(k)]  # noqa: SIM118
        if disk.corrupt(rng, keys) is None:
            what = "torn_write"  # nothing synced to damage yet
    sim.tracer.emit("sim", "sim.disk", {"target": target, "kind": what})
    if what == "fsync_error":
        disk.fail_next_sync = True

        def end() -> None:
            disk.fail_next_sync = False  # no sync during the fault: disarm
            if not sim.alive(target):
                sim.restart(target)

        return what, end
    if what == "torn_write":
        disk.power_cut_on_next_write = True

        def end_torn() -> None:
            disk.power_cut_on_next_write = False  # no write during the fault
            if not sim.alive(target):
                sim.restart(target)

        return what, end_torn
    if what != "corrupt":
        raise ValueError(f"unknown disk fault {what!r}; choose from {', '.join(DISK_FAULTS)}")
    sim.crash(target)

    def start_if_it_recovers() -> None:
        # The node's start reads its store first (RaftCore -> recover()): a
        # store that detects the damage refuses, and the node stays down.
        try:
            SimStorage(disk).recover()
        except StorageCorrupt as exc:
            refused.append((round(sim.now, 6), target, str(exc)))
            return
        sim.restart(target)

    return what, start_if_it_recovers


def start_slow(sim: Simulation, target: str, latency: float,
               jitter: float) -> Callable[[], None]:
    """Make every link to and from ``target`` slow: the default link with this one-way
    ``latency`` and mean exponential ``jitter`` (seconds; stream frames stay in order,
    so a late frame holds back those behind it). Traced as ``sim.link`` with ``target``.
    Returns what ends it (the links of ``target`` follow the default link again).

    Shared by the nemesis (kind ``slow``) and scenario files (``action = "slow"``)."""
    slow = attrs.evolve(sim.link, latency=latency, jitter=jitter)
    pairs = [(a, b) for other in sim.names if other != target
             for a, b in ((target, other), (other, target))]
    before = {pair: sim.links.get(pair) for pair in pairs}
    for a, b in pairs:
        sim.set_link(a, b, slow)
    _trace_links(sim, target, slow)

    def end() -> None:
        for pair, cfg in before.items():
            if cfg is None:
                sim.links.pop(pair, None)
            else:
                sim.links[pair] = cfg
        _trace_links(sim, target, sim.link)

    return end


def _trace_links(sim: Simulation, target: str, cfg: LinkConfig) -> None:
    sim.tracer.emit("sim", "sim.link", {
        "target": target, "latency": cfg.latency, "jitter": cfg.jitter, "loss": cfg.loss,
        "duplicate": cfg.duplicate, "reorder": cfg.reorder, "stream_reset": cfg.stream_reset,
    })


def _raft_key(key: object) -> bool:
    return type(key) is tuple and key[:1] == ("raft",)


def link_with(base: LinkConfig, **changes: float) -> LinkConfig:
    return attrs.evolve(base, **changes)
