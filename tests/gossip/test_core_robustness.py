"""Bad input never crashes a node: malformed packets, messages about unknown members,
stale incarnations, foreign names; and the simulator's determinism contract."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterfunk import wire
from clusterfunk.gossip.config import LAN
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.messages import (
    Ack,
    Alive,
    Compound,
    Coord,
    Dead,
    IndirectPing,
    Leave,
    MemberState,
    Nack,
    Ping,
    PushPull,
    QueryMsg,
    QueryResponseMsg,
    Suspect,
    UserEventMsg,
)

names = st.sampled_from(["a", "a", "b", "c", "zz", "", "x" * 200, "b:1", "ü"])
addrs = st.sampled_from(["b:7946", "c:7946", "nohost", ":1", "a:7946", "[::1]:7946", ""])
ints = st.integers(-(2**63), 2**64 - 1) | st.integers(-2, 5) | st.just(2**64 - 1)
small_tags = st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)
big_tags = st.just({"k": "v" * 1000})
tags = small_tags | big_tags
floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1, 100)
coords = st.none() | st.builds(
    Coord, st.lists(floats, max_size=9).map(tuple), floats, floats, floats
)

messages = st.one_of(
    st.builds(Ping, ints, names, names, addrs),
    st.builds(IndirectPing, ints, names, addrs, names, addrs, st.booleans()),
    st.builds(Ack, ints, names, coords),
    st.builds(Nack, ints, names),
    st.builds(Alive, ints, names, addrs, tags),
    st.builds(Suspect, ints, names, names),
    st.builds(Dead, ints, names, names),
    st.builds(Leave, ints, names, ints),
    st.builds(
        PushPull,
        names,
        addrs,
        st.booleans(),
        st.booleans(),
        st.lists(
            st.builds(
                MemberState,
                names,
                addrs,
                ints,
                st.sampled_from(["alive", "dead", "left", "suspect", "zombie"]),
                small_tags,
            ),
            max_size=4,
        ).map(tuple),
        ints,
        ints,
        ints,
    ),
    st.builds(UserEventMsg, ints, names, st.binary(max_size=40), st.booleans()),
    st.builds(
        QueryMsg,
        ints,
        ints,
        names,
        st.binary(max_size=40),
        names,
        addrs,
        st.lists(names, max_size=2).map(tuple),
        st.dictionaries(st.sampled_from(["role", "x"]), st.sampled_from(["web", "(", ".*"])),
        st.booleans(),
        floats,
    ),
    st.builds(QueryResponseMsg, ints, ints, names, st.booleans(), st.binary(max_size=20)),
)


def started() -> GossipCore:
    c = GossipCore("a", "a:7946", random.Random(1), LAN, {"role": "web"})
    c.start(0.0)
    c.on_message(0.0, "b:7946", Alive(3, "b", "b:7946", {}), False)
    c.on_message(0.0, "c:7946", Alive(0, "c", "c:7946", {}), False)
    c.drain()
    return c


def check_invariants(c: GossipCore) -> None:
    names_ = c.table.names
    assert "a" in c.table.by_name
    assert sorted(names_) == sorted(c.table.by_name)
    assert c.table.live_count <= len(names_)
    for m in c.members():
        assert m.status in ("alive", "suspect", "dead", "left")
    assert 0 <= c.health_score < LAN.awareness_max_multiplier


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(messages, st.booleans(), st.floats(0, 50)), max_size=12))
def test_random_messages_never_crash_the_core(batch):
    c = started()
    incs = {m.name: m.incarnation for m in c.members()}
    now = 0.0
    for msg, stream, dt in batch:
        now += dt
        try:
            encoded = wire.encode(msg)
        except Exception:
            continue
        try:
            msg = wire.decode(encoded)  # what a receiver would really see
        except wire.WireError:
            continue  # out of range or not finite: the driver drops it
        c.on_message(now, "b:7946", msg, stream)
        c.on_message(
            now, "b:7946", Compound((encoded, b"\xc1garbage", wire.encode(Compound(())))), False
        )
        c.on_tick(now)
        out = c.drain()
        for send in out.sends if out else []:
            wire.encode(send.msg)  # whatever the core sends can be encoded
        check_invariants(c)
        for m in c.members():  # incarnations never go backwards
            assert m.incarnation >= incs.get(m.name, -(2**63))
            incs[m.name] = m.incarnation


def test_counted_drops(cluster_factory):
    c = cluster_factory(3, seed=41)
    c.run(5.0)
    core = c.core("n1")
    before = dict(core.stats)
    drv = c.driver("n1")
    drv.on_datagram("n2:7946", b"\x00\x01garbage")  # the driver counts undecodable bytes
    assert drv.stats.malformed == 1
    feed = [
        Compound((b"\xff\xff", wire.encode(Compound(())))),  # bad part, nested compound
        Ping(1, "somebody-else", "n2", "n2:7946"),  # misdirected
        Suspect(0, "ghost", "n2"),  # unknown member
        Dead(0, "ghost", "n2"),
        Alive(0, "bad", "no-port", {}),  # invalid addresses
        Alive(0, "bad", "h:\u00b2", {}),
        Alive(0, "bad", "h:99999", {}),
        PushPull("n2", "n2:7946", False, False, (), 0, 0, 0),  # full state by datagram
    ]
    for m in feed:
        c.call("n1", lambda core, now, m=m: core.on_message(now, "n2:7946", m, False))
    s = core.stats
    assert s["malformed"] - before["malformed"] == 2
    assert s["misdirected"] - before["misdirected"] == 1
    assert s["unknown_member"] - before["unknown_member"] == 2
    assert s["invalid"] - before["invalid"] == 4
    # stale incarnation: n2 is at some incarnation; an older suspicion is ignored
    c.call("n2", lambda core, now: core.set_tags(now, {"v": "2"}))
    c.run(c.sim.now + 3.0)
    inc = core.member("n2").incarnation
    assert inc >= 1
    c.call(
        "n1", lambda core, now: core.on_message(now, "n3:7946", Suspect(inc - 1, "n2", "n3"), False)
    )
    assert core.member("n2").status == "alive" and s["stale"] > before["stale"]
    c.run(30.0)
    assert c.all_alive()


SCRIPT = r"""
import sys
sys.path.insert(0, {testdir!r})
from conftest import Cluster
from clusterfunk.sim.netmodel import LinkConfig
import json, io
c = Cluster(7, seed=5, link=LinkConfig(loss=0.05, jitter=0.002))
c.run(20.0)
c.sim.crash("n3")
c.call("n4", lambda core, now: core.leave(now))
c.call("n2", lambda core, now: core.set_tags(now, {{"a": "b"}}))
c.call("n5", lambda core, now: core.user_event(now, "e", b"x"))
c.call("n6", lambda core, now: core.query(now, "q", b"", filter_tags={{"a": ".*"}}))
c.run(60.0)
for r in c.tracer.records:
    print(json.dumps(r, separators=(",", ":")))
