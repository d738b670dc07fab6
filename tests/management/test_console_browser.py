"""The web console in headless Chromium against three real ``cluster-node`` processes.

The browser loads one node's ``/console`` over loopback; after the page's JavaScript
has polled the management API for a few (virtual) seconds, the DOM must list the three
nodes as alive members with the leader, and the legend must give the shard counts that
``ctl nodes --json`` gives; a screenshot must show the committed map: the cell of every
shard painted in the legend colour of the shard's owner in ``/v1/shard-owners``.
"""

from __future__ import annotations

import html.parser
import io
import re
import signal

import httpx
import pytest
import trio

from clusterfunk.management import console
from clusterfunk.management.api import DiagView, MemberView, NodeView, StatusView
from clusterfunk.management.server import open_management_server
from tests.browser import chromium, chromium_command, needs_chromium
from tests.management.test_console import ConsoleFake
from tests.management.test_process import ctl_json, start_cluster

WINDOW = "--window-size=1280,1100"
BUDGET_MS = 4000  # virtual time: about four polls


@pytest.fixture(scope="module")
def nodes():
    ns = start_cluster()
    yield ns
    for n in ns:
        n.send(signal.SIGINT)
    for n in ns:
        n.stop()


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


@needs_chromium
@pytest.mark.slow
def test_console_shows_the_live_members_and_the_committed_map(nodes, tmp_path):
    from PIL import Image

    target = nodes[1]  # any node serves the same committed map
    url = f"http://{target.management}/console"
    res = chromium(tmp_path, WINDOW, "--dump-dom", url, budget_ms=BUDGET_MS)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = _Dom()
    dom.feed(res.stdout)

    status = ctl_json(target.management, "status")
    api_nodes = ctl_json(target.management, "nodes")
    owners = httpx.get(f"http://{target.management}/v1/shard-owners", timeout=10).json()
    assert owners["map_index"] == status["map_index"] > 0

    assert dom.conn.startswith("live"), dom.conn
    assert dom.fields["node"] == target.id and dom.fields["leader"] == status["leader"]
    assert dom.fields["map index"] == str(status["map_index"])
    # the members: the three nodes, alive
    assert sorted(dom.members) == ["a", "b", "c"]
    assert {m["data-status"] for m in dom.members.values()} == {"alive"}
    # the legend: every node of the map with the count ctl nodes gives
    assert {n: int(li["data-shards"] or -1) for n, li in dom.legend.items()} == {
        n["node"]: n["shards"] for n in api_nodes}
    colors = {n: _rgb(li["data-color"] or "") for n, li in dom.legend.items()}
    assert len(set(colors.values())) == 3  # one colour per node
    c = dom.canvas
    assert c["data-map-index"] == str(status["map_index"])
    assert int(c["data-shards"] or 0) == owners["shards"] == 100
    cols, cell = int(c["data-cols"] or 0), int(c["data-cell"] or 0)
    left, top = int(c["data-left"] or 0), int(c["data-top"] or 0)
    assert cols * cols >= 100 and cell >= 4

    shot = tmp_path / "console.png"
    res = chromium(tmp_path, WINDOW, f"--screenshot={shot}", url, budget_ms=BUDGET_MS)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    # the map did not change between the two page loads
    assert ctl_json(target.management, "status")["map_index"] == status["map_index"]
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
    map 41 holds a and b only."""

    def __init__(self) -> None:
        super().__init__()
        self.diags = 0
        self.before = self.map
        self.after = self.before.update(["a", "b"])[0]

    @property
    def resharded(self) -> bool:
        return self.diags > 2

    def shard_owners(self) -> console.ShardOwnersView:
        if self.resharded:
            return console.owners_view(41, self.after)
        return console.owners_view(40, self.before)

    def status(self) -> StatusView:
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
        cmd = chromium_command(tmp_path, "--dump-dom", s.url + "/console", budget_ms=5000)
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
