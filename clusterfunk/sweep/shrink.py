"""``clusterfunk shrink``: minimise the fault schedule of a failing run.

The nemesis decides its faults from the seed; a run records them in full
(:attr:`clusterfunk.sim.nemesis.Nemesis.schedule`). Shrinking replays that list as
explicit scenario events (no nemesis) -- which must fail the same way -- and then,
greedily, keeps every change after which the *same kind* of violation (the
checker's name, e.g. ``State Machine Safety`` or ``linearizability``) still occurs:

1. drop faults (delta debugging: halves, quarters, ... then single faults);
2. fewer nodes (faults on removed nodes go, partitions lose them), fewer clients
   (raft), a shorter run;
3. shorten each fault (a quarter, then half of its length);
4. move each fault later (half-way to the next one).

Passes repeat until one changes nothing or ``max_runs`` simulations were spent.
The result is a scenario TOML (:mod:`clusterfunk.sim.scenario`) that
``clusterfunk simulate --scenario FILE`` replays.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any

import attrs

from clusterfunk.sim import runner
from clusterfunk.sim import scenario as scenario_mod
from clusterfunk.sim.nemesis import Fault
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sweep import sweep as sweep_mod

#: simulate options that never go into a shrunk scenario
_NOT_OPTIONS = frozenset({
    "nemesis", "nemesis_until", "nemesis_overlap", "nemesis_focus", "nemesis_gap", "trace",
    "trace_net", "json", "progress", "scenario", "list_mutants", "func", "command",
})
MIN_NODES = 3
MIN_FAULT = 0.2  # seconds: faults are not shortened below this


def violation_kind(v: str) -> str:
    """The checker / rule a violation string names: ``"t=3.2: Election Safety: ..."``
    -> ``"Election Safety"``; text without such a name -> its first words that hold
    no number or node name (``"applied index but the next"``)."""
    text = re.sub(r"^t=[^:]*:\s*", "", v)
    head, sep, _ = text.partition(":")
    if sep and head and len(head) <= 40 and not re.search(r"\d", head):
        return head.strip()
    words = [w for w in text.split() if w.isalpha()]
    return " ".join(words[:5])


def _ms(seconds: float) -> float:
    return seconds * 1000.0  # the scenario divides by 1000 again (exact for 0.01, 0.05)


def _link_args(fields: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in fields.items():
        if k in ("latency", "jitter", "reorder_window"):
            out[f"{k}_ms"] = _ms(v)
        else:
            out[k] = v
    return out


def fault_events(f: Fault, base: LinkConfig) -> list[dict[str, Any]]:
    """A fault as the scenario events that do exactly what the nemesis did."""
    if f.kind == "partition":
        return [{"at": f.at, "action": "partition", "groups": [list(g) for g in f.groups]},
                {"at": f.until, "action": "heal"}]
    if f.kind in ("crash", "pause", "bounce", "vote-crash"):
        undo = "resume" if f.kind == "pause" else "restart"
        act = "pause" if f.kind == "pause" else "crash"
        return [{"at": f.at, "action": act, "target": f.target},
                {"at": f.until, "action": undo, "target": f.target}]
    if f.kind == "skew":
        # the nemesis stops the drift without stepping the clock (SimClock.now, then
        # minus true time: the same float operations)
        end_offset = (f.until * (1.0 + f.drift) + f.offset) - f.until
        return [{"at": f.at, "action": "skew", "target": f.target, "offset": f.offset,
                 "drift": f.drift},
                {"at": f.until, "action": "skew", "target": f.target, "offset": end_offset,
                 "drift": 0.0}]
    if f.kind in ("loss", "duplicate", "reorder"):
        restore = {k: getattr(base, k) for k in f.link}
        return [{"at": f.at, "action": "link", **_link_args(f.link)},
                {"at": f.until, "action": "link", **_link_args(restore)}]
    if f.kind == "slow":
        return [{"at": f.at, "action": "slow", "target": f.target,
                 "latency": f.link["latency"], "jitter": f.link["jitter"],
                 "until": f.until}]
    if f.kind == "stall":
        return [{"at": f.at, "action": "stall", "target": f.target, "until": f.until}]
    if f.kind == "disk":
        return [{"at": f.at, "action": "disk", "target": f.target, "kind": f.disk,
                 "until": f.until}]
    raise ValueError(f"a {f.kind!r} fault has no scenario action: shrink runs with --nemesis "
                     "kinds among partition,crash,pause,loss,duplicate,reorder,skew,disk,slow,"
                     "bounce,stall,vote-crash")


def describe(f: Fault) -> str:
    what = f.target or (" | ".join(",".join(g) for g in f.groups) if f.groups else "")
    if f.link:
        what = " ".join(f"{k}={v:.3g}" for k, v in f.link.items())
    if f.disk:
        what = f"{f.disk} {f.target}"
    return f"{f.kind}({what}) {f.at:.2f}-{f.until:.2f}s"


@attrs.define
class Candidate:
    """Simulate options (no nemesis) plus an explicit fault list."""

    options: dict[str, Any]
    faults: list[Fault]

    def with_(self, **changes: Any) -> Candidate:
        opts = dict(self.options)
        faults = changes.pop("faults", self.faults)
        opts.update(changes)
        return Candidate(opts, list(faults))


def resolved(c: Candidate) -> argparse.Namespace:
    """Resolved simulate options of a candidate, its faults as scenario events."""
    opts = runner.resolve_options(argparse.Namespace(**{**c.options, "nemesis": ""}))
    base = runner.link_config(opts)
    events = [e for f in c.faults for e in fault_events(f, base)]
    opts.scenario_events = scenario_mod.parse({"events": events}).events
    return opts


def run_candidate(c: Candidate) -> runner.Outcome:
    return runner.run_one(resolved(c))


@attrs.define
class ShrinkResult:
    original: Candidate
    best: Candidate
    kind: str
    violations: list[str]  # of the best candidate
    runs: int
    reproduced_hash: bool  # the explicit schedule gave the nemesis run's trace (but sim.end)


class Shrinker:
    def __init__(self, options: dict[str, Any], *, max_runs: int = 200,
                 log: Callable[[str], None] | None = None) -> None:
        self.options = {k: v for k, v in options.items()
                        if k not in _NOT_OPTIONS and v is not None and v is not False}
        self.nemesis_options = options
        self.max_runs = max_runs
        self.runs = 0
        self.log = log or (lambda s: None)
        self.kind = ""
        self.last_violations: list[str] = []

    def _fails(self, c: Candidate) -> bool:
        if self.runs >= self.max_runs:
            return False
        self.runs += 1
        try:
            out = run_candidate(c)
        except (ValueError, scenario_mod.ScenarioError):
            return False
        ok = any(violation_kind(v) == self.kind for v in out.violations)
        if ok:
            self.last_violations = out.violations
        return ok

    def shrink(self) -> ShrinkResult:
        opts = runner.resolve_options(argparse.Namespace(**self.nemesis_options))
        if not opts.nemesis:
            raise ValueError("nothing to shrink: the run has no nemesis (--nemesis KINDS)")
        if opts.scenario_events or any(getattr(opts, k) for k in
                                       ("crash", "restart", "pause", "resume")):
            raise ValueError("shrink takes a nemesis run, not a scenario or --crash/... faults")
        first = runner.run_one(opts)
        self.runs += 1
        if first.verdict == "ok":
            raise ValueError("the run does not fail: nothing to shrink")
        self.kind = violation_kind(first.violations[0])
        self.log(f"run fails with {len(first.violations)} violation(s); keeping "
                 f"{self.kind!r}; {len(first.schedule)} faults")
        start = Candidate(dict(self.options), list(first.schedule))
        replay = run_candidate(start)
        self.runs += 1
        reproduced = replay.body_sha256 == first.body_sha256
        if not any(violation_kind(v) == self.kind for v in replay.violations):
            raise ValueError("the explicit fault schedule does not reproduce the failure")
        self.last_violations = replay.violations
        best = start
        changed = True
        while changed and self.runs < self.max_runs:
            changed = False
            for step in (self._drop, self._nodes, self._clients, self._duration,
                         self._shorten, self._later):
                nxt = step(best)
                if nxt is not None:
                    best = nxt
                    changed = True
        # the violations of the best candidate, for the report
        final = run_candidate(best)
        self.runs += 1
        return ShrinkResult(start, best, self.kind, final.violations, self.runs, reproduced)

    # -- steps: each returns a smaller failing candidate, or None --------------------

    def _drop(self, c: Candidate) -> Candidate | None:
        faults = list(c.faults)
        if not faults:
            return None
        if self._fails(c.with_(faults=[])):
            self.log("  drop: no fault needed")
            return c.with_(faults=[])
        n = 2
        improved = False
        while len(faults) >= 2:
            size = math.ceil(len(faults) / n)
            for i in range(0, len(faults), size):
                rest = faults[:i] + faults[i + size:]
                if self._fails(c.with_(faults=rest)):
                    faults = rest
                    n = max(n - 1, 2)
                    improved = True
                    break
            else:
                if n >= len(faults):
                    break
                n = min(len(faults), n * 2)
        if improved:
            self.log(f"  drop: {len(c.faults)} -> {len(faults)} faults")
            return c.with_(faults=faults)
        return None

    def _nodes(self, c: Candidate) -> Candidate | None:
        nodes = int(c.options.get("nodes", 5))
        for n in range(MIN_NODES, nodes):
            keep = {f"n{i}" for i in range(1, n + 1)}
            faults = []
            for f in c.faults:
                if f.target and f.target not in keep:
                    continue
                if f.groups:
                    groups = [[x for x in g if x in keep] for g in f.groups]
                    if not all(groups):
                        continue
                    f = attrs.evolve(f, groups=groups)
                faults.append(f)
            cand = c.with_(nodes=n, faults=faults)
            if self._fails(cand):
                self.log(f"  nodes: {nodes} -> {n}")
                return cand
        return None

    def _clients(self, c: Candidate) -> Candidate | None:
        if c.options.get("protocol") != "raft":
            return None
        clients = int(c.options.get("clients") or 3)
        for k in range(1, clients):
            cand = c.with_(clients=k)
            if self._fails(cand):
                self.log(f"  clients: {clients} -> {k}")
                return cand
        return None

    def _duration(self, c: Candidate) -> Candidate | None:
        duration = float(c.options.get("duration", 60.0))
        last = max((f.until for f in c.faults), default=0.0)
        times = [float(m.group(1)) for v in self.last_violations
                 if (m := re.match(r"t=([0-9.]+):", v))]
        seen = min(times) if times else last
        for d in sorted({math.ceil(max(last, seen)) + 5.0, math.ceil(max(last, seen)) + 15.0}):
            if d < duration and self._fails(c.with_(duration=d)):
                self.log(f"  duration: {duration:g} -> {d:g} s")
                return c.with_(duration=d)
        return None

    def _shorten(self, c: Candidate) -> Candidate | None:
        faults = list(c.faults)
        changed = False
        for i, f in enumerate(faults):
            length = f.until - f.at
            for frac in (0.25, 0.5):
                new = length * frac
                if new < MIN_FAULT:
                    continue
                trial = [*faults[:i], attrs.evolve(f, until=f.at + new), *faults[i + 1:]]
                if self._fails(c.with_(faults=trial)):
                    faults = trial
                    changed = True
                    break
        if changed:
            self.log("  shortened faults")
            return c.with_(faults=faults)
        return None

    def _later(self, c: Candidate) -> Candidate | None:
        faults = sorted(c.faults, key=lambda f: f.at)
        duration = float(c.options.get("duration", 60.0))
        changed = False
        for i, f in enumerate(faults):
            limit = faults[i + 1].at if i + 1 < len(faults) else duration - 1.0
            slack = limit - f.until
            if slack < 1.0:
                continue
            shift = slack / 2
            moved = attrs.evolve(f, at=f.at + shift, until=f.until + shift)
            trial = [*faults[:i], moved, *faults[i + 1:]]
            if self._fails(c.with_(faults=trial)):
                faults = trial
                changed = True
        if changed:
            self.log("  moved faults later")
            return c.with_(faults=faults)
        return None


# -- scenario TOML ----------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def scenario_toml(c: Candidate, header: list[str]) -> str:
    """A scenario file (format of :mod:`clusterfunk.sim.scenario`) for ``c``."""
    opts = runner.resolve_options(argparse.Namespace(**{**c.options, "nemesis": ""}))
    base = runner.link_config(opts)
    lines = [f"# {h}" for h in header]
    lines.append("[simulation]")
    for k, v in c.options.items():
        if isinstance(v, list | tuple) and not v:
            continue
        lines.append(f"{k} = {_toml_value(v)}")
    events = [e for f in sorted(c.faults, key=lambda f: f.at) for e in fault_events(f, base)]
    events.sort(key=lambda e: e["at"])
    for e in events:
        lines.append("")
        lines.append("[[events]]")
        for k, v in e.items():
            key = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
            lines.append(f"{key} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


# -- command line -----------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "shrink",
        help="minimise the fault schedule of a failing simulation into a scenario TOML",
        description="Take a failing run (simulate options, or a sweep result line with "
        "--result) and drop, shorten and move its nemesis faults, and use fewer nodes, "
        "while the same kind of violation still occurs; write the result as a scenario "
        "file and print the command that replays it.",
    )
    runner.add_arguments(p)
    p.add_argument("--result", metavar="FILE|JSON",
                   help="a sweep result line, or a sweep .jsonl file (its first failing "
                   "seed, or --seed)")
    p.add_argument("-o", "--output", metavar="FILE.toml",
                   help="where to write the scenario (default shrunk-<protocol>-seed<N>.toml)")
    p.add_argument("--max-runs", type=int, default=200,
                   help="simulations to spend at most (default 200)")
    p.set_defaults(func=main)


def _options_from_result(text: str, seed: int | None) -> dict[str, Any]:
    text = text.strip()
    if text.startswith("{"):
        line = json.loads(text)
    else:
        lines = sweep_mod.read_results(text)
        if not lines:
            raise ValueError(f"no sweep result lines in {text}")
        picked = [r for r in lines if (r["seed"] == seed if seed is not None
                                      else r["verdict"] != "ok")]
        if not picked:
            raise ValueError(f"no {'seed ' + str(seed) if seed else 'failing seed'} in {text}")
        line = picked[0]
    argv = shlex.split(line["replay"])[1:]
    return _explicit(sweep_mod.simulate_parser().parse_args(argv[1:]))


def _explicit(ns: argparse.Namespace) -> dict[str, Any]:
    """The simulate options of ``ns`` that were given (not left at their default)."""
    defaults = {a.dest: a.default for a in sweep_mod.simulate_parser()._actions}
    return {k: v for k, v in vars(ns).items()
            if k in defaults and k not in ("json", "progress", "list_mutants", "help")
            and v is not None and v is not False and v != defaults[k]}


def main(args: argparse.Namespace) -> int:
    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    try:
        if args.result:
            options = _options_from_result(args.result, args.seed)
        else:
            options = _explicit(args)
        shrinker = Shrinker(options, max_runs=args.max_runs, log=log)
        res = shrinker.shrink()
    except (ValueError, runner.UsageError, scenario_mod.ScenarioError, OSError) as exc:
        print(f"clusterfunk shrink: error: {exc}", file=sys.stderr)
        return 2
    best = res.best
    opts = best.options
    path = args.output or f"shrunk-{opts.get('protocol', 'sim')}" \
        f"{'-' + opts['mutant'] if opts.get('mutant') else ''}-seed{opts.get('seed', 1)}.toml"
    orig_cmd = sweep_mod.replay_command(
        ["simulate", *_argv(shrinker.nemesis_options)])
    header = [
        "Shrunk by `clusterfunk shrink` from:",
        f"  {orig_cmd}",
        f"{len(res.original.faults)} faults -> {len(best.faults)}; violation kept: {res.kind}",
        *[f"  {describe(f)}" for f in sorted(best.faults, key=lambda f: f.at)],
        f"Replay: clusterfunk simulate --scenario {path}",
    ]
    with open(path, "w", encoding="utf-8") as sink:
        sink.write(scenario_toml(best, header))
    print(f"shrunk: {len(res.original.faults)} faults -> {len(best.faults)} "
          f"(nodes {res.original.options.get('nodes')} -> {opts.get('nodes')}), "
          f"{res.runs} runs; violation kind {res.kind!r}")
    for f in sorted(best.faults, key=lambda f: f.at):
        print(f"  {describe(f)}")
    for v in res.violations[:3]:
        print(f"  {v}")
    print(f"wrote {path}")
    print(f"replay: clusterfunk simulate --scenario {shlex.quote(path)}")
    return 0


def _argv(options: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif isinstance(v, list):
            for x in v:
                out += [flag, str(x)]
        else:
            out += [flag, sweep_mod._num(v) if isinstance(v, float) else str(v)]
    return out
