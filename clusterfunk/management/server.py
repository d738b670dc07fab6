"""The management HTTP server: JSON reads, authenticated writes, /metrics.

::

    async with open_management_server(node, "127.0.0.1:8500", token=token) as server:
        print(server.address)          # "127.0.0.1:8500" (port 0: the port bound)

It runs Hypercorn's Trio worker with a small ASGI app (:class:`ManagementApp`); the
routes and their JSON are listed in docs/operations.md. Rules:

* Reads (``GET``) are open, unless the server runs TLS with client verification
  (``ssl_context.verify_mode == CERT_REQUIRED``): then every connection, reads
  included, has shown a certificate of the cluster CA during the handshake.
* Writes (``POST``) need authentication: the bearer token (``Authorization: Bearer
  TOKEN``, compared in constant time) or a verified client certificate. Anything
  else gets ``401``; a server started with neither a token nor client verification
  refuses every write. A write with an ``Origin`` header other than this server's
  own (a browser posting from another site's page, e.g. one holding the client
  certificate for the web console) gets ``403``.
* A write that reaches a node that is not the Raft leader is **forwarded** to the
  leader's management endpoint (its gossip tag ``ep.clusterfunk.management``), with
  the caller's ``Authorization`` header -- only if that endpoint is on the host of
  the leader's address in the Raft configuration (a forged tag cannot draw the
  credentials elsewhere) -- and the leader's answer is relayed with a
  ``X-Clusterfunk-Forwarded-To`` header. A request is forwarded at most once (a
  forwarded request that meets a non-leader gets ``503``), so two nodes with stale
  views of the leader cannot bounce it between them. No leader known, or the
  leader publishes no management endpoint: ``503`` with the reason.
* Bad input is answered, never raised: unknown path ``404``, wrong method ``405``,
  bad JSON or arguments ``400``, a body over 64 KiB ``413``. An accessor that fails
  gives ``500`` with its message (and a log record); the server keeps running. A
  write that takes longer than ``WRITE_TIMEOUT`` (25 s) is given up with ``504``.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from clusterfunk.management import console
from clusterfunk.management.api import MANAGEMENT_ENDPOINT, ManagedNode, ManagementError
from clusterfunk.management.metrics import make_registry

log = logging.getLogger("clusterfunk.management")

MAX_BODY = 64 * 1024
#: how long a write may run at the leader (a step-down waits for the transfer): the
#: server has no caller of its own to own this timeout, and a write must not hang a
#: task forever; a forwarded write waits a little longer than that for the answer
WRITE_TIMEOUT = 25.0
FORWARD_TIMEOUT = WRITE_TIMEOUT + 5.0
FORWARDED_HEADER = "x-clusterfunk-forwarded-by"
READ_TIMEOUT = 10

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = [(b"content-type", content_type.encode()), *(headers or [])]


def _json(status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> _Response:
    return _Response(status, json.dumps(obj, sort_keys=True).encode() + b"\n", headers=headers)


def _error(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None,
           **extra: Any) -> _Response:
    return _json(status, {"error": message, **extra}, headers)


def _not_allowed(method: str, path: str, allow: str, hint: str = "") -> _Response:
    return _error(405, f"{method} not allowed on {path}{hint}", [(b"allow", allow.encode())])


class _BadRequest(Exception):
    pass


def _host(addr: str) -> str:
    return addr.rpartition(":")[0].strip("[]").lower()


def _int_arg(body: dict[str, Any], name: str) -> int:
    v = body.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise _BadRequest(f"{name!r} must be an integer")
    return v


def _str_arg(body: dict[str, Any], name: str) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v:
        raise _BadRequest(f"{name!r} must be a non-empty string")
    return v


class ManagementApp:
    """The ASGI application (see the module docstring for the rules)."""

    def __init__(
        self,
        node: ManagedNode,
        *,
        token: str | None,
        client_verified: bool = False,
        scheme: str = "http",
        forward_ssl_context: ssl.SSLContext | None = None,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.node = node
        self.write_timeout = write_timeout
        self._token = token.encode() if token else None
        self.client_verified = client_verified
        self.scheme = scheme
        self.forward_ssl_context = forward_ssl_context
        self.registry = make_registry(node)
        self._requests = Counter("clusterfunk_management_requests",
                                 "management API requests by route and status",
                                 ["route", "code"], registry=self.registry)
        self._latency = Histogram("clusterfunk_management_request_duration_seconds",
                                  "management API request latency by route", ["route"],
                                  registry=self.registry)
        self.reads: dict[str, Callable[[dict[str, list[str]]], Any]] = {
            "/v1/status": lambda q: node.status(),
            "/v1/nodes": lambda q: node.nodes(),
            "/v1/members": lambda q: node.members(),
            "/v1/endpoints": lambda q: node.endpoints(q.get("name", [None])[-1]),
            "/v1/shards": lambda q: node.shards(),
            "/v1/raft": lambda q: node.raft_info(),
            "/v1/diag": lambda q: node.diag(),
            **console.reads(node),
        }
        self.writes: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "/v1/step-down": self._step_down,
            "/v1/remove": self._remove,
            "/v1/voters": self._voters,
        }

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return  # websockets: not served (hypercorn closes the connection)
        start = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in self.reads or path in self.writes or path in (
            "/metrics", "/", "/v1", console.CONSOLE_PATH) else "other"
        try:
            resp = await self._handle(scope, receive, path)
        except Exception as exc:  # a bug in an accessor must not take the server down
            log.exception("management request %s %s failed", scope.get("method"), path)
            resp = _error(500, f"internal error: {exc}")
        self._requests.labels(route, str(resp.status)).inc()
        self._latency.labels(route).observe(time.perf_counter() - start)
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [*resp.headers, (b"content-length", str(len(resp.body)).encode())]})
        await send({"type": "http.response.body", "body": resp.body})

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request body, or None if it exceeds MAX_BODY."""
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return b"".join(chunks)

    def _headers(self, scope: Scope) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            out[k.decode("latin-1").lower()] = v.decode("latin-1")
        return out

    def _authenticated(self, headers: dict[str, str]) -> bool:
        if self.client_verified:
            return True  # the TLS handshake checked a client certificate of our CA
        if self._token is None:
            return False
        auth = headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(cred.strip().encode("latin-1"), self._token)

    async def _handle(self, scope: Scope, receive: Receive, path: str) -> _Response:
        method = scope.get("method", "GET")
        if path == console.CONSOLE_PATH or (
            path == "/" and console.wants_html(self._headers(scope).get("accept", ""))
        ):  # the web console (a browser at / gets it too; other clients the index)
            if method != "GET":
                return _not_allowed(method, path, "GET")
            page, page_headers = console.page()
            return _Response(200, page, console.CONTENT_TYPE, headers=page_headers)
        if path in ("/", "/v1"):
            if method != "GET":
                return _not_allowed(method, path, "GET")
            return _json(200, {"node": self.node.node_id,
                               "read": sorted([*self.reads, "/metrics", console.CONSOLE_PATH]),
                               "write": sorted(self.writes)})
        if path == "/metrics":
            if method != "GET":
                return _not_allowed(method, path, "GET")
            return _Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path in self.reads:
            if method != "GET":
                return _not_allowed(method, path, "GET", " (a read: use GET)")
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return _json(200, self.reads[path](query))
        if path in self.writes:
            if method != "POST":
                return _not_allowed(method, path, "POST", " (a write: use POST)")
            headers = self._headers(scope)
            origin = headers.get("origin")
            own = f"{self.scheme}://{headers.get('host', '')}"
            if origin is not None and origin.lower() != own.lower():
                # a browser sent it from another site's page (a form can carry a JSON
                # body, and the browser presents its client certificate): refused
                return _error(403, f"cross-origin write refused (Origin {origin})")
            if not self._authenticated(headers):
                why = ("this node accepts no writes: it was started without a management "
                       "token or TLS client verification") if (
                    self._token is None and not self.client_verified
                ) else "writes need authentication (Authorization: Bearer TOKEN)"
                return _error(401, why, headers=[(b"www-authenticate", b"Bearer")])
            raw = await self._read_body(receive)
            if raw is None:
                return _error(413, f"request body over {MAX_BODY} bytes")
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                return _error(400, f"body is not JSON: {exc}")
            if not isinstance(body, dict):
                return _error(400, "body must be a JSON object")
            if self.node.status()["role"] != "leader":
                return await self._forward(path, raw, headers)
            try:
                with trio.fail_after(self.write_timeout):
                    result = await self.writes[path](body)
            except trio.TooSlowError:
                return _error(504, f"{path[4:]} did not finish within {self.write_timeout:g} s "
                              "(it may still take effect)")
            except _BadRequest as exc:
                return _error(400, str(exc))
            except ManagementError as exc:
                return _error(exc.status, exc.message)
            return _json(200, {"ok": True, "node": self.node.node_id, **result})
        return _error(404, f"no such path: {path}")

    # -- writes ----------------------------------------------------------------------

    async def _step_down(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.node.step_down()
        return {"leader": self.node.status()["leader"]}

    async def _remove(self, body: dict[str, Any]) -> dict[str, Any]:
        target = _str_arg(body, "node")
        await self.node.remove_node(target)
        return {"removed": target}

    async def _voters(self, body: dict[str, Any]) -> dict[str, Any]:
        n = _int_arg(body, "voters")
        if n < 1:
            raise _BadRequest("'voters' must be >= 1")
        await self.node.set_voters(n)
        return {"voters": n}

    async def _forward(self, path: str, raw: bytes, headers: dict[str, str]) -> _Response:
        node = self.node
        st = node.status()
        leader = st["leader"]
        if FORWARDED_HEADER in headers:
            return _error(503, f"{node.node_id} is not the leader either (request forwarded "
                          f"by {headers[FORWARDED_HEADER]}); try again", leader=leader)
        if leader is None or leader == node.node_id:
            return _error(503, "no leader known; try again", leader=None)
        addr = node.endpoint_of(leader, MANAGEMENT_ENDPOINT)
        if not addr:
            return _error(503, f"leader {leader} publishes no management endpoint",
                          leader=leader)
        # The caller's credentials go along: send them only to the host that the Raft
        # configuration (agreed by consensus, not just gossiped) gives the leader.
        raft_addr = node.raft_info()["voters"].get(leader)
        if raft_addr is None or _host(raft_addr) != _host(addr):
            return _error(503, f"leader {leader}'s management address {addr} is not on the "
                          f"host of its Raft address {raft_addr}; not forwarding",
                          leader=leader)
        import httpx  # imported here: only a follower that forwards needs it

        out_headers = {"content-type": "application/json", FORWARDED_HEADER: node.node_id}
        if "authorization" in headers:
            out_headers["authorization"] = headers["authorization"]
        # plain HTTP: no CA bundle to load (verify applies to https only)
        verify: ssl.SSLContext | bool = self.forward_ssl_context or self.scheme == "https"
        url = f"{self.scheme}://{addr}{path}"
        try:
            async with httpx.AsyncClient(verify=verify, timeout=FORWARD_TIMEOUT) as client:
                r = await client.post(url, content=raw, headers=out_headers)
        except httpx.HTTPError as exc:
            return _error(502, f"forwarding to leader {leader} at {addr} failed: {exc!r}",
                          leader=leader)
        ctype = r.headers.get("content-type", "application/json")
        return _Response(r.status_code, r.content, ctype,
                         headers=[(b"x-clusterfunk-forwarded-to", leader.encode())])


@attrs.define
class ManagementServer:
    """A running management server; ``address`` is the bound ``HOST:PORT``."""

    address: str
    url: str
    app: ManagementApp


class _Config(Config):
    """Hypercorn configuration that serves a given SSL context (or plain HTTP)."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._ssl_context = ssl_context

    @property
    def ssl_enabled(self) -> bool:
        return self._ssl_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context


def _split_bind(bind: str) -> tuple[str, str]:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bind address must be HOST:PORT, not {bind!r}")
    return host, port


@asynccontextmanager
async def open_management_server(
    node: ManagedNode,
    bind: str,
    *,
    token: str | None,
    ssl_context: ssl.SSLContext | None = None,
    forward_ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[ManagementServer]:
    """Serve the management API of ``node`` on ``bind`` (``HOST:PORT``, port 0 = a free
    port) until the block exits. ``token``: the bearer token for writes (None: no
    token). ``ssl_context``: serve HTTPS; with ``verify_mode == CERT_REQUIRED`` every
    client is authenticated by its certificate. ``forward_ssl_context``: the client
    context used to forward writes to the leader over HTTPS."""
    _split_bind(bind)
    client_verified = ssl_context is not None and ssl_context.verify_mode == ssl.CERT_REQUIRED
    scheme = "https" if ssl_context is not None else "http"
    app = ManagementApp(node, token=token, client_verified=client_verified, scheme=scheme,
                        forward_ssl_context=forward_ssl_context)
    config = _Config(ssl_context)
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("clusterfunk.management.http")
    config.graceful_timeout = 0.5
    # a connection that sends nothing for this long is closed (hostile until
    # authenticated); idle keep-alive connections close after keep_alive_timeout (5 s)
    config.read_timeout = READ_TIMEOUT
    # bind here, before any task starts, so that a port in use is a plain OSError
    sockets = config.create_sockets()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.listen(config.backlog)
    try:
        async with trio.open_nursery() as nursery:
            wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
            binds = await nursery.start(partial(worker_serve, wrapped, config, sockets=sockets))
            bound = binds[0].split("://", 1)[1]
            try:
                yield ManagementServer(bound, f"{scheme}://{bound}", app)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()


__all__ = ["FORWARDED_HEADER", "ManagementApp", "ManagementServer", "open_management_server"]
