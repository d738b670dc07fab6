"""The web console: one self-contained page served by every node's management server.

``GET /console`` (and ``GET /`` when the client asks for ``text/html``, as a browser
does; other clients keep getting the JSON index) serves ``console.html`` (package
data): inline CSS and JavaScript only, nothing fetched from elsewhere (the
``Content-Security-Policy`` header allows exactly the page's own script and style, by
hash, and requests to this origin). The page polls the JSON read routes of the same
server about once a second -- ``/v1/status``, ``/v1/members``, ``/v1/nodes``,
``/v1/diag``, ``/v1/requests`` -- and ``/v1/shard-owners`` only when the committed
map's index changes, and shows: status, role, leader, term; the members (gossip view)
with their status; the committed shard map as a picture (one cell per shard,
coloured by owner, with a legend of the nodes and their share); the reshards seen
while the page is open and the consistency report; request counts and rates
(computed by the page from successive readings of ``/v1/requests``).

The console adds two read routes (JSON, open or authenticated exactly like the other
reads, see :mod:`.server`):

* ``/v1/shard-owners`` -- :class:`ShardOwnersView`: the owner of every shard of the
  committed map, as an index into the map's sorted node list (``-1``: no owner);
* ``/v1/requests`` -- :class:`RequestsView`: the node's routed-request counters
  (``ok``/``moved``/``busy``/``error`` and the request layer's other counters).

A node provides them through the small protocols :class:`ShardOwnersSource` and
:class:`RequestStatsSource` (:class:`.adapter.ClusterManaged` implements both); a
node without them answers an empty map / ``available: false``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol, TypedDict, runtime_checkable

from clusterfunk.management.api import ManagedNode

#: the path that always serves the page
CONSOLE_PATH = "/console"
OWNERS_PATH = "/v1/shard-owners"
REQUESTS_PATH = "/v1/requests"
CONTENT_TYPE = "text/html; charset=utf-8"


class ShardOwnersView(TypedDict):
    """The committed map, shard by shard."""

    map_index: int  # Raft index of the committed map (0: none yet)
    shards: int  # number of shards (len(owners))
    nodes: list[str]  # the map's nodes, sorted; owners index into this list
    worker_ids: list[int]  # worker id of nodes[i]
    owners: list[int]  # owners[shard] = index into nodes, -1 = no owner


class RequestsView(TypedDict):
    """The routed-request counters of this node at ``uptime`` (for rates)."""

    node: str
    uptime: float  # this node's uptime in seconds when the counters were read
    available: bool  # false: this node has no request layer (counts is empty)
    counts: dict[str, int]  # ok / moved / busy / error and the layer's other counters


@runtime_checkable
class ShardOwnersSource(Protocol):
    def shard_owners(self) -> ShardOwnersView:
        """The committed map's owner of every shard (see :class:`ShardOwnersView`)."""
        ...


@runtime_checkable
class RequestStatsSource(Protocol):
    def request_stats(self) -> dict[str, int] | None:
        """Routed-request counters by name, or None if the node routes no requests."""
        ...


def empty_owners() -> ShardOwnersView:
    return ShardOwnersView(map_index=0, shards=0, nodes=[], worker_ids=[], owners=[])


def owners_view(map_index: int, shard_map: Any) -> ShardOwnersView:
    """A :class:`ShardOwnersView` of a :class:`~clusterfunk.sharding.shardmap.ShardMap`."""
    if shard_map is None:
        return empty_owners()
    nodes = list(shard_map.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    wids = shard_map.worker_ids()
    owners = [-1 if o is None else pos[o] for o in shard_map.owners()]
    return ShardOwnersView(map_index=map_index, shards=len(owners), nodes=nodes,
                           worker_ids=[int(wids[n]) for n in nodes], owners=owners)


def reads(node: ManagedNode) -> dict[str, Callable[[dict[str, list[str]]], Any]]:
    """The console's JSON read routes for ``node`` (merged into the server's reads)."""
    owners: Callable[[], ShardOwnersView] = (
        node.shard_owners if isinstance(node, ShardOwnersSource) else empty_owners
    )
    stats: Callable[[], dict[str, int] | None] = (
        node.request_stats if isinstance(node, RequestStatsSource) else lambda: None
    )

    cache: list[ShardOwnersView] = []  # the last view: a map is rebuilt only when it changes

    def shard_owners(_q: dict[str, list[str]]) -> ShardOwnersView:
        index = node.status()["map_index"]
        if not (cache and index and cache[0]["map_index"] == index):
            cache[:] = [owners()]
        return cache[0]

    def requests(_q: dict[str, list[str]]) -> RequestsView:
        counts = stats()
        return RequestsView(node=node.node_id, uptime=float(node.status()["uptime"]),
                            available=counts is not None,
                            counts={str(k): int(v) for k, v in sorted((counts or {}).items())})

    return {OWNERS_PATH: shard_owners, REQUESTS_PATH: requests}


def wants_html(accept: str) -> bool:
    """True if an ``Accept`` header asks for HTML (a browser navigating to ``/``)."""
    return "text/html" in accept.lower()


def _csp(page: str) -> str:
    def hashes(tag: str) -> str:
        out = []
        for body in re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S):
            digest = hashlib.sha256(body.encode()).digest()
            out.append(f"'sha256-{base64.b64encode(digest).decode()}'")
        return " ".join(out)

    return (f"default-src 'none'; script-src {hashes('script')}; "
            f"style-src {hashes('style')}; connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _load() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    page = resources.files("clusterfunk.management").joinpath("console.html").read_text("utf-8")
    headers = [
        (b"content-security-policy", _csp(page).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]
    return page.encode(), headers


_PAGE: tuple[bytes, list[tuple[bytes, bytes]]] | None = None


def page() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The page's bytes and its response headers (besides the content type)."""
    global _PAGE
    if _PAGE is None:
        _PAGE = _load()
    return _PAGE


__all__ = [
    "CONSOLE_PATH",
    "CONTENT_TYPE",
    "OWNERS_PATH",
    "REQUESTS_PATH",
    "RequestStatsSource",
    "RequestsView",
    "ShardOwnersSource",
    "ShardOwnersView",
    "owners_view",
    "page",
    "reads",
    "wants_html",
]
