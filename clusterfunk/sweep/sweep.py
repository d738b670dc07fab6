"""``clusterfunk sweep``: run one simulation per seed, in parallel, and report.

Every seed is run in-process by a worker (a local process pool, or a Dask
distributed cluster) through :func:`clusterfunk.sim.runner.run_one`, from the very
``clusterfunk simulate`` argument list that is printed as its replay command: what
the sweep ran is, by construction, what the replay runs (and the result carries the
sha256 of the trace that ``simulate --trace FILE`` writes, so a replay can be
checked byte for byte).

Results are JSON Lines, one object per seed::

    {"seed": 7, "options": {...}, "verdict": "fail", "violations": [...],
     "violation_count": 3, "wall": 1.23, "trace_sha256": "...",
     "replay": "clusterfunk simulate --protocol raft ... --seed 7"}
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from clusterfunk import mutants as mutants_mod

#: violations kept per result line (the count is always there)
MAX_VIOLATIONS = 20


def parse_seeds(text: str) -> list[int]:
    """``"1-200"`` -> 1..200; ``"7"`` -> [7]; ``"1-3,10-12"`` -> both ranges."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition("-")
        try:
            lo = int(a)
            hi = int(b) if sep else lo
        except ValueError:
            raise ValueError(f"--seeds takes A-B (e.g. 1-200), not {text!r}") from None
        if hi < lo:
            raise ValueError(f"--seeds: empty range {part!r}")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ValueError("--seeds: no seed given")
    return list(dict.fromkeys(seeds))


def _num(x: float) -> str:
    """A number as an option value that parses back to the same float."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@attrs.frozen
class SweepSpec:
    """What every run of a sweep shares; only the seed differs."""

    protocol: str = "raft"
    nodes: int = 5
    duration: float = 60.0
    nemesis: str = "all"
    mutant: str | None = None
    #: more ``simulate`` options, as ``("--latency", "20", ...)`` (sweep ``--set``)
    extra: tuple[str, ...] = ()

    def argv(self, seed: int) -> list[str]:
        """The ``clusterfunk simulate`` arguments of one seed (the replay command)."""
        out = [
            "simulate",
            "--protocol", self.protocol,
            "--nodes", str(self.nodes),
            "--duration", _num(self.duration),
            "--seed", str(seed),
        ]
        if self.nemesis:
            out += ["--nemesis", self.nemesis]
        if self.mutant:
            out += ["--mutant", self.mutant]
        return out + list(self.extra)

    def options(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "nodes": self.nodes,
            "duration": self.duration,
            "nemesis": self.nemesis,
            "mutant": self.mutant,
            **({"extra": list(self.extra)} if self.extra else {}),
        }


def parse_set(items: list[str] | None) -> tuple[str, ...]:
    """``["latency=20", "op-rate=50"]`` -> ``("--latency", "20", "--op-rate", "50")``;
    ``"trace-net"`` (no value) -> ``("--trace-net",)``."""
    out: list[str] = []
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not key or key in ("protocol", "nodes", "duration", "seed", "nemesis", "mutant",
                              "trace", "scenario", "json", "progress"):
            raise ValueError(f"--set {item!r}: not an extra simulate option")
        out.append("--" + key)
        if sep:
            out.append(value.strip())
    return tuple(out)


def replay_command(argv: list[str]) -> str:
    return "clusterfunk " + shlex.join(argv)


_PARSER: argparse.ArgumentParser | None = None


def simulate_parser() -> argparse.ArgumentParser:
    """The ``simulate`` option parser (built once per process)."""
    global _PARSER
    if _PARSER is None:
        from clusterfunk.sim import runner

        p = argparse.ArgumentParser(prog="clusterfunk simulate")
        runner.add_arguments(p)
        _PARSER = p
    return _PARSER


def resolve_argv(argv: list[str]) -> argparse.Namespace:
    """Resolved simulate options of a ``simulate ...`` argument list."""
    from clusterfunk.sim import runner

    if argv and argv[0] == "simulate":
        argv = argv[1:]
    return runner.resolve_options(simulate_parser().parse_args(argv))


def run_seed(argv: list[str]) -> dict[str, Any]:
    """Run one simulation (in this process) from its ``simulate`` arguments; return
    the result line. Top-level so process pools and Dask workers can call it."""
    from clusterfunk.sim import runner

    t0 = time.perf_counter()
    opts = resolve_argv(argv)
    try:
        outcome = runner.run_one(opts)
    except Exception as exc:  # a run that crashes fails; the sweep goes on
        return {
            "seed": opts.seed,
            "verdict": "fail",
            "violations": [f"exception: {type(exc).__name__}: {exc}"],
            "violation_count": 1,
            "faults": None,
            "wall": round(time.perf_counter() - t0, 3),
            "trace_sha256": None,
            "replay": replay_command(argv),
        }
    wall = time.perf_counter() - t0
    return {
        "seed": opts.seed,
        "verdict": outcome.verdict,
        "violations": outcome.violations[:MAX_VIOLATIONS],
        "violation_count": len(outcome.violations),
        "faults": len(outcome.schedule),
        "wall": round(wall, 3),
        "trace_sha256": outcome.trace_sha256,
        "replay": replay_command(argv),
    }


def _result_line(spec: SweepSpec, res: dict[str, Any]) -> dict[str, Any]:
    return {"seed": res["seed"], "options": spec.options(), **{
        k: v for k, v in res.items() if k != "seed"}}


def run_local(argvs: list[list[str]], jobs: int) -> Iterator[dict[str, Any]]:
    """Run every argument list; yield results as they complete (jobs=1: in order,
    in this process)."""
    if jobs <= 1:
        for argv in argvs:
            yield run_seed(argv)
        return
    ctx = multiprocessing.get_context("fork" if "fork" in
                                      multiprocessing.get_all_start_methods() else "spawn")
    window = jobs * 4
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        todo = iter(argvs)
        pending: set[cf.Future[dict[str, Any]]] = set()
        for argv in todo:
            pending.add(pool.submit(run_seed, argv))
            if len(pending) >= window:
                break
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                nxt = next(todo, None)
                if nxt is not None:
                    pending.add(pool.submit(run_seed, nxt))
                yield fut.result()


def run_dask(argvs: list[list[str]], address: Any) -> Iterator[dict[str, Any]]:
    """Run every argument list on a Dask distributed cluster (``address``: the
    scheduler's ``tcp://host:port``, or a ``distributed.Client``)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError(
            "--dask needs Dask distributed: pip install 'clusterfunk[sweep]'"
        ) from None
    own = not isinstance(address, Client)
    client = Client(address) if own else address
    try:
        futures = [client.submit(run_seed, argv, pure=False) for argv in argvs]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        if own:
            client.close()


