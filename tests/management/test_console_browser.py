"""The web console in headless Chromium.

Against three real ``cluster-node --app demo`` processes on loopback (started by
``clusterfunk.demo.launch``, the demo's own launcher) while a routing client sends
requests: the browser loads one node's ``/console``; after the page's JavaScript has
polled the management API for a few (virtual) seconds, the DOM must list the three
nodes as alive members with the leader, the legend must give the shard counts that
``ctl nodes --json`` gives, and the request counters must lie between the API's
readings before and after, with a non-zero ``ok`` rate; a screenshot must show the
committed map: the cell of every shard painted in the legend colour of the shard's
owner in ``/v1/shard-owners``.

Against fakes in this process: the rates come from successive readings, and an open
page follows a reshard.
"""

from __future__ import annotations

import html.parser
import io
import json
import pathlib
import random
import re
import sys
from typing import Any

import httpx
import pytest
import trio

from clusterfunk.demo import kv
from clusterfunk.demo.launch import open_local_cluster
from clusterfunk.management import console
from clusterfunk.management.api import DiagView, MemberView, NodeView, StatusView
from clusterfunk.management.server import open_management_server
from clusterfunk.routing.trio_client import open_client
from tests.browser import chromium_command, needs_chromium
from tests.management.test_console import ConsoleFake

SHARDS = 100
WINDOW = "--window-size=1280,1100"
BUDGET_MS = 4000  # virtual time: about four polls


