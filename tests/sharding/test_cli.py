"""The ``shards`` subcommand: registration, output, image, errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from clusterfunk.cli import shards as cli


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clusterfunk")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["shards", *argv])


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(
        ["--shards", "100", "--nodes", "3", "--join", "1", "--leave", "node-001", "--json"]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["node"]: r for r in out["nodes"]}
    assert sorted(rows) == ["node-000", "node-002", "node-003"]
    assert sum(r["shards"] for r in rows.values()) == 100
    assert abs(sum(r["share_pct"] for r in rows.values()) - 100) < 0.01
    assert rows["node-003"]["worker_id"] == 3
    assert [c["moved"] for c in out["changes"]] == [100, 25, 25]


def test_table_weights_file_and_image(tmp_path: Path, capsys) -> None:
    wfile = tmp_path / "w.txt"
    wfile.write_text("# weights\n1\n2.5\n\n3\n" * 10)
    png = tmp_path / "map.png"
    args = parse(["--weights", str(wfile), "--nodes", "4", "--image", str(png)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "30 shards, total weight 65" in text and "node-003" in text
    from PIL import Image

    with Image.open(png) as img:
        assert img.size[0] > 0
        colours = {img.getpixel((x, 0)) for x in range(0, 6 * 12, 12)}
        assert len(colours) == 4  # first row: 6 cells over 4 nodes, all 4 colours


@pytest.mark.parametrize(
    "argv",
    [
        ["--shards", "0"],
        ["--weights", "/nonexistent/file"],
        ["--leave", "nobody"],
        ["--weights", "random", "--shards", "-3"],
    ],
)
def test_errors_exit_2(argv: list[str], capsys) -> None:
    args = parse(argv)
    assert args.func(args) == 2
    assert "error" in capsys.readouterr().err


def test_missing_pillow(monkeypatch, tmp_path: Path) -> None:
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("PIL"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    m, _ = cli.build_history(10, 2, 0, [])
    with pytest.raises(RuntimeError, match="Pillow"):
        cli.draw_png(m, tmp_path / "x.png")
