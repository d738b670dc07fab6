"""The Serf layer in the simulator: tags, user events, queries, internal queries."""

from __future__ import annotations

import attrs
import pytest

from clusterfunk.gossip import events as ev
from clusterfunk.gossip.config import LAN, query_timeout
from clusterfunk.gossip.messages import QueryMsg, UserEventMsg


def of(c, node, cls):
    return [e for e in c.events[node] if isinstance(e, cls)]


def test_tags_propagate_with_a_higher_incarnation(cluster_factory):
    c = cluster_factory(6, seed=21, tags={"n2": {"role": "db"}})
    c.run(10.0)
    assert all(c.core(x).member("n2").tags == {"role": "db"} for x in c.sim.names)
    c.call("n2", lambda core, now: core.set_tags(now, {"role": "db", "zone": "b"}))
    c.run(15.0)
    for x in c.sim.names:
        m = c.core(x).member("n2")
        assert m.tags == {"role": "db", "zone": "b"} and m.incarnation == 1 and m.status == "alive"
        assert any(
            e.member.name == "n2" and e.member.tags.get("zone") == "b"
            for e in of(c, x, ev.MemberUpdated)
        )


def test_tags_size_limit(cluster_factory):
    c = cluster_factory(2, seed=22)
    c.run(1.0)
    with pytest.raises(ValueError):
        c.call("n1", lambda core, now: core.set_tags(now, {"k": "v" * 600}))
    assert c.core("n1").local_member.tags == {}


def test_user_events_reach_everyone_exactly_once(cluster_factory):
    c = cluster_factory(8, seed=23)
    c.run(10.0)
    c.call("n3", lambda core, now: core.user_event(now, "deploy", b"v1", coalesce=False))
    c.call("n5", lambda core, now: core.user_event(now, "deploy", b"v2", coalesce=False))
    # gossip reaches almost everyone at once; push-pull (every 30 s) carries recent
    # events to anyone the gossip missed
    c.run(75.0)
    for x in c.sim.names:
        got = sorted((e.name, e.payload) for e in of(c, x, ev.UserEvent))
        assert got == [("deploy", b"v1"), ("deploy", b"v2")], x
    # replaying an event already seen does nothing
    first = of(c, "n1", ev.UserEvent)[0]
    replay = UserEventMsg(first.ltime, first.name, first.payload, False)
    c.call("n1", lambda core, now: core.on_message(now, "n2:7946", replay, False))
    assert len(of(c, "n1", ev.UserEvent)) == 2
    assert c.core("n1").serf.stats["events_dup"] >= 1
    assert len(c.tracer.of("gossip.event")) == 16


def test_coalescing_keeps_the_latest_event_per_name(cluster_factory):
    cfg = attrs.evolve(LAN, user_coalesce_period=2.0)
    c = cluster_factory(5, seed=24, config=cfg)
    c.run(10.0)
    for payload in (b"1", b"2", b"3"):
        c.call("n2", lambda core, now, p=payload: core.user_event(now, "cfg", p, coalesce=True))
    c.call("n2", lambda core, now: core.user_event(now, "other", b"x", coalesce=False))
    c.run(20.0)
    for x in c.sim.names:
        got = [(e.name, e.payload) for e in of(c, x, ev.UserEvent)]
        assert ("cfg", b"3") in got and ("other", b"x") in got
        assert ("cfg", b"1") not in got and ("cfg", b"2") not in got, x


def test_query_with_node_filter_collects_acks_and_responses(cluster_factory):
    c = cluster_factory(6, seed=25)
    c.run(10.0)
    for x in c.sim.names:  # every node answers queries with its own name
        drv = c.driver(x)

        def answer(e, drv=drv, name=x):
            if isinstance(e, ev.Query):
                drv.call(lambda core, now: core.respond(now, e, f"hi from {name}".encode()))

        drv.subscribe(answer)
    qid = c.call("n1", lambda core, now: core.query(now, "who", b"?", filter_nodes=["n2", "n4"]))
    c.run(20.0)
    (done,) = [e for e in of(c, "n1", ev.QueryDone) if e.id == qid]
    assert done.acks == ("n2", "n4") and done.responders == ("n2", "n4")
    resp = sorted((e.node, e.payload) for e in of(c, "n1", ev.QueryResponse) if e.id == qid)
    assert resp == [("n2", b"hi from n2"), ("n4", b"hi from n4")]
    # only the filtered nodes saw the query
    assert sorted(x for x in c.sim.names if of(c, x, ev.Query)) == ["n2", "n4"]


def test_query_with_tag_regex_filter_and_default_timeout(cluster_factory):
    tags = {"n1": {"role": "web"}, "n2": {"role": "web-2"}, "n3": {"role": "db"}, "n4": {}}
    c = cluster_factory(4, seed=26, tags=tags)
    c.run(10.0)
    t0 = c.sim.now
    qid = c.call(
        "n3", lambda core, now: core.query(now, "ping", b"", filter_tags={"role": "web.*"})
    )
    c.run(30.0)
    (done,) = [e for e in of(c, "n3", ev.QueryDone) if e.id == qid]
    assert done.acks == ("n1", "n2")  # n3 is db, n4 has no role tag
    assert done.responders == ()
    (rec,) = c.tracer.of("gossip.query_done")
    assert rec["t"] - t0 == pytest.approx(query_timeout(LAN, 4), abs=1e-6)