def read_results(path: str) -> list[dict[str, Any]]:
    """The result lines of a sweep file (lines that do not parse are skipped)."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "seed" in obj and "verdict" in obj:
                    out.append(obj)
    except FileNotFoundError:
        pass
    return out


@attrs.define
class SweepResult:
    results: list[dict[str, Any]]  # this run's and resumed ones, by seed
    runs: int  # simulations run now
    resumed: int
    wall: float

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["verdict"] != "ok"]

    def summary(self) -> dict[str, Any]:
        return {
            "summary": True,
            "runs": self.runs,
            "resumed": self.resumed,
            "failures": len(self.failures),
            "failed_seeds": [r["seed"] for r in self.failures],
            "runs_per_s": round(self.runs / self.wall, 2) if self.wall > 0 else None,
            "wall": round(self.wall, 3),
        }


def sweep(
    spec: SweepSpec,
    seeds: Iterable[int],
    *,
    jobs: int = 1,
    dask: Any = None,
    out: str | None = None,
    resume: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run ``spec`` over ``seeds``; every result line is appended to ``out`` as soon
    as it is known (and passed to ``on_result``). With ``resume``, seeds already in
    ``out`` with the same options are not run again."""
    mutants_mod.parse(spec.mutant, spec.protocol)  # fail before starting anything
    seeds = list(seeds)
    done: dict[int, dict[str, Any]] = {}
    if resume and out:
        wanted = set(seeds)
        for r in read_results(out):
            if r.get("options") == spec.options() and r["seed"] in wanted:
                done[r["seed"]] = r
    todo = [s for s in seeds if s not in done]
    argvs = [spec.argv(s) for s in todo]
    results: dict[int, dict[str, Any]] = dict(done)
    t0 = time.perf_counter()
    sink = open(out, "a" if resume else "w", encoding="utf-8") if out else None  # noqa: SIM115
    try:
        stream = run_dask(argvs, dask) if dask is not None else run_local(argvs, jobs)
        for res in stream:
            line = _result_line(spec, res)
            results[line["seed"]] = line
            if sink is not None:
                sink.write(json.dumps(line) + "\n")
                sink.flush()
            if on_result is not None:
                on_result(line)
    finally:
        if sink is not None:
            sink.close()
    wall = time.perf_counter() - t0
    ordered = [results[s] for s in seeds if s in results]
    return SweepResult(ordered, len(todo), len(done), wall)
