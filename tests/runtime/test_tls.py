"""Mutual TLS on the stream transport (loopback): who may connect, who may claim
which node id, certificate reload, and large frames through TLS."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
import trio
import trustme

from clusterfunk.runtime.framing import encode_frames, encode_hello
from clusterfunk.runtime.net import open_transport
from clusterfunk.runtime.tls import TLSConfig, TLSError, cert_names, peer_identity
from tests.runtime.helpers import wait_for

LOOP = "127.0.0.1:0"


class IdentityRecorder:
    """Keeps ``(src, identity, data)`` of every frame (the identity-aware callback)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, str | None, bytes]] = []
        self.datagrams: list[tuple[str, bytes]] = []

    def on_datagram(self, src: str, data: bytes) -> None:
        self.datagrams.append((src, data))

    def on_frame(self, src: str, data: bytes) -> None:  # pragma: no cover - must not be used
        raise AssertionError("on_frame_from must be preferred")

    def on_frame_from(self, src: str, identity: str | None, data: bytes) -> None:
        self.frames.append((src, identity, data))


def write_node(ca: trustme.CA, directory: Path, name: str, ca_name: str = "ca") -> TLSConfig:
    """Files for ``name`` signed by ``ca`` in ``directory``; its TLSConfig."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(name)
    ca.cert_pem.write_to_path(str(directory / f"{ca_name}.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
    cert.private_key_pem.write_to_path(str(directory / f"{name}-key.pem"))
    return TLSConfig(directory / f"{ca_name}.pem", directory / f"{name}.pem",
                     directory / f"{name}-key.pem", name)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def _raw_connect(addr: str) -> trio.SocketStream:
    host, port = addr.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def test_tls_round_trip_with_large_frames_and_identity(ca: trustme.CA,
                                                             tmp_path: Path) -> None:
    ta = write_node(ca, tmp_path / "a", "n1")
    tb = write_node(ca, tmp_path / "b", "n2")
    async with open_transport(LOOP, tls=ta) as a, open_transport(LOOP, tls=tb) as b:
        ra, rb = IdentityRecorder(), IdentityRecorder()
        a.bind(ra)
        b.bind(rb)
        sizes = [1, 1000, 1 << 20, 8 << 20, 3]
        payloads = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
        for p in payloads:
            a.send_frame(b.local_address, p)
        b.send_frame(a.local_address, b"back")
        await wait_for(lambda: len(rb.frames) == len(payloads) and len(ra.frames) == 1,
                       timeout=10)
        assert [d for _, _, d in rb.frames] == payloads
        assert {(s, i) for s, i, _ in rb.frames} == {(a.local_address, "n1")}
        assert ra.frames == [(b.local_address, "n2", b"back")]
        assert a.stats.tls_failures == b.stats.tls_failures == 0


async def test_plain_handler_still_gets_on_frame_under_tls(ca: trustme.CA,
                                                           tmp_path: Path) -> None:
    got: list[tuple[str, bytes]] = []

    class Plain:
        def on_datagram(self, src: str, data: bytes) -> None: ...

        def on_frame(self, src: str, data: bytes) -> None:
            got.append((src, data))

    ta = write_node(ca, tmp_path / "a", "n1")
    tb = write_node(ca, tmp_path / "b", "n2")
    async with open_transport(LOOP, tls=ta) as a, open_transport(LOOP, tls=tb) as b:
        a.bind(Plain())
        b.bind(Plain())
        a.send_frame(b.local_address, b"x")
        await wait_for(lambda: got == [(a.local_address, b"x")])


async def test_without_a_certificate_the_connection_is_refused(ca: trustme.CA,
                                                              tmp_path: Path) -> None:
    tb = write_node(ca, tmp_path / "b", "n2")
    async with open_transport(LOOP, tls=tb) as b, open_transport(LOOP, node_id="n1") as plain:
        rb = IdentityRecorder()
        b.bind(rb)
        plain.bind(IdentityRecorder())
        # 1. a plain-TCP transport: its hello is not a TLS ClientHello
        plain.send_frame(b.local_address, b"forged")
        await wait_for(lambda: b.stats.tls_failures >= 1, what="plain dialer refused")
        # 2. a TLS client that trusts the CA but shows no certificate
        ctx = ssl.create_default_context(cafile=str(tb.ca))
        ctx.check_hostname = False
        failures = b.stats.tls_failures
        raw = await _raw_connect(b.local_address)
        s = trio.SSLStream(raw, ctx)
        with pytest.raises(trio.BrokenResourceError):
            # TLS 1.3: the client finishes first; the refusal arrives on the next read
            await s.do_handshake()
            await s.send_all(encode_hello("127.0.0.1:9", "n1") + encode_frames([b"forged"]))
            await s.receive_some(1)
        await trio.aclose_forcefully(s)
        await wait_for(lambda: b.stats.tls_failures == failures + 1, what="certless refused")
        assert rb.frames == []
        assert b.stats.frames_received == 0


async def test_a_certificate_from_another_ca_fails_the_handshake(ca: trustme.CA,
                                                                 tmp_path: Path) -> None:
    tb = write_node(ca, tmp_path / "b", "n2")
    other = trustme.CA()
    tm = write_node(other, tmp_path / "m", "n1")  # the right name, the wrong CA
    async with open_transport(LOOP, tls=tb) as b, \
            open_transport(LOOP, tls=tm, backoff_cap=0.05) as m:
        rb = IdentityRecorder()
        b.bind(rb)
        m.bind(IdentityRecorder())
        m.send_frame(b.local_address, b"forged")
        # the dialer refuses b's certificate (not from its CA) and retries
        await wait_for(lambda: m.stats.tls_failures >= 2, what="dialer-side failures")
        assert rb.frames == [] and b.stats.frames_received == 0
        # and b refuses the wrong CA's client certificate (a client trusting b's CA)
        raw = await _raw_connect(b.local_address)
        ctx = ssl.create_default_context(cafile=str(tb.ca))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(tm.cert), str(tm.key))
        s = trio.SSLStream(raw, ctx)
        failures = b.stats.tls_failures
        with pytest.raises(trio.BrokenResourceError):
            await s.do_handshake()
            await s.send_all(encode_hello("127.0.0.1:9", "n1") + encode_frames([b"forged"]))
            await s.receive_some(1)
        await trio.aclose_forcefully(s)
        await wait_for(lambda: b.stats.tls_failures > failures, what="acceptor-side failure")
        assert rb.frames == []


async def test_the_right_ca_but_another_nodes_name_is_dropped(ca: trustme.CA,
                                                             tmp_path: Path) -> None:
    tb = write_node(ca, tmp_path / "b", "n2")
    tm = write_node(ca, tmp_path / "m", "mallory")
    # mallory's certificate, claiming to be n1 in the hello
    async with open_transport(LOOP, tls=tb) as b, \
            open_transport(LOOP, tls=tm, node_id="n1") as m:
        rb = IdentityRecorder()
        b.bind(rb)
        m.bind(IdentityRecorder())
        m.send_frame(b.local_address, b"I am n1")
        await wait_for(lambda: b.stats.identity_mismatch >= 1)
        assert b.stats.frames_dropped_identity >= 1
        assert rb.frames == [] and b.stats.frames_received == 0
        assert b.stats.tls_failures == 0  # the handshake itself was fine


async def test_reload_uses_new_certificates_for_new_connections(tmp_path: Path) -> None:
    ca1, ca2 = trustme.CA(), trustme.CA()
    bdir = tmp_path / "b"
    tb = write_node(ca1, bdir, "n2")
    ta = write_node(ca1, tmp_path / "a", "n1")
    tc = write_node(ca2, tmp_path / "c", "n3")
    async with open_transport(LOOP, tls=tb) as b, open_transport(LOOP, tls=ta) as a, \
            open_transport(LOOP, tls=tc, backoff_cap=0.1) as c:
        rb = IdentityRecorder()
        b.bind(rb)
        a.bind(IdentityRecorder())
        c.bind(IdentityRecorder())
        a.send_frame(b.local_address, b"a1")
        await wait_for(lambda: [d for _, _, d in rb.frames] == [b"a1"])
        c.send_frame(b.local_address, b"c1")
        await wait_for(lambda: c.stats.tls_failures >= 1, what="c refused before reload")
        assert all(i != "n3" for _, i, _ in rb.frames)
        # rotate b onto CA 2 (same file names), without a restart
        staged = write_node(ca2, tmp_path / "staged", "n2")
        for src, dst in ((staged.ca, tb.ca), (staged.cert, tb.cert), (staged.key, tb.key)):
            shutil.copyfile(src, dst)
        tb.reload()
        assert tb.reloads == 1
        await wait_for(lambda: (c.local_address, "n3", b"c1") in rb.frames, timeout=5,
                       what="c accepted after reload")
        # a's connection was opened before the reload: it keeps working
        a.send_frame(b.local_address, b"a2")
        await wait_for(lambda: (a.local_address, "n1", b"a2") in rb.frames)
        assert a.stats.connects == 1


async def test_handshake_and_hello_share_one_time_limit(ca: trustme.CA,
                                                        tmp_path: Path) -> None:
    tb = write_node(ca, tmp_path / "b", "n2")
    async with open_transport(LOOP, tls=tb, hello_timeout=0.2) as b:
        b.bind(IdentityRecorder())
        raw = await _raw_connect(b.local_address)  # never starts the TLS handshake
        with trio.fail_after(3):
            assert await raw.receive_some(1) == b""
        await raw.aclose()
        assert b.stats.hello_timeouts == 1


def test_config_refuses_a_certificate_without_the_node_id(ca: trustme.CA,
                                                          tmp_path: Path) -> None:
    t = write_node(ca, tmp_path, "n1")
    with pytest.raises(TLSError, match="not the node id"):
        TLSConfig(t.ca, t.cert, t.key, "n2")
    with pytest.raises(TLSError, match="not found"):
        TLSConfig(tmp_path / "nope.pem", t.cert, t.key, "n1")


def test_peer_identity_uses_dns_names_then_common_name() -> None:
    san = {"subject": ((("commonName", "x"),),), "subjectAltName": (("DNS", "n1"),)}
    assert cert_names(san) == {"n1"}
    assert peer_identity(san, "n1") == "n1"
    assert peer_identity(san, "x") is None
    cn_only = {"subject": ((("commonName", "n2"),),)}
    assert peer_identity(cn_only, "n2") == "n2"
    assert peer_identity(cn_only, None) is None
    assert peer_identity(None, "n2") is None


async def test_certs_command_output_runs_a_tls_cluster(tmp_path: Path) -> None:
    from clusterfunk.runtime.tls import load_tls_dir
    from clusterfunk.security import certs

    out = tmp_path / "tls"
    assert certs.main(["--out", str(out), "--nodes", "a,b"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a-key.pem", "a.pem", "b-key.pem", "b.pem", "ca-key.pem", "ca.pem",
                     "client-key.pem", "client.pem"]
    for p in out.glob("*-key.pem"):
        assert p.stat().st_mode & 0o777 == 0o600, p
    assert out.stat().st_mode & 0o777 == 0o700
    ca_before = (out / "ca.pem").read_bytes()
    # a second run adds a node with the same CA; existing nodes need --force
    assert certs.main(["--out", str(out), "--nodes", "c"]) == 0
    assert (out / "ca.pem").read_bytes() == ca_before
    assert certs.main(["--out", str(out), "--nodes", "a"]) == 2
    assert certs.main(["--out", str(out), "--nodes", "bad/name"]) == 2
    ta, tc = load_tls_dir(out, "a"), load_tls_dir(out, "c")
    tclient = TLSConfig(out / "ca.pem", out / "client.pem", out / "client-key.pem", "client")
    async with open_transport(LOOP, tls=ta) as a, open_transport(LOOP, tls=tc) as c, \
            open_transport(LOOP, tls=tclient) as cl:
        ra = IdentityRecorder()
        a.bind(ra)
        c.bind(IdentityRecorder())
        cl.bind(IdentityRecorder())
        c.send_frame(a.local_address, b"from c")
        cl.send_frame(a.local_address, b"from client")
        await wait_for(lambda: len(ra.frames) == 2)
        assert sorted((i, d) for _, i, d in ra.frames) == [
            ("c", b"from c"), ("client", b"from client")]
    with pytest.raises(TLSError):
        load_tls_dir(out, "zz")


async def test_a_failed_reload_keeps_the_old_certificates(ca: trustme.CA,
                                                          tmp_path: Path) -> None:
    ta = write_node(ca, tmp_path / "a", "n1")
    tb = write_node(ca, tmp_path / "b", "n2")
    old_server = tb.server_context
    tb.key.write_text("not a key\n")
    with pytest.raises(TLSError, match="cannot load TLS files"):
        tb.reload()
    assert tb.server_context is old_server and tb.reloads == 0
    async with open_transport(LOOP, tls=ta) as a, open_transport(LOOP, tls=tb) as b:
        rb = IdentityRecorder()
        a.bind(IdentityRecorder())
        b.bind(rb)
        a.send_frame(b.local_address, b"still works")
        await wait_for(lambda: rb.frames == [(a.local_address, "n1", b"still works")])
