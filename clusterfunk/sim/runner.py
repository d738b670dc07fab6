"""``clusterfunk simulate``: build a simulation from options, run it, summarise it."""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

from clusterfunk import mutants as mutants_mod
from clusterfunk.sim import scenario as scenario_mod
from clusterfunk.sim.nemesis import EXTRA_KINDS, KINDS, Nemesis, NemesisConfig, parse_kinds
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workload import WORKLOADS, add_workload_arguments, load_workload
from clusterfunk.trace import Tracer

#: The run is cut into this many slices, whatever the display: progress output can
#: never change the order of events.
SLICES = 200

DEFAULTS: dict[str, Any] = {
    "protocol": "ping",
    "nodes": 5,
    "seed": 1,
    "duration": 60.0,
    "trace": None,
    "trace_net": False,
    "loss": 0.0,
    "latency": 1.0,
    "jitter": 0.2,
    "duplicate": 0.0,
    "reorder": 0.0,
    "stream_reset": None,
    "nemesis": "",
    "nemesis_until": None,
    "nemesis_overlap": 1,
    "nemesis_focus": 0.0,
    "nemesis_gap": 10.0,
    "crash": [],
    "restart": [],
    "pause": [],
    "resume": [],
    "datagram_budget": 1400,
    "mutant": None,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``simulate``. Defaults are None so a scenario file can supply them."""
    p.add_argument(
        "--protocol",
        help=f"workload: {', '.join(WORKLOADS)} (default ping, a stand-in protocol)",
    )
    p.add_argument("--nodes", type=int, help="number of nodes n1..nN (default 5)")
    p.add_argument("--seed", type=int, help="the seed; same seed, same run (default 1)")
    p.add_argument("--duration", type=float, help="virtual seconds to run (default 60)")
    p.add_argument("--trace", metavar="PATH", help="write the JSON Lines trace here ('-' = stdout)")
    p.add_argument(
        "--trace-net",
        action="store_true",
        default=None,
        help="also trace every net.send / net.deliver / net.drop",
    )
    p.add_argument("--loss", type=float, help="datagram loss probability (default 0)")
    p.add_argument("--latency", type=float, help="one-way base latency in ms (default 1)")
    p.add_argument(
        "--jitter", type=float, help="mean extra latency in ms, exponential (default 0.2)"
    )
    p.add_argument("--duplicate", type=float, help="datagram duplication probability (default 0)")
    p.add_argument("--reorder", type=float, help="datagram reordering probability (default 0)")
    p.add_argument(
        "--stream-reset",
        type=float,
        help="probability that a stream frame breaks its connection (default: --loss / 10)",
    )
    p.add_argument(
        "--nemesis",
        metavar="KINDS",
        help=f"random faults: comma list of {','.join(KINDS + EXTRA_KINDS)}; 'all' is every "
        f"kind but {','.join(EXTRA_KINDS)} ('all,disk' adds disk faults: fsync errors, torn "
        "writes, corrupt records); 'harsh' is 'all' plus slow (one node's links get "
        "20-400 ms latency) and bounce (a crash-restart within 1 s); stall holds one "
        "node's outgoing frames 1.5-4 s (a stuck send buffer); vote-crash crashes a voter "
        "within 2 ms of its vote (raft; use with --pre-vote off)",
    )
    p.add_argument(
        "--nemesis-overlap",
        type=int,
        metavar="N",
        help="up to N nemesis faults at once (N independent chains of faults; never two "
        "partitions, two default-link changes or two faults on one node; default 1)",
    )
    p.add_argument(
        "--nemesis-gap",
        type=float,
        metavar="S",
        help="mean quiet time in s before each nemesis fault, exponential (default 10)",
    )
    p.add_argument(
        "--nemesis-focus",
        type=float,
        metavar="P",
        help="chance that a fault on one node (crash, pause, skew, slow, bounce) hits the "
        "workload's primary, the Raft leader, when there is one (raft; default 0)",
    )
    p.add_argument(
        "--nemesis-until",
        type=float,
        metavar="T",
        help="every nemesis fault is over by T seconds (default: duration minus a quiet tail "
        "of a quarter of the run, at most 90 s)",
    )
    p.add_argument(
        "--stop-at-violation",
        action="store_true",
        help="end the run at the first violation an in-run checker reports (checked 200 "
        "times a run; raft and cluster workloads): a failing seed costs less in a sweep; "
        "its violations are then those found so far (no end-of-run checks)",
    )
    p.add_argument("--crash", action="append", metavar="ID@T", help="crash node ID at T seconds")
    p.add_argument("--restart", action="append", metavar="ID@T", help="restart node ID at T")
    p.add_argument("--pause", action="append", metavar="ID@T", help="pause node ID at T")
    p.add_argument("--resume", action="append", metavar="ID@T", help="resume node ID at T")
    p.add_argument("--datagram-budget", type=int, help="max datagram bytes (default 1400)")
    p.add_argument("--scenario", metavar="FILE.toml", help="options and a story of faults")
    p.add_argument(
        "--mutant",
        metavar="NAME",
        help="switch on a planted bug (comma list allowed); see --list-mutants",
    )
    p.add_argument(
        "--list-mutants",
        action="store_true",
        help="print the planted bugs, one per line (name first), and exit",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    add_workload_arguments(p)


class UsageError(ValueError):
    pass


def _parse_at(items: list[str], what: str) -> list[tuple[str, float]]:
    out = []
    for item in items:
        name, sep, t = str(item).partition("@")
        try:
            if not sep:
                raise ValueError
            out.append((name, float(t)))
        except ValueError:
            raise UsageError(f"--{what} takes ID@SECONDS, e.g. n3@30, not {item!r}") from None
    return out


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    """Merge defaults < scenario file < explicit command-line options."""
    merged = dict(DEFAULTS)
    events: tuple[scenario_mod.Event, ...] = ()
    if getattr(args, "scenario", None):
        sc = scenario_mod.load(args.scenario)
        for k, v in sc.options.items():
            if k not in DEFAULTS and not hasattr(args, k):
                raise UsageError(f"scenario option {k!r} is not a simulate option")
            merged[k] = v
        events = sc.events
    for k, v in vars(args).items():
        if v is not None and k not in ("func",) and (k in DEFAULTS or k not in merged):
            merged[k] = v
    ns = argparse.Namespace(**merged)
    ns.scenario_events = events
    if isinstance(ns.nemesis, list):
        ns.nemesis = ",".join(ns.nemesis)
    if ns.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    if ns.duration <= 0:
        raise UsageError("--duration must be positive")
    if ns.stream_reset is None:
        ns.stream_reset = ns.loss / 10
    for k in ("loss", "duplicate", "reorder", "stream_reset"):
        if not 0 <= getattr(ns, k) <= 1:
            raise UsageError(f"--{k} must be a probability between 0 and 1")
    if ns.nemesis_overlap < 1:
        raise UsageError("--nemesis-overlap must be at least 1")
    if not 0 <= ns.nemesis_focus <= 1:
        raise UsageError("--nemesis-focus must be a probability between 0 and 1")
    if ns.latency < 0 or ns.jitter < 0:
        raise UsageError("--latency and --jitter must be >= 0")
    try:
        ns.mutants = mutants_mod.parse(ns.mutant, ns.protocol)
    except mutants_mod.UnknownMutant as exc:
        raise UsageError(str(exc)) from None
    return ns


def link_config(opts: argparse.Namespace) -> LinkConfig:
    """The default link of resolved options."""
    return LinkConfig(
        latency=opts.latency / 1000.0,
        jitter=opts.jitter / 1000.0,
        loss=opts.loss,
        duplicate=opts.duplicate,
        reorder=opts.reorder,
        stream_reset=opts.stream_reset,
    )


def build(opts: argparse.Namespace, out: IO[str] | None) -> tuple[Simulation, Any, Nemesis | None]:
    tracer = Tracer(lambda: 0.0, out, net=bool(opts.trace_net))
    link = link_config(opts)
    sim = Simulation(opts.seed, tracer=tracer, link=link, datagram_budget=opts.datagram_budget)
    workload = load_workload(opts.protocol)(opts)
    workload.setup(sim)
    names = set(sim.names)
    for what in ("crash", "restart", "pause", "resume"):
        for name, t in _parse_at(getattr(opts, what) or [], what):
            if name not in names:
                raise UsageError(f"--{what}: unknown node {name!r} (nodes are n1..n{opts.nodes})")
            sim.at(t, getattr(sim, what), name)
    scenario_mod.schedule(sim, opts.scenario_events)
    nemesis = None
    if opts.nemesis:
        nemesis = Nemesis(
            sim, workload.fault_targets(sim),
            NemesisConfig(kinds=parse_kinds(opts.nemesis), overlap=opts.nemesis_overlap,
                          focus=opts.nemesis_focus, mean_gap=opts.nemesis_gap),
            primary=getattr(workload, "primary", None),
        )
        until = opts.nemesis_until
        if until is None:
            until = opts.duration - min(90.0, opts.duration / 4)
        nemesis.start(until=until)
    return sim, workload, nemesis


#: The cyclic garbage collector's first-generation threshold while a simulation runs
#: (CPython's default is 700). A simulation allocates millions of short-lived
#: objects (messages, trace records) and few cycles; collecting every 700
#: allocations took about a quarter of a 1,000-node mass join. Restored afterwards.
GC_THRESHOLD = 100_000


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def run(
    opts: argparse.Namespace,
    *,
    progress: bool = False,
    err: IO[str] = sys.stderr,
    out: IO[str] | None = None,
    schedule: list[Any] | None = None,
) -> dict[str, Any]:
    """Run a simulation described by resolved options; return the summary dict.
    Without ``opts.trace``, the trace goes to ``out`` if given; ``schedule`` (a list)
    receives the nemesis's faults in full (:attr:`Nemesis.schedule`)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_fewer_collections())
        if opts.trace == "-":
            out = sys.stdout
        elif opts.trace:
            out = stack.enter_context(open(opts.trace, "w", encoding="utf-8", newline="\n"))
        sim, workload, nemesis = build(opts, out)
        wall0 = time.perf_counter()
        live = getattr(workload, "live_violations", None) \
            if getattr(opts, "stop_at_violation", False) else None
        found: list[str] = []
        result: dict[str, Any]
        sim.start()
        for i in range(1, SLICES + 1):
            sim.run_until(opts.duration * i / SLICES)
            if progress:
                _bar(err, i / SLICES, sim, time.perf_counter() - wall0)
            if live is not None:
                found = live()
                if found:
                    break
        if progress:
            err.write("\n")
        wall = time.perf_counter() - wall0
        if nemesis is not None and schedule is not None:
            schedule.extend(nemesis.schedule)
        if found:
            # stopped early: the violations found so far; the end-of-run checks (which
            # assume the run's quiet tail) are not run
            result = {"stopped_at": round(sim.now, 6)}
        else:
            result = workload.finish(sim)
        sim.tracer.emit("sim", "sim.end", {"events": sim.stats["events"]})
    violations = found or list(result.pop("violations", []))
    return {
        "protocol": opts.protocol,
        "seed": opts.seed,
        "nodes": opts.nodes,
        "duration": opts.duration,
        "wall_seconds": round(wall, 3),
        "speedup": round(opts.duration / wall, 1) if wall > 0 else None,
        "events": sim.stats["events"],
        "network": {k: v for k, v in sim.stats.items() if k != "events"},
        "faults": [list(f) for f in nemesis.faults] if nemesis else [],
        "workload": result,
        "violations": violations,
    }


def _bar(err: IO[str], frac: float, sim: Simulation, wall: float) -> None:
    width = 30
    filled = int(frac * width)
    rate = sim.now / wall if wall > 0 else 0.0
    err.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}%  "
        f"t={sim.now:8.1f}s  {rate:6.1f}x real time"
    )
    err.flush()


