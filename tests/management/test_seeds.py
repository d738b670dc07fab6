"""cluster-node seeds given as DNS names (a hosts-file name).

cluster-node resolves each name to all its addresses before joining, skips (and logs)
names that do not resolve, and retries with backoff while none does; the transport
resolves names too, so the process test shows the whole path works rather than
isolating this step (the unit tests do)."""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import socket

import pytest
import trio

from clusterfunk.cli import cluster_node
from clusterfunk.cli.cluster_node import StartError, resolve_seeds
from tests.management.test_process import Node


async def test_names_resolve_to_all_their_addresses_and_literals_stay():
    out = await resolve_seeds(["localhost:7946", "10.1.2.3:7000", "[::1]:7001"])
    assert "127.0.0.1:7946" in out
    assert out[-2:] == ["10.1.2.3:7000", "[::1]:7001"]
    assert len(out) == len(set(out))


async def test_an_unresolvable_seed_is_skipped_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, "clusterfunk.node")
    out = await resolve_seeds(["no-such-host.invalid:7946", "127.0.0.1:7946"])
    assert out == ["127.0.0.1:7946"]
    assert "seed no-such-host.invalid:7946 does not resolve" in caplog.text


async def test_while_no_seed_resolves_it_retries_and_never_returns_empty(
    caplog, autojump_clock, monkeypatch
):
    async def no_dns(seed: str) -> list[str]:  # a resolver thread would not see virtual time
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(cluster_node, "_resolve_one", no_dns)
    caplog.set_level(logging.WARNING, "clusterfunk.node")
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(4.0):  # virtual time
            await resolve_seeds(["no-such-host.invalid:7946"])
    # warnings at t = 0, 0.5, 1.5 and 3.5 s (backoff 0.5, 1, 2, 4 s)
    assert caplog.text.count("no seed resolves; retrying") == 4
    assert "retrying in 4.0 s" in caplog.text


async def test_a_malformed_seed_is_a_start_error():
    with pytest.raises(StartError, match="not a host:port address"):
        await resolve_seeds(["localhost"])


def _loopback_name() -> str | None:
    """A hosts-file name other than ``localhost`` (which the transport knows by
    itself) that resolves to loopback only: this machine's host name, usually."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 1, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    hosts = {info[4][0] for info in infos}
    if hosts and all(ipaddress.ip_address(h).is_loopback for h in hosts):
        return name
    return None


@pytest.mark.slow
def test_a_node_joins_through_a_hosts_file_name():
    name = _loopback_name()
    if name is None:
        pytest.skip(f"this machine's name {socket.gethostname()!r} does not resolve to "
                    "loopback only (no hosts-file name to test with)")
    a = Node("a", None)
    b = None
    try:
        b = Node("b", f"{name}:{a.gossip}")
        for n in (a, b):
            n.until(lambda r: r["state"] == "operational" and r["nodes"] == ["a", "b"])
    finally:
        for n in (a, b):
            if n is not None:
                n.send(signal.SIGINT)
        for n in (a, b):
            if n is not None:
                n.stop()


async def _fake_dns(sock: trio.socket.SocketType, zone: dict) -> None:
    """Answers queries from ``zone``: {(name, type): [rdata text, ...]}; else NXDOMAIN."""
    import dns.message
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    while True:
        data, peer = await sock.recvfrom(4096)
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        question = q.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        if key in zone:
            r.answer.append(dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, question.rdtype, zone[key]))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        await sock.sendto(r.to_wire(), peer)


async def test_srv_seeds_follow_priority_and_weight():
    zone = {
        ("_gossip._udp.cf.test.", "SRV"): ["20 0 7000 backup.cf.test.",
                                           "10 5 7001 n1.cf.test.", "10 50 7002 n2.cf.test."],
        ("n1.cf.test.", "A"): ["127.0.0.11"],
        ("n2.cf.test.", "A"): ["127.0.0.12", "127.0.0.13"],
        ("backup.cf.test.", "A"): ["127.0.0.14"],
    }
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    server = f"127.0.0.1:{sock.getsockname()[1]}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fake_dns, sock, zone)
        with trio.fail_after(10):
            out = await resolve_seeds(["srv:_gossip._udp.cf.test"], dns_server=server)
            assert out == ["127.0.0.12:7002", "127.0.0.13:7002", "127.0.0.11:7001",
                           "127.0.0.14:7000"]
            # an unknown name is skipped like an unresolvable DNS name
            out = await resolve_seeds(["srv:_nothing._udp.cf.test", "127.0.0.1:1"],
                                      dns_server=server)
            assert out == ["127.0.0.1:1"]
        nursery.cancel_scope.cancel()
    sock.close()


async def test_a_node_that_does_not_get_in_says_so_in_the_log(caplog, capsys, autojump_clock):
    class Waiting:  # a node that never leaves "joining"
        node_id = "b"
        addresses: dict[str, str] = {}

        def state(self) -> str:
            return "joining"

        def role(self) -> str:
            return "nonvoter"

        def leader(self) -> None:
            return None

        def nodes(self) -> list[str]:
            return []

        def events(self):
            class Never:
                async def receive(self):
                    await trio.sleep_forever()

            return Never()

    caplog.set_level(logging.WARNING, "clusterfunk.node")
    with pytest.raises(trio.TooSlowError), trio.fail_after(40):  # virtual time
        await cluster_node._serve_events(Waiting(), "127.0.0.1:1")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [  # after 10 s, then 20 s later
        "not in the cluster's shard map after 10 s (state joining, leader None); still trying",
        "not in the cluster's shard map after 30 s (state joining, leader None); still trying",
    ]
    assert json.loads(capsys.readouterr().out)["state"] == "joining"