class _Dom(html.parser.HTMLParser):
    """What the test reads from the dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.members: dict[str, dict[str, str | None]] = {}
        self.legend: dict[str, dict[str, str | None]] = {}
        self.canvas: dict[str, str | None] = {}
        self.fields: dict[str, str] = {}
        self.conn = ""
        self._field: str | None = None
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._in.append(a.get("id") or a.get("data-field") or "")
        if tag == "tr" and "data-status" in a:
            self.members[a["data-node"] or ""] = a
        elif tag == "li" and "data-color" in a:
            self.legend[a["data-node"] or ""] = a
        elif tag == "canvas" and a.get("id") == "map":
            self.canvas = a
        elif tag == "div" and "data-field" in a:
            self._field = a["data-field"]
        elif tag == "dd" and self._field is not None:
            self.fields[self._field] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._in:
            self._in.pop()
        if tag == "div":
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field is not None and self._field in self.fields:
            self.fields[self._field] += data
        if self._in and self._in[-1] == "conn":
            self.conn += data


def _rgb(color: str) -> tuple[int, int, int]:
    v = int(color.lstrip("#"), 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


async def _traffic(client: Any) -> None:
    """About 50 requests a second (little load: the machine runs the browsers too)."""
    rng = random.Random(7)
    while True:
        await client.finish(rng.randrange(10_000), kv.incr(), 2.0)
        await trio.sleep(0.02)


async def _api(address: str, path: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://{address}{path}")
    assert r.status_code == 200, r.text
    return r.json()


async def _ctl_json(address: str, *argv: str) -> Any:
    res = await trio.run_process(
        [sys.executable, "-m", "clusterfunk", "ctl", "--node", address, *argv, "--json"],
        capture_stdout=True, capture_stderr=True, check=False)
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


async def _browser(tmp: pathlib.Path, *args: str) -> str:
    cmd = chromium_command(tmp, WINDOW, *args, budget_ms=BUDGET_MS)
    res = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    return res.stdout.decode()


def _counters(dom_text: str) -> dict[str, tuple[int, str]]:
    rows = re.findall(r'<tr data-counter="(\w+)"><td>\w+</td><td class="num">(\d+)</td>'
                      r'<td class="num">([^<]+)</td></tr>', dom_text)
    return {name: (int(total), rate) for name, total, rate in rows}


@needs_chromium
@pytest.mark.slow
async def test_console_of_a_demo_node_shows_members_map_and_request_rates(tmp_path):
    from PIL import Image

    async with open_local_cluster(3, shards=SHARDS, workdir=tmp_path / "nodes") as lc:
        nodes = lc.live()
        target = nodes[1]  # any node serves the same committed map
        url = f"http://{target.management}/console"
        seeds = [n.app_address for n in nodes]
        async with open_client(seeds, client_id="console-test") as client, \
                trio.open_nursery() as nursery:
            nursery.start_soon(_traffic, client)
            with trio.fail_after(15):  # until the target has answered some requests
                while not (await _api(target.management, "/v1/requests"))["counts"].get("ok"):
                    await trio.sleep(0.1)
            before = (await _api(target.management, "/v1/requests"))["counts"]
            status = await _api(target.management, "/v1/status")  # what ctl status shows
            shot = tmp_path / "console.png"
            got: dict[str, Any] = {}

            async def run(key: str, fn: Any, *args: Any) -> None:
                got[key] = await fn(*args)

            async with trio.open_nursery() as inner:  # one after the other takes longer
                inner.start_soon(run, "dom", _browser, tmp_path / "dom", "--dump-dom", url)
                inner.start_soon(run, "shot", _browser, tmp_path / "shot",
                                 f"--screenshot={shot}", url)
                inner.start_soon(run, "nodes", _ctl_json, target.management, "nodes")
            after = (await _api(target.management, "/v1/requests"))["counts"]
            owners = await _api(target.management, "/v1/shard-owners")
            # the map did not change while the pages were open
            assert (await _api(target.management, "/v1/status"))["map_index"] == (
                status["map_index"])
            nursery.cancel_scope.cancel()
    dom_text, api_nodes = got["dom"], got["nodes"]
    assert owners["map_index"] == status["map_index"] > 0
    dom = _Dom()
    dom.feed(dom_text)
    assert dom.conn.startswith("live"), dom.conn
    assert dom.fields["node"] == target.id and dom.fields["leader"] == status["leader"]
    assert dom.fields["map index"] == str(status["map_index"])
    # the members: the three nodes, alive
    ids = sorted(n.id for n in nodes)
    assert sorted(dom.members) == ids
    assert {m["data-status"] for m in dom.members.values()} == {"alive"}
    # the legend: every node of the map with the count ctl nodes gives
    assert {n: int(li["data-shards"] or -1) for n, li in dom.legend.items()} == {
        n["node"]: n["shards"] for n in api_nodes}
    colors = {n: _rgb(li["data-color"] or "") for n, li in dom.legend.items()}
    assert len(set(colors.values())) == 3  # one colour per node
    # the request counters: live readings of this node, with a rate of answered requests
    counters = _counters(dom_text)
    assert {"ok", "moved", "busy", "error"} <= set(counters)
    for name, (total, _rate) in counters.items():
        assert before.get(name, 0) <= total <= after.get(name, 0), name
    assert counters["ok"][0] > before["ok"] and float(counters["ok"][1]) > 0
    # the picture: every shard's cell in its owner's colour
    c = dom.canvas
    assert c["data-map-index"] == str(status["map_index"])
    assert int(c["data-shards"] or 0) == owners["shards"] == SHARDS
    cols, cell = int(c["data-cols"] or 0), int(c["data-cell"] or 0)
    left, top = int(c["data-left"] or 0), int(c["data-top"] or 0)
    assert cols * cols >= SHARDS and cell >= 4
    img = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    wrong = []
    for shard, w in enumerate(owners["owners"]):
        owner = owners["nodes"][w]
        x = left + (shard % cols) * cell + cell // 2
        y = top + (shard // cols) * cell + cell // 2
        px = img.getpixel((x, y))
        assert isinstance(px, tuple)
        if max(abs(p - q) for p, q in zip(px, colors[owner], strict=True)) > 3:
            wrong.append((shard, owner, px))
    assert wrong == [], f"{len(wrong)} shards painted wrong, e.g. {wrong[:5]}"


class _CountingNode(ConsoleFake):
    """Each /v1/requests reading: 10 more ``ok`` and 2 more ``moved`` per second of
    uptime (the uptime advances 1 s per reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def request_stats(self) -> dict[str, int] | None:
        self.readings += 1
        return {"ok": 10 * self.readings, "moved": 2 * self.readings, "busy": 0, "error": 0}

    def status(self) -> StatusView:
        return {**super().status(), "uptime": float(self.readings)}


@needs_chromium
async def test_console_computes_request_rates_from_successive_readings(tmp_path):
    node = _CountingNode()
    async with open_management_server(node, "127.0.0.1:0", token=None) as s:
        cmd = chromium_command(tmp_path, "--dump-dom", s.url + "/console", budget_ms=3000)
        res = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                     check=False)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert node.readings >= 2
    rows = re.findall(r'<tr data-counter="(\w+)"><td>\w+</td><td class="num">(\d+)</td>'
                      r'<td class="num">([^<]+)</td></tr>', res.stdout.decode())
    got = {name: (int(total), rate) for name, total, rate in rows}
    # the page shows its last complete reading k (a later one may still have been in
    # flight when the budget ran out); the rates come from readings k-1 and k
    k = got["ok"][0] // 10
    assert 2 <= k <= node.readings
    assert got == {"ok": (10 * k, "10"), "moved": (2 * k, "2.0"), "busy": (0, "0.0"),
                   "error": (0, "0.0")}
    assert 'data-map-index="40" data-shards="12"' in res.stdout.decode()