"""


def test_same_seed_same_trace_under_any_hash_seed():
    testdir = os.path.dirname(__file__)
    outs = []
    for hashseed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        res = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(testdir=testdir)],
            env=env,
            capture_output=True,
            check=True,
            timeout=120,
        )
        outs.append(res.stdout)
    assert outs[0] == outs[1]
    text = outs[0].decode()
    assert (
        '"ev":"gossip.member"' in text and '"status":"dead"' in text and '"status":"left"' in text
    )


def test_no_claim_puts_a_member_beyond_refutation(cluster_factory):
    """Regression: a Dead at incarnation 2**62 evicted a live member for good (its
    refutation, 2**62 + 1, was above every peer's maximum). Now a claim is accepted
    only below MAX_INCARNATION, so the answer (at most MAX_INCARNATION) always
    decodes and is accepted."""
    from clusterfunk.gossip.core import MAX_INCARNATION

    c = cluster_factory(3, seed=43)
    c.run(5.0)
    n1 = c.core("n1")
    before = n1.stats["invalid"]
    c.call("n1", lambda core, now: core.on_message(
        now, "x:1", Dead(MAX_INCARNATION, "n2", "mallory"), False))
    assert n1.member("n2").status == "alive" and n1.stats["invalid"] == before + 1
    # just below the bound: accepted, spread, refuted at the bound itself
    c.call("n1", lambda core, now: core.on_message(
        now, "x:1", Dead(MAX_INCARNATION - 1, "n2", "mallory"), False))
    c.run(c.sim.now + 10.0)
    assert c.core("n2").incarnation == MAX_INCARNATION
    for name in ("n1", "n3"):
        m = c.core(name).member("n2")
        assert m.status == "alive" and m.incarnation == MAX_INCARNATION
    alive = Alive(MAX_INCARNATION, "n2", "n2:7946", {})
    assert wire.decode(wire.encode(alive)) == alive
    assert c.all_alive()
