"""``clusterfunk simulate``: options, scenario files, summary, exit status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clusterfunk import cli
from clusterfunk.sim import workload as workload_mod
from clusterfunk.sim.nemesis import KINDS, Nemesis, NemesisConfig, parse_kinds
from clusterfunk.sim.simulation import Simulation
from clusterfunk.trace import read_trace


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli.main(["simulate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_ping_simulation_summary_and_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.jsonl"
    rc, out, _ = run_cli(
        capsys,
        "--nodes",
        "4",
        "--duration",
        "20",
        "--seed",
        "3",
        "--crash",
        "n2@5",
        "--restart",
        "n2@8",
        "--trace",
        str(trace),
        "--json",
    )
    assert rc == 0
    summary = json.loads(out)
    assert summary["violations"] == []
    assert summary["workload"]["pongs"] > 0
    recs = read_trace(str(trace))
    assert recs[0] == {
        "t": 0.0,
        "node": "sim",
        "ev": "sim.start",
        "seed": 3,
        "nodes": ["n1", "n2", "n3", "n4"],
    }
    assert {"t": 5.0, "node": "sim", "ev": "sim.crash", "target": "n2"} in recs
    assert {"t": 8.0, "node": "sim", "ev": "sim.restart", "target": "n2"} in recs
    assert recs[-1]["ev"] == "sim.end"
    assert all(list(r)[:3] == ["t", "node", "ev"] for r in recs)
    ts = [r["t"] for r in recs]
    assert ts == sorted(ts)


def test_scenario_file_drives_faults_and_cli_overrides_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    story = tmp_path / "s.toml"
    story.write_text(
        '[simulation]\nprotocol = "ping"\nnodes = 3\nseed = 5\nduration = 30\n'
        '[[events]]\nat = 2\naction = "partition"\ngroups = [["n1"], ["n2", "n3"]]\n'
        '[[events]]\nat = 4\naction = "heal"\n'
        '[[events]]\nat = 5\naction = "oneway"\nfrom = ["n1"]\nto = ["n2"]\n'
        '[[events]]\nat = 6\naction = "skew"\ntarget = "n3"\noffset = 0.5\ndrift = 0.01\n'
        '[[events]]\nat = 7\naction = "link"\nloss = 0.5\n'
        '[[events]]\nat = 8\naction = "pause"\ntarget = "n2"\n'
        '[[events]]\nat = 9\naction = "resume"\ntarget = "n2"\n'
    )
    trace = tmp_path / "t.jsonl"
    rc, out, _ = run_cli(
        capsys, "--scenario", str(story), "--duration", "12", "--trace", str(trace), "--json"
    )
    assert rc == 0
    assert json.loads(out)["duration"] == 12.0
    evs = [(r["t"], r["ev"]) for r in read_trace(str(trace)) if r["node"] == "sim"]
    assert evs == [
        (0.0, "sim.start"),
        (2.0, "sim.partition"),
        (4.0, "sim.heal"),
        (5.0, "sim.partition"),
        (6.0, "sim.skew"),
        (7.0, "sim.link"),
        (8.0, "sim.pause"),
        (9.0, "sim.resume"),
        (12.0, "sim.end"),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crash", "n9@3"], "unknown node"),
        (["--crash", "n1"], "ID@SECONDS"),
        (["--loss", "1.5"], "probability"),
        (["--nodes", "0"], "at least 1"),
        (["--nemesis", "meteor"], "unknown nemesis kind"),
        (["--protocol", "paxos"], "unknown protocol"),
        (["--scenario", "/nonexistent.toml"], "cannot read scenario"),
    ],
)
def test_bad_arguments_get_a_clear_error(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc, _, err = run_cli(capsys, "--duration", "1", *args)
    assert rc == 2
    assert message in err


def test_exit_status_is_nonzero_on_a_violation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Liar:
        def __init__(self, args: Any) -> None:
            self.n = args.nodes

        def setup(self, sim: Simulation) -> None:
            for i in range(1, self.n + 1):
                sim.add_node(f"n{i}", lambda host: None)

        def fault_targets(self, sim: Simulation) -> list[str]:
            return sim.names

        def finish(self, sim: Simulation) -> dict[str, Any]:
            return {"violations": ["two leaders in term 3"]}

    import sys
    import types

    mod = types.ModuleType("cf_test_liar")
    mod.Liar = Liar  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cf_test_liar", mod)
    monkeypatch.setitem(workload_mod.WORKLOADS, "liar", "cf_test_liar:Liar")
    rc, out, _ = run_cli(capsys, "--protocol", "liar", "--duration", "1")
    assert rc == 1
    assert "two leaders in term 3" in out


def test_nemesis_is_seeded_and_covers_every_kind() -> None:
    def faults(seed: int) -> list[tuple[float, str, str]]:
        sim = Simulation(seed)
        for i in range(1, 6):
            sim.add_node(f"n{i}", lambda host: None)
        nem = Nemesis(sim, sim.names, NemesisConfig())
        nem.start(until=2000)
        sim.run_until(2000)
        return nem.faults

    a, b, c = faults(1), faults(1), faults(2)
    assert a == b and a != c
    assert {k for _, k, _ in a} == set(KINDS)
    assert parse_kinds("all") == KINDS
    assert parse_kinds("crash, partition") == ("crash", "partition")


def test_nemesis_faults_are_over_by_the_end_of_the_fault_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.jsonl"
    rc, out, _ = run_cli(
        capsys,
        "--nodes",
        "5",
        "--duration",
        "400",
        "--seed",
        "2",
        "--nemesis",
        "crash,pause,partition",
        "--trace",
        str(trace),
        "--json",
    )
    assert rc == 0
    assert json.loads(out)["faults"]
    recs = [r for r in read_trace(str(trace)) if r["node"] == "sim" and r["ev"] != "sim.end"]
    assert max(r["t"] for r in recs) <= 310.0 + 1e-6  # 400 - min(90, 400 / 4)
    begins = sum(r["ev"] in ("sim.crash", "sim.pause", "sim.partition") for r in recs)
    ends = sum(r["ev"] in ("sim.restart", "sim.resume", "sim.heal") for r in recs)
    assert begins == ends > 5


def test_simulate_help_names_every_workload(capsys) -> None:
    from clusterfunk.cli import main
    from clusterfunk.sim.workload import WORKLOADS

    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in WORKLOADS:
        assert name in text.split("--protocol PROTOCOL workload:")[1][:120], name
