"""The routing client's rules, driven by hand (no network, no clock): map learning,
routing to the owner, moved / busy / no-answer retries with the same id, the
deadline, and ignoring late or foreign answers."""

from __future__ import annotations

import random
from typing import Any

from clusterfunk.routing.client import ClientConfig, Finished, RoutingClient
from clusterfunk.routing.messages import MapAnswer, MapQuery, Reply, Request
from clusterfunk.sharding import ShardMap

M, _ = ShardMap(12).update(["a", "b"])
M2, _ = M.update(["a", "b", "c"])
EPS = {"a": "a:8600", "b": "b:8600", "c": "c:8600"}


def out(c: RoutingClient) -> tuple[list[tuple[str, Any]], list[Any]]:
    o = c.drain()
    if o is None:
        return [], []
    return [(s.dest, s.msg) for s in o.sends], list(o.events)


def ready() -> RoutingClient:
    c = RoutingClient("cl", random.Random(1), ["seed:8600"],
                      ClientConfig(attempt_timeout=0.5, refresh_interval=2.0))
    c.start(0.0)
    sends, _ = out(c)
    assert sends == [("seed:8600", MapQuery(0))]
    c.on_message(0.01, "seed:8600", MapAnswer(5, M.encode(), EPS, "a"), True)
    out(c)
    assert c.index == 5 and c.map == M
    return c


def test_a_request_goes_to_the_owner_and_ends_ok():
    c = ready()
    rid = c.request(1.0, 7, b"x", 2.0)
    [(dest, req)] = out(c)[0]
    owner = M.owner(7 % 12)
    assert owner is not None
    assert dest == EPS[owner] and isinstance(req, Request)
    assert (req.client, req.id, req.key, req.attempt) == ("cl", rid, 7, 1)
    assert abs(req.budget - 2.0) < 1e-9
    c.on_message(1.01, dest, Reply("cl", rid, "ok", b"r", node=owner, attempt=1), True)
    _s, [ev] = out(c)
    assert isinstance(ev, Finished) and ev.ok and ev.payload == b"r" and c.pending == {}


def test_moved_retries_at_once_at_the_named_owner_with_the_same_id_and_refreshes():
    c = ready()
    rid = c.request(1.0, 7, b"x", 2.0)
    [(dest, _req)] = out(c)[0]
    c.on_message(1.01, dest, Reply("cl", rid, "moved", owner="c", address="c:8600",
                                   index=9, node="a", attempt=1), True)
    sends, events = out(c)
    assert events == []
    assert ("c:8600", Request("cl", rid, 7, b"x", sends[-1][1].budget, 0, 2)) in sends
    assert (dest, MapQuery(5)) in sends  # newer index named: ask the answering node
    c.on_message(1.02, dest, MapAnswer(9, M2.encode(), EPS, "a"), True)
    assert c.index == 9 and c.map == M2
    # a late non-ok answer to attempt 1 is ignored; ok from any attempt ends it
    c.on_message(1.03, dest, Reply("cl", rid, "busy", node="a", attempt=1), True)
    assert out(c) == ([], []) and c.stats["stale_replies"] == 1
    c.on_message(1.04, "c:8600", Reply("cl", rid, "ok", b"v", node="c", attempt=2), True)
    assert out(c)[1][0].ok


def test_busy_backs_off_and_no_answer_retries_until_the_deadline_with_a_reason():
    c = ready()
    rid = c.request(1.0, 7, b"x", 1.2)
    [(dest, _req)] = out(c)[0]
    c.on_message(1.01, dest, Reply("cl", rid, "busy", error="queue full", node="a",
                                   attempt=1), True)
    assert out(c) == ([], [])
    t = c.next_deadline()
    assert 1.01 < t <= 1.01 + c.cfg.backoff_cap
    c.on_tick(t)
    [(dest2, req2)] = [s for s in out(c)[0] if isinstance(s[1], Request)]
    assert req2.id == rid and req2.attempt == 2 and dest2 == dest
    # no answer: retried at attempt_timeout, then the deadline ends it, saying why
    now = t
    while c.pending:
        now = c.next_deadline()
        c.on_tick(now)
        _s, events = out(c)
    [ev] = events
    assert not ev.ok and abs(now - 2.2) < 1e-9 and abs(ev.latency - 1.2) < 1e-9
    assert "deadline passed" in ev.error and "no answer from" in ev.error
    assert c.stats["timeouts"] >= 1


def test_an_error_answer_ends_the_request_and_foreign_answers_are_dropped():
    c = ready()
    rid = c.request(1.0, 3, b"x", 2.0)
    [(dest, _req)] = out(c)[0]
    c.on_message(1.01, dest, Reply("other", rid, "ok", b"!", attempt=1), True)
    assert out(c) == ([], []) and c.stats["malformed"] == 1  # not our client id
    c.on_message(1.02, dest, Reply("cl", rid, "error", error="nope", node="a", attempt=1),
                 True)
    [ev] = out(c)[1]
    assert not ev.ok and ev.outcome == "error" and ev.error == "nope"
    # a stale map answer (older index) changes nothing
    c.on_message(1.03, dest, MapAnswer(3, M2.encode(), {}, "a"), True)
    assert c.index == 5 and c.endpoints == EPS


def test_requests_wait_for_the_first_map():
    c = RoutingClient("cl", random.Random(1), ["seed:8600"])
    c.start(0.0)
    out(c)
    rid = c.request(0.1, 5, b"x", 3.0)
    assert [m for _d, m in out(c)[0] if isinstance(m, Request)] == []
    c.on_message(0.2, "seed:8600", MapAnswer(5, M.encode(), EPS, "a"), True)
    [(dest, req)] = [s for s in out(c)[0] if isinstance(s[1], Request)]
    assert req.id == rid and dest == EPS[str(M.owner(5))]


def test_a_moved_from_an_older_map_is_not_followed():
    c = ready()
    rid = c.request(1.0, 7, b"x", 2.0)
    [(dest, _req)] = out(c)[0]
    other = "c:8600"
    c.on_message(1.01, dest, Reply("cl", rid, "moved", owner="c", address=other, index=3,
                                   node="a", attempt=1), True)
    assert out(c) == ([], [])  # a lagging node: no hop to its stale owner
    t = c.next_deadline()
    c.on_tick(t)
    [(dest2, _r)] = [s for s in out(c)[0] if isinstance(s[1], Request)]
    assert dest2 == dest  # our own (newer) map decides
