"""The web console's routes against a fake node: the page (content type, security
headers, self-contained), ``/`` for browsers vs scripts, ``/v1/shard-owners`` and
``/v1/requests``, and mutual TLS refusing the page to a client without a certificate.
The page itself runs in a browser in test_console_browser.py."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest
import trustme

from clusterfunk.management import console
from clusterfunk.management.adapter import ClusterManaged
from clusterfunk.management.server import open_management_server
from clusterfunk.sharding.shardmap import ShardMap
from tests.management.conftest import TOKEN
from tests.management.fake import FakeNode
from tests.management.test_server import _tls

AUTH = {"authorization": f"Bearer {TOKEN}"}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class ConsoleFake(FakeNode):
    """A fake that also has the console's sources (a real map of 12 shards)."""

    def __init__(self) -> None:
        super().__init__()
        self.map = ShardMap.build(12, ["a", "b", "c"])
        self.counts: dict[str, int] | None = {"ok": 5, "moved": 1, "busy": 0, "error": 2,
                                               "forwarded": 3}

    def shard_owners(self) -> console.ShardOwnersView:
        return console.owners_view(40, self.map)

    def request_stats(self) -> dict[str, int] | None:
        return self.counts


async def _get(url: str, **kw):
    async with httpx.AsyncClient() as c:
        return await c.get(url, **kw)


async def test_console_serves_one_self_contained_page(server):
    r = await _get(server.url + "/console")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.text
    assert '<canvas id="map"' in page and 'id="members"' in page
    # nothing is loaded from anywhere: no src/href attributes, no URL with a host
    assert not re.search(r"\b(src|href)\s*=", page)
    assert not re.search(r"https?://|//[a-z0-9]", page, flags=re.I)
    # the CSP allows exactly the page's own inline script and style, and this origin
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        assert len(bodies) == 1
        h = base64.b64encode(hashlib.sha256(bodies[0].encode()).digest()).decode()
        assert f"{directive} 'sha256-{h}'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"


async def test_root_serves_the_page_to_browsers_and_the_index_to_scripts(server):
    r = await _get(server.url + "/", headers={"accept": BROWSER_ACCEPT})
    assert r.headers["content-type"].startswith("text/html")
    assert '<canvas id="map"' in r.text
    r = await _get(server.url + "/")  # httpx: Accept */*
    assert r.headers["content-type"] == "application/json"
    read = r.json()["read"]
    assert {"/console", "/v1/requests", "/v1/shard-owners"} <= set(read)


async def test_console_is_get_only(server, fake):
    async with httpx.AsyncClient() as c:
        r = await c.post(server.url + "/console", content=b"{}")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert fake.calls == []


async def test_a_node_without_console_sources_answers_empty_views(server):
    r = await _get(server.url + "/v1/shard-owners")
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"map_index": 0, "shards": 0, "nodes": [], "worker_ids": [],
                        "owners": []}
    r = await _get(server.url + "/v1/requests")
    assert r.json() == {"node": "a", "uptime": 12.5, "available": False, "counts": {}}


async def test_shard_owners_and_request_counts_of_a_node_that_has_them():
    node = ConsoleFake()
    async with open_management_server(node, "127.0.0.1:0", token=None) as s:
        o = (await _get(s.url + "/v1/shard-owners")).json()
        assert (o["map_index"], o["shards"], o["nodes"]) == (40, 12, ["a", "b", "c"])
        assert o["worker_ids"] == [node.map.worker_ids()[n] for n in o["nodes"]]
        assert [o["nodes"][i] for i in o["owners"]] == list(node.map.owners())
        r = (await _get(s.url + "/v1/requests")).json()
        assert r == {"node": "a", "uptime": 12.5, "available": True,
                     "counts": {"busy": 0, "error": 2, "forwarded": 3, "moved": 1, "ok": 5}}
        node.counts = None
        assert (await _get(s.url + "/v1/requests")).json()["available"] is False


