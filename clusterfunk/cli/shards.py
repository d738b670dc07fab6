"""``clusterfunk shards``: build a shard map, print its balance, optionally draw it.

The main CLI registers the subcommand with ``add_parser(subparsers)``; the handler is
set with ``parser.set_defaults(func=handler)`` and returns the exit status. It can also
run on its own: ``python -m clusterfunk.cli.shards --shards 1000 --nodes 5``.

Examples::

    clusterfunk shards --shards 10000 --nodes 50
    clusterfunk shards --weights random --seed 3 --join 2 --leave node-007 --image map.png
    clusterfunk shards --weights weights.txt --nodes 8 --json

``--weights FILE`` reads one positive number per line (blank lines and ``#`` comments
ignored); the number of lines is the number of shards. Node ids are ``node-000``,
``node-001``, ...; ``--join N`` adds N new nodes after the initial map, ``--leave ID``
(repeatable) removes nodes one at a time, and the moves of every change are reported.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusterfunk.sharding.shardmap import ShardMap
from clusterfunk.sharding.stats import longest_run

__all__ = ["add_parser", "build_history", "draw_png", "handler", "main"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``shards`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "shards",
        help="show how shards are spread over nodes",
        description="Build a weighted shard map, print per-node shards, weight and share, "
        "and optionally draw which node owns each shard as a PNG.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=handler)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=int, default=10_000, help="number of shards")
    parser.add_argument("--nodes", type=int, default=50, help="initial number of nodes")
    parser.add_argument(
        "--weights",
        default="uniform",
        help="'uniform' (all 1), 'random' (integers 1..10) or a file, one weight a line",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for --weights random")
    parser.add_argument("--join", type=int, default=0, metavar="N", help="then add N nodes")
    parser.add_argument(
        "--leave", action="append", default=[], metavar="ID", help="then remove node ID"
    )
    parser.add_argument("--image", type=Path, metavar="PNG", help="draw the final map")
    parser.add_argument("--cell", type=int, default=0, help="cell size in pixels (0: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _weights(spec: str, n: int, seed: int) -> list[float] | list[int] | int:
    if spec == "uniform":
        return n
    if spec == "random":
        rng = random.Random(seed)
        return [rng.randint(1, 10) for _ in range(n)]
    values: list[float] = []
    for lineno, line in enumerate(Path(spec).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            values.append(int(text))
        except ValueError:
            try:
                values.append(float(text))
            except ValueError:
                raise ValueError(f"{spec}:{lineno}: not a number: {text!r}") from None
    return values


def build_history(
    weights: Sequence[float] | int, n_nodes: int, join: int, leave: Sequence[str]
) -> tuple[ShardMap, list[dict[str, Any]]]:
    """Build the initial map, then apply the joins and leaves; return map and changes."""
    nodes = [f"node-{i:03d}" for i in range(n_nodes)]
    m, report = ShardMap(weights).update(nodes)
    changes = [{"change": f"init {n_nodes} nodes", "moved": report.moved}]
    current = list(nodes)
    for i in range(join):
        new = f"node-{n_nodes + i:03d}"
        current.append(new)
        m, report = m.update(current)
        changes.append({"change": f"join {new}", "moved": report.moved})
    for node in leave:
        if node not in current:
            raise ValueError(f"--leave {node}: no such node (nodes are {current[0]}...)")
        current.remove(node)
        m, report = m.update(current)
        changes.append({"change": f"leave {node}", "moved": report.moved})
    return m, changes


def summary(m: ShardMap) -> list[dict[str, Any]]:
    """One row per node: worker id, shard count, weight, share of total weight (%)."""
    loads = m.loads()
    total = float(m.total_weight)
    return [
        {
            "node": node,
            "worker_id": m.worker_id(node),
            "shards": len(m.shards_of(node)),
            "weight": loads[node],
            "share_pct": round(100.0 * loads[node] / total, 3),
        }
        for node in m.nodes
    ]


def _palette(k: int) -> list[tuple[int, int, int]]:
    """``k`` distinct colours: hues spaced by the golden angle, alternating lightness."""
    import colorsys

    colours = []
    for i in range(k):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.45 if i % 2 else 0.62
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def draw_png(m: ShardMap, path: Path, cell: int = 0) -> tuple[int, int]:
    """Draw shard ownership as a grid (shard 0 top left, row by row); return the size.

    One colour per node, legend on the right. Needs Pillow (``pip install pillow`` or
    ``clusterfunk[image]``); raises ``RuntimeError`` with that hint if it is missing.
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise RuntimeError(
            "drawing needs Pillow: pip install pillow (or clusterfunk[image])"
        ) from None
    n = m.n_shards
    cols = max(1, int(n**0.5 + 0.999))
    rows = (n + cols - 1) // cols
    if cell <= 0:
        cell = max(1, min(12, 800 // cols))
    colours = _palette(len(m.nodes))
    index = {node: i for i, node in enumerate(m.nodes)}
    grid = Image.new("RGB", (cols, rows), (255, 255, 255))
    pixels = [(255, 255, 255)] * (rows * cols)
    for s, owner in enumerate(m.owners()):
        if owner is not None:
            pixels[s] = colours[index[owner]]
    grid.putdata(pixels)
    grid = grid.resize((cols * cell, rows * cell), Image.Resampling.NEAREST)
    line = 12
    legend_rows = min(len(m.nodes), (rows * cell) // line) if m.nodes else 0
    legend_w = 150 if legend_rows else 0
    height = max(rows * cell, legend_rows * line)
    img = Image.new("RGB", (cols * cell + legend_w, height), (255, 255, 255))
    img.paste(grid, (0, 0))
    draw = ImageDraw.Draw(img)
    loads = m.loads()
    for i, node in enumerate(m.nodes[:legend_rows]):
        x, y = cols * cell + 6, i * line
        draw.rectangle((x, y + 2, x + 8, y + 10), fill=colours[i])
        draw.text((x + 12, y), f"{node} {loads[node]:g}", fill=(0, 0, 0))
    img.save(path, format="PNG")
    return img.size


def handler(args: argparse.Namespace) -> int:
    """Run the ``shards`` subcommand; return the exit status."""
    try:
        if args.shards <= 0 or args.nodes < 0 or args.join < 0:
            raise ValueError("--shards must be positive, --nodes and --join not negative")
        weights = _weights(args.weights, args.shards, args.seed)
        m, changes = build_history(weights, args.nodes, args.join, args.leave)
        image = None
        if args.image is not None:
            image = draw_png(m, args.image, args.cell)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"clusterfunk shards: error: {exc}", file=sys.stderr)
        return 2
    rows = summary(m)
    result: dict[str, Any] = {
        "shards": m.n_shards,
        "total_weight": m.total_weight,
        "max_weight": m.max_weight,
        "nodes": rows,
        "changes": changes,
        "longest_run": longest_run(m.owners()),
    }
    if image is not None:
        result["image"] = str(args.image)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{m.n_shards} shards, total weight {m.total_weight:g}, {len(rows)} nodes")
    print(f"{'node':<20} {'worker':>6} {'shards':>7} {'weight':>10} {'share %':>8}")
    for r in rows:
        print(
            f"{r['node']:<20} {r['worker_id']:>6} {r['shards']:>7} "
            f"{r['weight']:>10g} {r['share_pct']:>8.3f}"
        )
    if rows:
        fair = float(m.total_weight) / len(rows)
        dev = max(abs(r["weight"] - fair) for r in rows)
        print(
            f"fair share {fair:g}; max deviation {dev:g} (bound: max shard weight "
            f"{m.max_weight:g}); longest run of consecutive shards {result['longest_run']}"
        )
    for c in changes:
        print(f"{c['change']}: {c['moved']} shards moved")
    if image is not None:
        print(f"wrote {args.image} ({image[0]}x{image[1]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m clusterfunk.cli.shards``)."""
    parser = argparse.ArgumentParser(prog="clusterfunk-shards")
    _add_arguments(parser)
    return handler(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
