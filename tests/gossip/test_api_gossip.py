"""The Trio API: several GossipNodes on loopback, real UDP and TCP."""

from __future__ import annotations

import attrs
import pytest
import trio

from clusterfunk.gossip.api import GossipError, GossipNode
from clusterfunk.gossip.config import LOCAL
from clusterfunk.gossip.events import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    Query,
    UserEvent,
)
from clusterfunk.gossip.keyring import Keyring

# Local profile, a little faster still, so failures are detected within seconds.
FAST = attrs.evolve(LOCAL, probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05,
                    suspicion_mult=2, push_pull_interval=2.0, retransmit_mult=4)
K1 = bytes(range(32))
K2 = bytes(range(1, 33))


async def wait_for(pred, timeout: float = 10.0, step: float = 0.02) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(step)


def statuses(node: GossipNode) -> dict[str, str]:
    return {m.name: m.status for m in node.members()}


async def test_join_members_tags_events_and_leave() -> None:
    async with GossipNode("a", config=FAST, tags={"role": "seed"}) as a:
        stream = a.events()
        async with (
            GossipNode("b", config=FAST, seeds=[a.address]) as b,
            GossipNode("c", config=FAST, seeds=[a.address]) as c,
        ):
            nodes = (a, b, c)
            await wait_for(lambda: all(len(n.alive_members()) == 3 for n in nodes))
            assert [m.name for m in b.members()] == ["a", "b", "c"]
            assert {m.name: m.tags for m in c.members()}["a"] == {"role": "seed"}

            b.set_tags({"role": "web", "port": "8080"})
            await wait_for(lambda: all(
                {m.name: m.tags for m in n.members()}["b"] == {"role": "web", "port": "8080"}
                for n in nodes))

            c_events = c.events()
            b.send_event("deploy", b"v7", coalesce=False)
            with trio.fail_after(5):
                while True:
                    ev = await c_events.receive()
                    if isinstance(ev, UserEvent):
                        break
            assert (ev.name, ev.payload) == ("deploy", b"v7")

            await c.leave()
        # c left gracefully, b just stopped: a sees "left" for c, and b fails.
        await wait_for(lambda: statuses(a).get("c") == "left")
        await wait_for(lambda: statuses(a).get("b") == "dead", timeout=15)
        seen: list[object] = []
        while True:
            try:
                seen.append(stream.receive_nowait())
            except trio.WouldBlock:
                break
        joined = {e.member.name for e in seen if isinstance(e, MemberJoined)}
        assert {"b", "c"} <= joined
        assert any(isinstance(e, MemberUpdated) and e.member.name == "b" for e in seen)
        assert [e.member.name for e in seen if isinstance(e, MemberLeft)] == ["c"]
        assert "b" in [e.member.name for e in seen if isinstance(e, MemberFailed)]
        assert "c" not in [e.member.name for e in seen if isinstance(e, MemberFailed)]


async def test_query_collects_responses_with_filters() -> None:
    async with (
        GossipNode("a", config=FAST) as a,
        GossipNode("b", config=FAST, seeds=[a.address], tags={"dc": "east"}) as b,
        GossipNode("c", config=FAST, seeds=[a.address], tags={"dc": "west"}) as c,
        trio.open_nursery() as nursery,
    ):
        await wait_for(lambda: all(len(n.alive_members()) == 3 for n in (a, b, c)))

        async def responder(node: GossipNode) -> None:
            async for ev in node.events():
                if isinstance(ev, Query) and ev.name == "whoami":
                    node.respond(ev, node.name.encode())

        for n in (a, b, c):
            nursery.start_soon(responder, n)
        await trio.sleep(0.05)
        res = await a.query("whoami", b"", timeout=0.5)
        assert res.responses == {"a": b"a", "b": b"b", "c": b"c"}
        assert res.acks == ("a", "b", "c")
        east = await a.query("whoami", timeout=0.5, filter_tags={"dc": "ea.*"})
        assert east.responses == {"b": b"b"}
        only_c = await a.query("whoami", timeout=0.5, filter_nodes=["c"])
        quick = await a.query("whoami", timeout=5.0, enough=3)
        assert len(quick.responses) == 3
        assert only_c.responses == {"c": b"c"}
        nursery.cancel_scope.cancel()