def test_owners_view_marks_unowned_shards():
    v = console.owners_view(3, ShardMap(5))  # a map without nodes
    assert v == {"map_index": 3, "shards": 5, "nodes": [], "worker_ids": [],
                 "owners": [-1] * 5}
    assert console.owners_view(3, None) == console.empty_owners()


class _StubCluster:
    """Just what ClusterManaged's console reads touch."""

    class _Committed:
        index = 9

    class _Coord:
        committed = None

    def __init__(self, with_stats: bool) -> None:
        self.coord = self._Coord()
        self.map = ShardMap.build(8, ["x", "y"])
        if with_stats:
            self.request_stats = lambda: {"ok": 4, "busy": 1}

    def shard_map(self) -> ShardMap:
        return self.map


@pytest.mark.parametrize("with_stats", [False, True])
def test_adapter_console_reads(with_stats):
    cluster = _StubCluster(with_stats)
    managed = ClusterManaged(cluster)
    assert isinstance(managed, console.ShardOwnersSource)
    assert isinstance(managed, console.RequestStatsSource)
    assert managed.shard_owners() == console.empty_owners()  # no committed map yet
    cluster.coord.committed = _StubCluster._Committed()
    o = managed.shard_owners()
    assert o["map_index"] == 9 and [o["nodes"][i] for i in o["owners"]] == list(
        cluster.map.owners())
    assert managed.request_stats() == ({"ok": 4, "busy": 1} if with_stats else None)


async def test_mutual_tls_refuses_the_console_without_a_client_certificate(fake):
    server_ctx, client_ctx, anon_ctx = _tls(trustme.CA())
    async with open_management_server(fake, "127.0.0.1:0", token=None,
                                      ssl_context=server_ctx) as s:
        async with httpx.AsyncClient(verify=client_ctx) as c:
            r = await c.get(s.url + "/console")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert (await c.get(s.url + "/v1/shard-owners")).status_code == 200
        async with httpx.AsyncClient(verify=anon_ctx) as c:
            for path in ("/console", "/", "/v1/shard-owners", "/v1/requests"):
                with pytest.raises(httpx.HTTPError):
                    await c.get(s.url + path, headers={"accept": BROWSER_ACCEPT})


async def test_writes_posted_from_another_sites_page_are_refused(fake):
    """A browser that holds the client certificate (to see the console) must not be a
    way in for another site's page: a cross-origin write is refused before anything
    else, certificate or token notwithstanding."""
    server_ctx, client_ctx, _anon = _tls(trustme.CA())
    async with open_management_server(fake, "127.0.0.1:0", token=TOKEN,
                                      ssl_context=server_ctx) as s, \
            httpx.AsyncClient(verify=client_ctx) as c:
        for origin in ("https://evil.example", "null", s.url.replace("https", "http")):
            r = await c.post(s.url + "/v1/voters", content=b'{"voters": 1}',
                             headers={"origin": origin, "content-type": "text/plain", **AUTH})
            assert r.status_code == 403, origin
            assert "cross-origin" in r.json()["error"]
        assert fake.calls == []
        r = await c.post(s.url + "/v1/voters", json={"voters": 5}, headers={"origin": s.url})
        assert r.status_code == 200  # the node's own page (it has no write controls today)
        r = await c.post(s.url + "/v1/voters", json={"voters": 4})  # ctl: no Origin
        assert r.status_code == 200
    assert fake.calls == [("set_voters", 5), ("set_voters", 4)]


def test_shard_owners_are_rebuilt_only_when_the_map_index_changes():
    node = ConsoleFake()
    built: list[int] = []
    index = [40]

    def shard_owners() -> console.ShardOwnersView:
        built.append(index[0])
        return console.owners_view(index[0], node.map)

    node.shard_owners = shard_owners  # type: ignore[method-assign]
    node.status = lambda: {**FakeNode.status(node), "map_index": index[0]}  # type: ignore[method-assign]
    read = console.reads(node)[console.OWNERS_PATH]
    assert read({})["map_index"] == 40 and read({})["map_index"] == 40
    assert built == [40]
    index[0] = 41
    assert read({})["map_index"] == 41 and built == [40, 41]
