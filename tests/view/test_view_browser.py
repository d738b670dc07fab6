"""``clusterfunk view`` in headless Chromium (Debian's ``chromium``).

A 10-node cluster run with a crash, a restart and ``--trace-net`` (message
arrows), hand-edited to hold two violations, becomes one HTML page; Chromium
loads it, the DOM after the page's JavaScript ran must show the lanes and the
violation list, and a screenshot must show the lanes drawn.
"""

from __future__ import annotations

import collections
import html.parser
import pathlib
import re

import pytest

from clusterfunk.audit import audit, read
from tests.audit.helpers import dump, load, simulate
from tests.browser import chromium, needs_chromium

from .helpers import view_cli

LEADER = (0xE0, 0x52, 0x3F)
CRASHED = (0x3B, 0x3F, 0x48)
VIOLATION = (0xFF, 0x00, 0x00)
LANE_COLORS = {(0xCF, 0xE3, 0xF7), (0xDE, 0xDF, 0xE3), LEADER}  # follower, non-voter, leader


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path, int]:
    d = tmp_path_factory.mktemp("view")
    rc, path, summary = simulate(
        d, "cluster", 10, 7, 40, "--crash", "n5@12", "--restart", "n5@20", "--trace-net",
    )
    assert rc == 0, summary
    recs = load(path)
    # Two hand-made violations: a second leader in term 1, a diverging applied entry.
    i, lead = next((i, r) for i, r in enumerate(recs)
                   if r["ev"] == "raft.role" and r["role"] == "leader")
    recs.insert(i + 1, {"t": lead["t"], "node": "n9", "ev": "raft.role",
                        "term": lead["term"], "role": "leader"})
    applies = [r for r in recs if r["ev"] == "raft.apply" and r["index"] == 3]
    applies[-1]["digest"] = "d" * 32
    edited = dump(d / "edited.jsonl", recs)
    out = d / "run.html"
    rc, text = view_cli(str(edited), "-o", str(out))
    assert rc == 0, text
    report = audit(read([str(edited)]))
    assert report.violations == 2
    return d, out, report.violations


class _Dom(html.parser.HTMLParser):
    """Collects what the test reads from the dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.lanes: list[str] = []
        self.stack: list[str] = []
        self.in_violations = False
        self.violation_items: list[str] = []
        self.error_text = ""
        self._in_error = False
        self._li: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "div" and "lane" in (a.get("class") or "").split() and a.get("data-node"):
            self.lanes.append(a["data-node"] or "")
        if tag == "ol" and a.get("id") == "violations":
            self.in_violations = True
        if tag == "li" and self.in_violations:
            self._li = []
        if tag == "div" and a.get("id") == "error":
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self._li is not None:
            self.violation_items.append("".join(self._li))
            self._li = None
        if tag == "ol":
            self.in_violations = False
        if tag == "div":
            self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._li is not None:
            self._li.append(data)
        if self._in_error:
            self.error_text += data


def test_page_is_one_self_contained_file(page) -> None:
    _, out, _ = page
    text = out.read_text()
    assert "<link" not in text and not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "url(" not in text and "@import" not in text and "fetch(" not in text
    assert len(text.encode()) < 15_000_000


@needs_chromium
def test_dom_shows_lanes_and_violations(page) -> None:
    d, out, violations = page
    res = chromium(d, "--dump-dom", out.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    dom = _Dom()
    dom.feed(res.stdout)
    assert dom.error_text == "" and "data-error" not in dom.body, dom.error_text
    assert dom.body.get("data-rendered") == "1", res.stdout[:500]
    assert dom.body.get("data-lanes") == "10"
    assert dom.lanes == [f"n{i}" for i in range(1, 11)]
    assert dom.body.get("data-violations") == str(violations)
    assert len(dom.violation_items) == violations
    joined = "\n".join(dom.violation_items)
    assert "election safety" in joined and "n9 and " in joined and "both leaders of term" in joined
    assert "state machine safety" in joined and "applied index 3" in joined


@needs_chromium
def test_screenshot_shows_the_lanes(page) -> None:
    from PIL import Image

    d, out, _ = page
    shot = d / "shot.png"
    res = chromium(d, "--window-size=1400,900", f"--screenshot={shot}", out.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1400, 900)
    raw = img.tobytes()
    counts = collections.Counter(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
    assert len(counts) > 50, "blank page"
    h = img.size[1]
    px = img.load()
    # The lane area: rows whose pixels, sampled across the diagram, show role colors.
    lane_rows = [y for y in range(h)
                 if sum(1 for x in range(170, 900, 7) if px[x, y] in LANE_COLORS) > 40]
    assert len(lane_rows) >= 10 * 8, len(lane_rows)  # ten lanes, several pixels each
    # The leader lane (red band), the crash span of n5 and the violation markers.
    assert counts[LEADER] > 2000
    assert counts[CRASHED] > 100
    assert counts[VIOLATION] > 20


@needs_chromium
@pytest.mark.slow
def test_fifty_lanes(tmp_path) -> None:
    """A 50-node cluster run (the main job's size, shorter) renders 50 lanes. The
    page records its own render time in ``data-render-ms`` (reported, not asserted:
    speed is measured outside the tests, see docs/audit.md)."""
    rc, path, summary = simulate(tmp_path, "cluster", 50, 1, 40, "--loss", "0.01")
    assert rc == 0, summary
    out = tmp_path / "run.html"
    rc, text = view_cli(str(path), "-o", str(out))
    assert rc == 0, text
    res = chromium(tmp_path, "--window-size=1600,1000", "--dump-dom", out.as_uri())
    dom = _Dom()
    dom.feed(res.stdout)
    assert dom.error_text == "" and dom.body.get("data-rendered") == "1", res.stderr[-2000:]
    assert dom.lanes == [f"n{i}" for i in range(1, 51)]
    assert dom.body.get("data-violations") == "0"