def test_internal_query_handler_answers_and_is_not_published(cluster_factory):
    c = cluster_factory(5, seed=27)
    c.run(10.0)
    for x in c.sim.names:
        c.call(
            x,
            lambda core, now, x=x: core.register_internal_query(
                "_cf_key_list", lambda now, q: f"keys@{x}".encode()
            ),
        )
    qid = c.call("n2", lambda core, now: core.query(now, "_cf_key_list", b""))
    c.run(20.0)
    (done,) = [e for e in of(c, "n2", ev.QueryDone) if e.id == qid]
    assert done.responders == tuple(sorted(c.sim.names))
    payloads = sorted(e.payload for e in of(c, "n2", ev.QueryResponse) if e.id == qid)
    assert payloads == sorted(f"keys@{x}".encode() for x in c.sim.names)
    assert not any(of(c, x, ev.Query) for x in c.sim.names)


def test_respond_once_and_not_after_the_deadline(cluster_factory):
    c = cluster_factory(3, seed=28)
    c.run(10.0)
    qid = c.call("n1", lambda core, now: core.query(now, "q", b"", timeout=2.0))
    c.run(10.5)
    (q,) = of(c, "n2", ev.Query)
    assert q.id == qid
    assert c.call("n2", lambda core, now: core.respond(now, q, b"a"))
    assert not c.call("n2", lambda core, now: core.respond(now, q, b"b"))
    (q3,) = of(c, "n3", ev.Query)
    c.run(13.0)
    assert not c.call("n3", lambda core, now: core.respond(now, q3, b"late"))
    (done,) = of(c, "n1", ev.QueryDone)
    assert done.responders == ("n2",)


def test_bad_queries_and_events_are_dropped_and_counted(cluster_factory):
    c = cluster_factory(2, seed=29)
    c.run(5.0)
    bad = [
        QueryMsg(1, 1, "", b"", "n2", "n2:7946", (), {}, True, 1.0),  # no name
        QueryMsg(1, 2, "q", b"", "n2", "n2:7946", (), {}, True, -1.0),  # bad timeout
        QueryMsg(1, 3, "q", b"x" * 5000, "n2", "n2:7946", (), {}, True, 1.0),  # too big
        QueryMsg(1, 4, "q", b"", "n2", "n2:7946", (), {"role": "("}, True, 1.0),  # bad regex
        UserEventMsg(1, "", b"", False),
        UserEventMsg(1, "e", b"x" * 5000, False),
    ]
    for m in bad:
        c.call("n1", lambda core, now, m=m: core.on_message(now, "n2:7946", m, False))
    s = c.core("n1").serf.stats
    assert s["queries_invalid"] == 3 and s["events_invalid"] == 2
    assert s["queries_filtered"] == 1  # the bad regex matches nothing (no tag either)
    assert not of(c, "n1", ev.Query) and not of(c, "n1", ev.UserEvent)
    with pytest.raises(ValueError):
        c.call("n1", lambda core, now: core.user_event(now, "e", b"x" * 600))
    with pytest.raises(ValueError):
        c.call("n1", lambda core, now: core.query(now, "q", b"", timeout=0))


def test_queries_reach_every_member_even_with_a_tiny_retransmit_limit(cluster_factory):
    # Local profile, 8 members: broadcasts are sent only 2 x ceil(log10 9) = 2 times
    # per member, which alone reaches ~6 of 8; the querier re-sends to non-ackers.
    from clusterfunk.gossip.config import LOCAL

    c = cluster_factory(8, seed=30, config=LOCAL)
    c.run(5.0)
    ids = []
    for _ in range(15):
        ids.append(c.call("n1", lambda core, now: core.query(now, "q", b"")))
        c.run(c.sim.now + 2.0)
    dones = {e.id: e for e in of(c, "n1", ev.QueryDone)}
    assert all(dones[i].acks == tuple(sorted(c.sim.names)) for i in ids)
    assert c.core("n1").serf.stats["query_resends"] > 0
    # every member saw each query exactly once
    for x in c.sim.names:
        assert sorted(q.id for q in of(c, x, ev.Query)) == sorted(ids)


def test_full_size_tags_events_and_queries_never_make_an_oversize_datagram(cluster_factory):
    from clusterfunk.gossip.core import encoded_tags_size

    tags = {f"n{i}": {"ep.raft": f"n{i}:8300", "blob": chr(96 + i) * 470} for i in range(1, 13)}
    assert all(encoded_tags_size(t) <= 512 for t in tags.values())
    c = cluster_factory(12, seed=32, tags=tags)
    c.run(10.0)
    c.call("n3", lambda core, now: core.user_event(now, "big", b"p" * 500))
    c.call("n4", lambda core, now: core.query(now, "big", b"q" * 1000))
    c.call("n5", lambda core, now: core.set_tags(now, {"blob": "z" * 500}))
    c.run(60.0)
    assert all(c.driver(x).stats.oversize == 0 for x in c.sim.names)
    assert all(c.driver(x).stats.datagrams_out > 0 for x in c.sim.names)
    for x in c.sim.names:
        assert c.core(x).member("n5").tags == {"blob": "z" * 500}
        assert c.core(x).member("n7").tags == tags["n7"]
        assert [e.name for e in of(c, x, ev.UserEvent)] == ["big"]
    with pytest.raises(ValueError):  # a query whose filters cannot fit a datagram
        c.call("n1", lambda core, now: core.query(now, "q", b"", filter_nodes=["x" * 60] * 30))
