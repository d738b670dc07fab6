"""``clusterfunk sweep`` and ``clusterfunk shrink`` (registered by ``add_parser``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clusterfunk.sweep import sweep as sweep_mod


def add_parser(sub: Any) -> None:
    """Register ``sweep`` and ``shrink`` on an ``argparse`` subparsers object."""
    p = sub.add_parser(
        "sweep",
        help="run a simulation over a range of seeds in parallel and report failures",
        description="Run `clusterfunk simulate` once per seed (local processes, or Dask "
        "distributed with --dask), write one JSON line per seed, and list every failing "
        "seed with the command that replays it byte for byte.",
    )
    p.add_argument("--protocol", default="raft", help="workload (default raft)")
    p.add_argument("--nodes", type=int, default=5, help="nodes per run (default 5)")
    p.add_argument("--duration", type=float, default=60.0, help="virtual seconds (default 60)")
    p.add_argument("--seeds", required=True, metavar="A-B", help="seed range, e.g. 1-200")
    p.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--mutant", metavar="NAME", help="switch on a planted bug (simulate "
                   "--list-mutants)")
    p.add_argument("--nemesis", metavar="KINDS", default="all",
                   help="nemesis fault kinds, comma list, 'all' or 'harsh' (all plus slow and "
                   "bounce; see simulate --help); 'harsh,stall' adds stalled send paths, "
                   "',vote-crash' voters that crash just after voting (default all)")
    p.add_argument("--set", action="append", metavar="OPTION=VALUE",
                   help="pass another simulate option to every run, e.g. --set latency=20 "
                   "--set op-rate=50 (repeatable)")
    p.add_argument("--json", action="store_true",
                   help="stdout: one JSON object per seed, then a summary object")
    p.add_argument("--out", metavar="FILE.jsonl", help="append result lines here as they come")
    p.add_argument("--resume", action="store_true",
                   help="skip seeds already in --out with the same options")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run on a Dask distributed scheduler (tcp://host:8786)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    p.set_defaults(func=main_sweep)

    from clusterfunk.sweep import shrink

    shrink.add_parser(sub)


def main_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    err = Console(stderr=True)
    try:
        seeds = sweep_mod.parse_seeds(args.seeds)
        if args.nodes < 1 or args.duration <= 0 or args.jobs < 1:
            raise ValueError("--nodes and --jobs must be >= 1, --duration > 0")
        if args.resume and not args.out:
            raise ValueError("--resume needs --out FILE")
        spec = sweep_mod.SweepSpec(args.protocol, args.nodes, args.duration,
                                   args.nemesis, args.mutant, sweep_mod.parse_set(args.set))
        sweep_mod.resolve_argv(spec.argv(seeds[0]))  # validate every option up front
    except (ValueError, SystemExit) as exc:
        err.print(f"clusterfunk sweep: error: {exc}", markup=False, highlight=False)
        return 2

    show = args.progress == "always" or (args.progress == "auto" and err.is_terminal)
    failures = 0

    def emit(line: dict[str, Any]) -> None:
        nonlocal failures
        if line["verdict"] != "ok":
            failures += 1
        if args.json:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    kw: dict[str, Any] = {"jobs": args.jobs, "dask": args.dask, "out": args.out,
                          "resume": args.resume}
    try:
        if show:
            result = _with_progress(err, spec, seeds, emit, kw)
        else:
            result = sweep_mod.sweep(spec, seeds, on_result=emit, **kw)
    except (ValueError, RuntimeError, OSError) as exc:
        err.print(f"clusterfunk sweep: error: {exc}", markup=False, highlight=False)
        return 2
    summary = result.summary()
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    report = err if args.json else Console()
    _report(report, spec, result, summary)
    return 1 if result.failures else 0


def _with_progress(err: Any, spec: sweep_mod.SweepSpec, seeds: list[int], emit: Any,
                   kw: dict[str, Any]) -> sweep_mod.SweepResult:
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    t0 = time.perf_counter()
    fails = 0
    columns = (
        TextColumn("[bold]sweep[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failures [red]{task.fields[failures]}[/]"),
        TextColumn("{task.fields[rate]} runs/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"{spec.protocol} x{spec.nodes} {spec.duration:g}s",
                                 total=len(seeds), failures=0, rate="-")

        def on_result(line: dict[str, Any]) -> None:
            nonlocal fails
            emit(line)
            if line["verdict"] != "ok":
                fails += 1
            elapsed = time.perf_counter() - t0
            done = progress.tasks[0].completed + 1
            progress.update(task, advance=1, failures=fails,
                            rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-")

        result = sweep_mod.sweep(spec, seeds, on_result=on_result, **kw)
        if result.resumed:
            progress.update(task, advance=result.resumed)
    return result


def _report(console: Any, spec: sweep_mod.SweepSpec, result: sweep_mod.SweepResult,
            summary: dict[str, Any]) -> None:
    from rich.table import Table

    fails = result.failures
    console.print(
        f"sweep: {summary['runs']} runs ({summary['resumed']} resumed), "
        f"{summary['failures']} failures, {summary['runs_per_s']} runs/s, "
        f"wall {summary['wall']} s",
        highlight=False,
    )
    if not fails:
        return
    table = Table(title=f"{len(fails)} failing seeds", show_lines=False)
    table.add_column("seed", justify="right")
    table.add_column("violations", justify="right")
    table.add_column("first violation", overflow="fold")
    for r in fails:
        first = r["violations"][0] if r["violations"] else ""
        table.add_row(str(r["seed"]), str(r.get("violation_count", len(r["violations"]))),
                      first)
    console.print(table)
    console.print("replay (byte for byte; add --trace FILE to keep the trace):",
                  highlight=False)
    for r in fails:
        # soft_wrap: one physical line, so the command can be copied as printed
        console.print(r["replay"], markup=False, highlight=False, soft_wrap=True)
