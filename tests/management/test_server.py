"""The management HTTP server against a fake node: every route, auth, bad input,
forwarding to the leader, mutual TLS."""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest
import trio
import trustme

from clusterfunk.management.api import ManagedNode, ManagementError
from clusterfunk.management.server import FORWARDED_HEADER, MAX_BODY, open_management_server
from tests.management.conftest import TOKEN
from tests.management.fake import FakeNode

AUTH = {"authorization": f"Bearer {TOKEN}"}


async def _get(server, path, **kw):
    async with httpx.AsyncClient(verify=False) as c:  # plain HTTP: no CA bundle to load
        return await c.get(server.url + path, **kw)


async def _post(server, path, body=None, headers=None, content=None):
    async with httpx.AsyncClient(verify=False, timeout=10) as c:
        if content is not None:
            return await c.post(server.url + path, content=content, headers=headers or {})
        return await c.post(server.url + path, json=body if body is not None else {},
                            headers=headers or {})


def test_fake_implements_the_protocol():
    assert isinstance(FakeNode(), ManagedNode)


@pytest.mark.parametrize(
    ("path", "method"),
    [("/v1/status", "status"), ("/v1/nodes", "nodes"), ("/v1/members", "members"),
     ("/v1/endpoints", "endpoints"), ("/v1/shards", "shards"), ("/v1/raft", "raft_info"),
     ("/v1/diag", "diag")],
)
async def test_every_read_route_serves_the_node_view(server, fake, path, method):
    r = await _get(server, path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == json.loads(json.dumps(getattr(fake, method)()))


async def test_endpoints_filter_by_name(server):
    r = await _get(server, "/v1/endpoints", params={"name": "web"})
    assert r.json() == [{"node": "a", "name": "web", "address": "127.0.0.1:80"},
                        {"node": "c", "name": "web", "address": "127.0.0.1:82"}]
    r = await _get(server, "/v1/endpoints", params={"name": "nothing"})
    assert r.json() == []


async def test_index_lists_the_routes(server):
    r = await _get(server, "/")
    body = r.json()
    assert body["node"] == "a"
    assert "/metrics" in body["read"] and "/v1/status" in body["read"]
    assert body["write"] == ["/v1/remove", "/v1/step-down", "/v1/voters"]


async def test_unknown_path_and_wrong_methods(server, fake):
    r = await _get(server, "/v1/nope")
    assert r.status_code == 404 and "no such path" in r.json()["error"]
    r = await _get(server, "/v1/step-down")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await _post(server, "/v1/status", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert fake.calls == []


async def test_writes_without_credentials_are_refused(server, fake):
    for path, body in (("/v1/step-down", {}), ("/v1/remove", {"node": "c"}),
                       ("/v1/voters", {"voters": 5})):
        r = await _post(server, path, body)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        r = await _post(server, path, body, headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await _post(server, path, body, headers={"authorization": TOKEN})  # no scheme
        assert r.status_code == 401
    assert fake.calls == []
    assert fake.leader == "a" and fake.voters == 3


async def test_a_server_without_token_refuses_every_write(fake):
    async with open_management_server(fake, "127.0.0.1:0", token=None) as s:
        r = await _post(s, "/v1/voters", {"voters": 5}, headers={"authorization": "Bearer x"})
        assert r.status_code == 401
        assert "accepts no writes" in r.json()["error"]
        assert (await _get(s, "/v1/status")).status_code == 200  # reads stay open
    assert fake.calls == []


async def test_authenticated_writes_reach_the_node(server, fake):
    r = await _post(server, "/v1/voters", {"voters": 5}, headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"ok": True, "node": "a", "voters": 5}
    r = await _post(server, "/v1/remove", {"node": "c"}, headers=AUTH)
    assert r.json() == {"ok": True, "node": "a", "removed": "c"}
    r = await _post(server, "/v1/step-down", None, headers=AUTH)
    assert r.json() == {"ok": True, "node": "a", "leader": "b"}
    assert fake.calls == [("set_voters", 5), ("remove_node", "c"), ("step_down", None)]


async def test_bad_write_input_is_answered_400_or_413(server, fake):
    cases = [
        ("/v1/voters", b"{not json"),
        ("/v1/voters", b"[1, 2]"),
        ("/v1/voters", b'{"voters": "five"}'),
        ("/v1/voters", b'{"voters": 0}'),
        ("/v1/voters", b'{"voters": true}'),
        ("/v1/remove", b"{}"),
        ("/v1/remove", b'{"node": 7}'),
    ]
    for path, content in cases:
        r = await _post(server, path, headers=AUTH, content=content)
        assert r.status_code == 400, (path, content, r.text)
        assert r.json()["error"]
    r = await _post(server, "/v1/voters", headers=AUTH, content=b" " * (MAX_BODY + 1))
    assert r.status_code == 413
    assert fake.calls == []


async def test_a_refused_write_passes_its_status_on(server, fake):
    fake.fail_with = ManagementError(409, "no other voter to hand leadership to")
    r = await _post(server, "/v1/step-down", headers=AUTH)
    assert r.status_code == 409
    assert r.json() == {"error": "no other voter to hand leadership to"}


async def test_a_failing_accessor_gives_500_and_the_server_keeps_serving(server, fake):
    fake.broken = True
    r = await _get(server, "/v1/status")
    assert r.status_code == 500 and "accessor exploded" in r.json()["error"]
    fake.broken = False
    assert (await _get(server, "/v1/status")).status_code == 200


async def test_port_in_use_is_a_plain_oserror(fake):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            async with open_management_server(fake, f"127.0.0.1:{port}", token=None):
                pass


# -- forwarding ------------------------------------------------------------------------


async def test_a_follower_forwards_writes_to_the_leader(fake):
    follower = FakeNode("b", leader="a")
    async with open_management_server(fake, "127.0.0.1:0", token=TOKEN) as leader_srv, \
            open_management_server(follower, "127.0.0.1:0", token=TOKEN) as follower_srv:
        follower.management = {"a": leader_srv.address}
        r = await _post(follower_srv, "/v1/voters", {"voters": 4}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "node": "a", "voters": 4}
        assert r.headers["x-clusterfunk-forwarded-to"] == "a"
        assert fake.calls == [("set_voters", 4)] and follower.calls == []
        # not forwarded without credentials: the follower refuses it itself
        r = await _post(follower_srv, "/v1/voters", {"voters": 9})
        assert r.status_code == 401
        assert fake.calls == [("set_voters", 4)]


async def test_forwarding_happens_at_most_once(fake):
    fake.leader = "b"  # a thinks b leads; b thinks a leads
    follower = FakeNode("b", leader="a")
    async with open_management_server(fake, "127.0.0.1:0", token=TOKEN) as sa, \
            open_management_server(follower, "127.0.0.1:0", token=TOKEN) as sb:
        follower.management = {"a": sa.address}
        fake.management = {"b": sb.address}
        r = await _post(sb, "/v1/step-down", headers=AUTH)
        assert r.status_code == 503
        assert "not the leader either" in r.json()["error"]
        r = await _post(sa, "/v1/step-down", headers={**AUTH, FORWARDED_HEADER: "x"})
        assert r.status_code == 503
    assert fake.calls == [] and follower.calls == []


async def test_forwarding_without_a_reachable_leader_is_a_clear_error():
    node = FakeNode("b", leader=None)
    async with open_management_server(node, "127.0.0.1:0", token=TOKEN) as s:
        r = await _post(s, "/v1/step-down", headers=AUTH)
        assert r.status_code == 503 and r.json()["error"] == "no leader known; try again"
        node.leader = "a"  # known, but publishes no management endpoint
        r = await _post(s, "/v1/step-down", headers=AUTH)
        assert r.status_code == 503
        assert r.json()["error"] == "leader a publishes no management endpoint"
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            node.management = {"a": f"127.0.0.1:{closed.getsockname()[1]}"}
            r = await _post(s, "/v1/step-down", headers=AUTH)
        assert r.status_code == 502
        assert r.json()["error"].startswith("forwarding to leader a at 127.0.0.1:")
    assert node.calls == []


# -- mutual TLS -------------------------------------------------------------------------


def _tls(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("client").configure_cert(client_ctx)
    anon_ctx = ssl.create_default_context()
    ca.configure_trust(anon_ctx)
    return server_ctx, client_ctx, anon_ctx


async def test_mutual_tls_authenticates_writes_without_a_token(fake):
    ca = trustme.CA()
    server_ctx, client_ctx, anon_ctx = _tls(ca)
    async with open_management_server(fake, "127.0.0.1:0", token=None,
                                      ssl_context=server_ctx) as s:
        assert s.url.startswith("https://")
        async with httpx.AsyncClient(verify=client_ctx) as c:
            r = await c.post(s.url + "/v1/voters", json={"voters": 5})
            assert r.status_code == 200 and r.json()["voters"] == 5
            assert (await c.get(s.url + "/metrics")).status_code == 200
        # no client certificate: the handshake fails, reads included
        async with httpx.AsyncClient(verify=anon_ctx) as c:
            for path in ("/v1/status", "/v1/voters"):
                with pytest.raises(httpx.HTTPError):
                    await c.get(s.url + path)
        # a certificate from another CA: refused too
        stranger = ssl.create_default_context()
        ca.configure_trust(stranger)  # trusts our server...
        trustme.CA().issue_cert("client").configure_cert(stranger)  # ...but not ours
        async with httpx.AsyncClient(verify=stranger) as c:
            with pytest.raises(httpx.HTTPError):
                await c.post(s.url + "/v1/voters", json={"voters": 6})
    assert fake.calls == [("set_voters", 5)]


async def test_tls_without_client_verification_still_needs_the_token(fake):
    server_ctx, _client, anon_ctx = _tls(trustme.CA())
    server_ctx.verify_mode = ssl.CERT_NONE
    async with open_management_server(fake, "127.0.0.1:0", token=TOKEN,
                                      ssl_context=server_ctx) as s, \
            httpx.AsyncClient(verify=anon_ctx) as c:
        assert (await c.get(s.url + "/v1/status")).status_code == 200
        assert (await c.post(s.url + "/v1/voters", json={"voters": 5})).status_code == 401
        r = await c.post(s.url + "/v1/voters", json={"voters": 5}, headers=AUTH)
        assert r.status_code == 200
    assert fake.calls == [("set_voters", 5)]


async def test_server_stops_when_the_block_exits(fake):
    async with open_management_server(fake, "127.0.0.1:0", token=None) as s:
        addr = s.address
    host, port = addr.rsplit(":", 1)
    with pytest.raises(OSError):
        await trio.open_tcp_stream(host, int(port))


async def test_a_write_that_hangs_is_given_up_with_504(fake):
    from clusterfunk.management.server import ManagementApp

    async def hang() -> None:
        await trio.sleep_forever()

    fake.step_down = hang  # type: ignore[method-assign]
    app = ManagementApp(fake, token=TOKEN, write_timeout=0.2)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/step-down",
             "headers": [(b"authorization", f"Bearer {TOKEN}".encode())]}
    with trio.fail_after(5):
        await app(scope, receive, send)
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"])["error"].startswith("step-down did not finish within 0.2 s")


async def test_credentials_are_never_forwarded_off_the_leaders_raft_host(fake):
    follower = FakeNode("b", leader="a")  # its Raft configuration: a at 127.0.0.1:8300
    async with open_management_server(fake, "127.0.0.1:0", token=TOKEN) as leader_srv, \
            open_management_server(follower, "127.0.0.1:0", token=TOKEN) as s:
        port = leader_srv.address.rpartition(":")[2]
        follower.management = {"a": f"127.0.0.2:{port}"}  # e.g. a forged gossip tag
        r = await _post(s, "/v1/voters", {"voters": 4}, headers=AUTH)
        assert r.status_code == 503
        assert "not on the host of its Raft address 127.0.0.1:8300" in r.json()["error"]
    assert fake.calls == [] and follower.calls == []