class _ReshardingNode(ConsoleFake):
    """Three nodes and map 40 for the first two /v1/diag readings; then c is dead and
    map 41 holds a and b only; the 5th and 6th readings of the status fail (500)."""

    def __init__(self) -> None:
        super().__init__()
        self.diags = 0
        self.before = self.map
        self.after = self.before.update(["a", "b"])[0]
        self.status_reads = 0

    @property
    def resharded(self) -> bool:
        return self.diags > 2

    def shard_owners(self) -> console.ShardOwnersView:
        if self.resharded:
            return console.owners_view(41, self.after)
        return console.owners_view(40, self.before)

    def status(self) -> StatusView:
        self.status_reads += 1
        if self.status_reads in (5, 6):
            raise RuntimeError("status unavailable")
        st = super().status()
        if self.resharded:
            return {**st, "map_index": 41, "nodes": ["a", "b"]}
        return st

    def nodes(self) -> list[NodeView]:
        m = self.after if self.resharded else self.before
        counts = m.counts()
        return [NodeView(node=n, worker_id=m.worker_ids()[n], shards=counts[n],
                         weight=float(counts[n]), share=counts[n] / 12) for n in m.nodes]

    def members(self) -> list[MemberView]:
        out = super().members()[:3]
        out[2] = {**out[2], "status": "dead" if self.resharded else "alive"}
        return out

    def diag(self) -> DiagView:
        self.diags += 1
        d = super().diag()
        if self.resharded:
            d["last_reshard"] = {"index": 41, "term": 7, "leader": "a", "nodes": ["a", "b"],
                                 "moved": 4, "digest": "cd", "why": "removed c"}
        return d


@needs_chromium
async def test_console_follows_a_reshard_while_open(tmp_path):
    node = _ReshardingNode()
    async with open_management_server(node, "127.0.0.1:0", token=None) as s:
        cmd = chromium_command(tmp_path, "--dump-dom", s.url + "/console", budget_ms=7000)
        res = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                     check=False)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert node.resharded
    text = res.stdout.decode()
    dom = _Dom()
    dom.feed(text)
    assert dom.canvas["data-map-index"] == "41" and dom.canvas["data-shards"] == "12"
    assert {n: int(li["data-shards"] or -1) for n, li in dom.legend.items()} == (
        node.after.counts())
    assert {n: m["data-status"] for n, m in dom.members.items()} == {
        "a": "alive", "b": "alive", "c": "dead"}
    # both maps in the reshard history, newest first; 41 was seen by the open page
    assert re.findall(r'<tr data-index="(\d+)">', text) == ["41", "40"]
    assert "removed c" in text and "before this page" in text
    # failed readings (500) were shown and the page went on polling by itself
    assert node.status_reads > 8
    assert dom.conn.startswith("live") and "failed reading" in dom.conn, dom.conn