def print_summary(summary: dict[str, Any], stream: IO[str]) -> None:
    w = stream.write
    w(
        f"clusterfunk simulate: protocol={summary['protocol']} nodes={summary['nodes']} "
        f"seed={summary['seed']} duration={summary['duration']}s\n"
    )
    w(
        f"  wall time {summary['wall_seconds']}s ({summary['speedup']}x real time), "
        f"{summary['events']} events\n"
    )
    net = summary["network"]
    w(
        f"  network: {net['datagrams_sent']} datagrams sent, "
        f"{net['datagrams_delivered']} delivered, "
        f"{net['frames_sent']} frames sent, {net['frames_delivered']} delivered; dropped: "
        f"loss {net['dropped_loss']}, partition {net['dropped_partition']}, "
        f"down {net['dropped_down']}, reset {net['dropped_reset']}; "
        f"duplicated {net['duplicated']}, reordered {net['reordered']}\n"
    )
    if summary["faults"]:
        w(
            f"  nemesis: {len(summary['faults'])} faults: "
            + ", ".join(
                f"{k}{'(' + d + ')' if d else ''}@{t}" for t, k, d in summary["faults"][:12]
            )
            + (" ..." if len(summary["faults"]) > 12 else "")
            + "\n"
        )
    for k, v in summary["workload"].items():
        w(f"  {k}: {json.dumps(v) if isinstance(v, dict | list) else v}\n")
    if summary["violations"]:
        w(f"  VIOLATIONS ({len(summary['violations'])}):\n")
        for v in summary["violations"][:20]:
            w(f"    - {v}\n")
    else:
        w("  invariants: no violations\n")