async def test_keyring_rotation_on_loopback() -> None:
    rings = [Keyring([K1]) for _ in range(3)]
    async with GossipNode("a", config=FAST, keyring=rings[0]) as a, GossipNode(
        "b", config=FAST, keyring=rings[1], seeds=[a.address]
    ) as b, GossipNode("c", config=FAST, keyring=rings[2], seeds=[a.address]) as c:
        nodes = (a, b, c)
        await wait_for(lambda: all(len(n.alive_members()) == 3 for n in nodes))
        for op, key in (("install", K2), ("use", K2), ("remove", K1)):
            res = await getattr(b, f"{op}_key")(key, timeout=1.0)
            assert res.complete, res
            assert res.ok == ("a", "b", "c")
        assert all(r.keys == [K2] for r in rings)
        refused = await a.remove_key(K2, timeout=2.0)
        assert not refused.complete and set(refused.errors) == {"a", "b", "c"}
        await trio.sleep(0.5)
        assert all(set(statuses(n).values()) == {"alive"} for n in nodes)
        assert all(n.codec.stats.auth_failed == 0 for n in nodes)
        # A node keyed with the old key only can no longer join.
        with pytest.raises(GossipError):
            async with GossipNode("x", config=FAST, keyring=Keyring([K1]),
                                  seeds=[a.address], join_timeout=0.5):
                pass
        await wait_for(lambda: a.codec.stats.auth_failed > 0)


async def test_key_ops_need_an_encrypting_keyring() -> None:
    async with GossipNode("a", config=FAST, keyring=Keyring([K1]), encrypt=False) as a:
        with pytest.raises(GossipError, match="encrypting"):
            await a.install_key(K2)
    async with GossipNode("b", config=FAST) as b:
        with pytest.raises(GossipError, match="no keyring"):
            await b.use_key(K2)
        assert b.list_keys() == []


async def test_event_stream_never_drops() -> None:
    async with (
        GossipNode("a", config=FAST) as a,
        GossipNode("b", config=FAST, seeds=[a.address]) as b,
    ):
        await wait_for(lambda: len(b.alive_members()) == 2)
        slow = b.events()  # never read until the end
        for i in range(200):
            a.send_event(f"e{i}", b"", coalesce=False)
            if i % 20 == 19:
                await trio.sleep(0.05)
        await trio.sleep(1.0)
        names = []
        while True:
            try:
                ev = slow.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(ev, UserEvent):
                names.append(ev.name)
        assert sorted(names, key=lambda x: int(x[1:])) == [f"e{i}" for i in range(200)]
        slow.close()


async def test_garbage_datagrams_are_dropped_and_counted() -> None:
    import random

    from clusterfunk.runtime.api import split_address

    rng = random.Random(5)
    async with (
        GossipNode("a", config=FAST, keyring=Keyring([K1])) as a,
        GossipNode("b", config=FAST, keyring=Keyring([K1]), seeds=[a.address]) as b,
    ):
        host, port = split_address(a.address)
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            for i in range(200):
                junk = rng.randbytes(rng.randrange(0, 300))
                if i % 2:
                    junk = b"\x01" + junk  # looks sealed, fails authentication
                await sock.sendto(junk, (host, port))
        await wait_for(lambda: a.stats.malformed >= 190)
        assert a.codec.stats.auth_failed + a.codec.stats.bad_header == a.stats.malformed
        await trio.sleep(0.5)
        assert {m.name: m.status for m in b.members()} == {"a": "alive", "b": "alive"}