class _Sha256Writer:
    """A text sink that keeps the sha256 of what ``--trace FILE`` would hold, and one
    of the same without the ``sim.end`` record (whose event count includes the
    nemesis's own wake-ups, so it differs when the same faults come from a scenario)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.body = hashlib.sha256()
        self._in_end = False

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.h.update(data)
        if text.startswith('{"t":') and '"node":"sim","ev":"sim.end"' in text:
            self._in_end = True
        elif self._in_end and text == "\n":
            self._in_end = False
        else:
            self.body.update(data)
        return len(text)


class Outcome(NamedTuple):
    """What :func:`run_one` returns."""

    verdict: str  # "ok" or "fail"
    violations: list[str]
    trace_sha256: str  # of the bytes `simulate --trace FILE` writes for the same options
    summary: dict[str, Any]
    schedule: list[Any]  # the nemesis's faults in full (nemesis.Fault)
    body_sha256: str  # the same trace without its sim.end record


def run_one(opts: argparse.Namespace) -> Outcome:
    """Run one simulation from resolved options (:func:`resolve_options`) in this
    process, without writing a trace; return verdict, violations and trace hash
    (for ``clusterfunk sweep`` and ``shrink``)."""
    opts = argparse.Namespace(**{**vars(opts), "trace": None})
    sink = _Sha256Writer()
    schedule: list[Any] = []
    summary = run(opts, out=sink, schedule=schedule)  # type: ignore[arg-type]
    violations = list(summary["violations"])
    verdict = "fail" if violations else "ok"
    return Outcome(
        verdict, violations, sink.h.hexdigest(), summary, schedule, sink.body.hexdigest()
    )


def main(args: argparse.Namespace) -> int:
    if getattr(args, "list_mutants", False):
        for m in mutants_mod.MUTANTS.values():
            print(mutants_mod.describe(m))
        return 0
    try:
        opts = resolve_options(args)
        progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
        summary = run(opts, progress=progress)
    except (UsageError, scenario_mod.ScenarioError, ValueError) as exc:
        print(f"clusterfunk simulate: error: {exc}", file=sys.stderr)
        return 2
    stream = sys.stderr if opts.trace == "-" else sys.stdout
    if args.json:
        stream.write(json.dumps(summary, indent=2) + "\n")
    else:
        print_summary(summary, stream)
    return 1 if summary["violations"] else 0
