"""The request server's rules against fake views (no network, no clock): serve only
what the coordinator serves and the service acquired; moved / forward; the
handoff queue's bounds (busy, never silent); release -> handoff -> Released; a
gain waits (bounded) for state from a live previous owner; parked state moves on."""

from __future__ import annotations

from typing import Any

import attrs

from clusterfunk.cluster.messages import map_digest
from clusterfunk.cluster.statemachine import MapRecord
from clusterfunk.cluster.views import MemberInfo
from clusterfunk.gossip.messages import Status
from clusterfunk.routing.api import TAG_REQUESTS, ForwardMode
from clusterfunk.routing.messages import Handoff, HandoffAck, MapAnswer, MapQuery, Reply, Request
from clusterfunk.routing.server import Released, RequestServer, ServerConfig
from clusterfunk.runtime.api import Output
from clusterfunk.sharding import ShardMap

from .helpers import Counters

SHARDS = 12


def record(index: int, nodes: list[str]) -> MapRecord:
    m, _ = ShardMap(SHARDS).update(nodes)
    blob = m.encode()
    return MapRecord(index, nodes[0], 1, "", tuple(m.nodes), 0, blob, map_digest(blob))


@attrs.define
class FakeCoord:
    committed: MapRecord
    pending: MapRecord | None = None
    owned: set[int] = attrs.Factory(set)
    state: str = "operational"

    def serves(self, now: float, shard: int) -> bool:
        return shard in self.owned


class FakeMembers:
    def __init__(self, names: list[str]) -> None:
        self.infos = {n: MemberInfo(n, Status.ALIVE, {TAG_REQUESTS: f"{n}:8600"})
                      for n in names}

    @property
    def joined(self) -> bool:
        return True

    def member(self, name: str) -> MemberInfo | None:
        return self.infos.get(name)

    def members(self) -> list[MemberInfo]:
        return [self.infos[n] for n in sorted(self.infos)]


def server(name: str = "a", cfg: ServerConfig | None = None,
           nodes: tuple[str, ...] = ("a", "b")) -> tuple[RequestServer, FakeCoord, Counters]:
    coord = FakeCoord(committed=record(5, list(nodes)))
    svc = Counters(name)
    srv = RequestServer(name, svc, coord, FakeMembers(["a", "b", "c"]), cfg)
    srv.note_map(coord.committed)
    srv.start(0.0)
    return srv, coord, svc


def sends(srv: RequestServer) -> list[tuple[str, Any]]:
    out = srv.drain()
    return [(s.dest, s.msg) for s in out.sends] if out is not None else []


def events(srv: RequestServer, out_list: list[Any] | None = None) -> list[Any]:
    out = srv.drain()
    return list(out.events) if out is not None else []


def req(key: int, rid: int = 1, budget: float = 5.0) -> Request:
    return Request("cl", rid, key, b"inc", budget)


def mine(srv: RequestServer, coord: FakeCoord) -> list[int]:
    m = ShardMap.decode(coord.committed.blob)
    return list(m.shards_of(srv.id))


def test_serves_only_acquired_shards_the_coordinator_serves_and_moves_the_rest():
    srv, coord, svc = server()
    a_shards = mine(srv, coord)
    b_shard = next(s for s in range(SHARDS) if s not in a_shards)
    # the coordinator serves a's shards but the service has not acquired them yet:
    # the request waits (queue rule), it is not served
    coord.owned = set(a_shards)
    srv.on_message(0.0, "cl:1", req(a_shards[0]), True)
    assert sends(srv) == [] and srv.stats["queued"] == 1
    srv.ownership(0.0, frozenset(a_shards), 5)  # first map: nothing to wait for
    [(dest, reply)] = sends(srv)
    assert dest == "cl:1" and reply.outcome == "ok" and reply.payload == b"1"
    assert svc.acquired == [(frozenset(a_shards), {})]
    # b's shard: moved, naming b, its address and the map index
    srv.on_message(0.1, "cl:1", req(b_shard, 2), True)
    [(dest, reply)] = sends(srv)
    assert (reply.outcome, reply.owner, reply.address, reply.index) == ("moved", "b",
                                                                        "b:8600", 5)
    # the coordinator stops serving (a lease ran out): no ok from here any more
    coord.owned = set()
    srv.on_message(0.2, "cl:1", req(a_shards[0], 3), True)
    assert sends(srv) == [] and srv.stats["queued"] == 2
    assert srv.stats["ok"] == 1


def test_the_handoff_queue_is_bounded_in_time_and_count_and_answers_busy():
    srv, coord, _svc = server(cfg=ServerConfig(max_queue=2, queue_wait=0.5))
    s = mine(srv, coord)[0]
    for i in range(3):
        srv.on_message(0.0, "cl:1", req(s, i + 1), True)
    [(_d, full)] = sends(srv)  # the third finds the queue full
    assert full.outcome == "busy" and full.id == 3 and "queue full" in full.error
    assert srv.next_deadline() == 0.5
    srv.on_tick(0.5)
    replies = [m for _d, m in sends(srv)]
    assert [(r.id, r.outcome) for r in replies] == [(1, "busy"), (2, "busy")]
    assert srv.queue == [] and srv.stats["busy"] == 3
    # a request's own budget bounds its wait too
    srv.on_message(1.0, "cl:1", req(s, 9, budget=0.1), True)
    assert srv.next_deadline() == 1.1


def test_queued_requests_move_when_the_map_gives_the_shard_away():
    srv, coord, _svc = server()
    s = mine(srv, coord)[0]
    srv.on_message(0.0, "cl:1", req(s), True)
    assert sends(srv) == []
    coord.pending = record(7, ["b", "c"])
    srv.map_changed(0.1)
    [(_d, reply)] = sends(srv)
    assert reply.outcome == "moved" and reply.owner in ("b", "c") and reply.index == 7


def test_forward_mode_relays_the_owners_answer_and_busy_without_one():
    srv, coord, _svc = server(cfg=ServerConfig(forward=ForwardMode.FORWARD, forward_wait=0.3))
    b_shard = next(s for s in range(SHARDS) if s not in mine(srv, coord))
    srv.on_message(0.0, "cl:1", req(b_shard), True)
    [(dest, fwd)] = sends(srv)
    assert dest == "b:8600" and fwd.hops == 1 and fwd.client == "cl"
    srv.on_message(0.01, "b:8600", Reply("cl", 1, "ok", b"7", node="b"), True)
    [(dest, relayed)] = sends(srv)
    assert dest == "cl:1" and relayed.payload == b"7" and relayed.node == "a"
    # a forwarded copy is never forwarded again: moved
    srv.on_message(0.02, "x:1", attrs.evolve(req(b_shard, 2), hops=1), True)
    [(_d, moved)] = sends(srv)
    assert moved.outcome == "moved"
    # no answer from the owner: busy at forward_wait
    srv.on_message(1.0, "cl:1", req(b_shard, 3), True)
    sends(srv)
    srv.on_tick(1.3)
    [(_d, busy)] = sends(srv)
    assert busy.outcome == "busy" and busy.id == 3
    # an answer nobody asked for (or from another node) is dropped and counted
    srv.on_message(1.4, "c:8600", Reply("cl", 3, "ok", b"x", node="c"), True)
    assert sends(srv) == [] and srv.stats["stale_replies"] == 1


def test_release_hands_state_to_the_new_owner_before_it_reports_released():
    srv, coord, svc = server()
    a_shards = mine(srv, coord)
    coord.owned = set(a_shards)
    srv.ownership(0.0, frozenset(a_shards), 5)
    srv.on_message(0.0, "cl:1", req(a_shards[0]), True)
    sends(srv)
    # a proposal gives everything to b: the coordinator releases a's shards
    coord.pending = record(7, ["b"])
    coord.owned = set()
    srv.release(0.1, 7, frozenset(a_shards))
    out = srv.drain()
    assert out is not None and out.events == []  # not released before the handoff
    [send] = out.sends
    assert send.dest == "b:8600" and isinstance(send.msg, Handoff)
    assert set(send.msg.states) == {a_shards[0]}
    assert set(send.msg.empty) == set(a_shards) - {a_shards[0]}
    assert svc.released == [frozenset(a_shards)]
    srv.on_message(0.12, "b:8600", HandoffAck("b", 7, tuple(a_shards)), True)
    assert events(srv) == [Released(7)]
    assert srv.parked == {}  # handed over: no second copy here
    # without an ack, Released still comes at handoff_ack_wait (never held forever)
    srv2, coord2, _ = server()
    sh = mine(srv2, coord2)
    coord2.owned = set(sh)
    srv2.ownership(0.0, frozenset(sh), 5)
    coord2.pending = record(7, ["b"])
    srv2.release(0.1, 7, frozenset(sh))
    srv2.drain()
    srv2.on_tick(0.1 + srv2.cfg.handoff_ack_wait)
    assert events(srv2) == [Released(7)]
    assert srv2.stats["handoff_ack_timeouts"] == 1


def test_a_gain_waits_for_the_live_previous_owners_state_bounded():
    srv, coord, svc = server(name="c", nodes=("a", "b"))
    old = ShardMap.decode(coord.committed.blob)
    coord.committed = record(9, ["a", "b", "c"])
    srv.note_map(coord.committed)
    gained = ShardMap.decode(coord.committed.blob).shards_of("c")
    coord.owned = set(gained)
    srv.ownership(1.0, frozenset(gained), 9)
    assert svc.acquired == [] and set(srv.waiting) == set(gained)  # a, b are live
    s0 = gained[0]
    srv.on_message(1.0, "cl:1", req(s0), True)  # waits in the queue meanwhile
    src = old.owner(s0)
    assert src is not None
    from_src = [s for s in gained if old.owner(s) == src]
    srv.on_message(1.1, f"{src}:8600", Handoff(src, 9, {s0: b"[[0, 41]]"},
                                                tuple(from_src[1:])), True)
    out = srv.drain()
    assert out is not None
    msgs = [s.msg for s in out.sends]
    assert HandoffAck("c", 9, tuple(sorted(from_src))) in msgs
    assert [m.payload for m in msgs if isinstance(m, Reply)] == [b"42" if s0 == 0 else b"1"]
    assert svc.acquired[0] == (frozenset(from_src), {s0: b"[[0, 41]]"})
    # the other owner never sends: acquired without state at handoff_wait
    rest = set(gained) - set(from_src)
    assert rest and set(srv.waiting) == rest
    srv.on_tick(1.0 + srv.cfg.handoff_wait)
    assert svc.acquired[1] == (frozenset(rest), {}) and srv.stats["handoff_timeouts"] == len(rest)


def test_state_for_a_shard_not_served_here_moves_on_and_late_state_is_dropped():
    srv, coord, _svc = server(name="c", nodes=("a", "b"))
    # c got state under a proposal that was superseded: the latest map gives it to b
    coord.pending = record(11, ["b"])
    srv.on_message(0.0, "a:8600", Handoff("a", 10, {3: b"[[3, 5]]"}), True)
    out = srv.drain()
    assert out is not None
    dests = {(s.dest, type(s.msg).__name__) for s in out.sends}
    assert ("a:8600", "HandoffAck") in dests and ("b:8600", "Handoff") in dests
    srv.on_message(0.1, "b:8600", HandoffAck("b", 11, (3,)), True)
    assert srv.parked == {} and srv.outbox == {}
    # state for a shard already served here is late: acked, dropped, counted
    coord.pending = None
    coord.committed = record(12, ["a", "b", "c"])
    mine_now = mine(srv, coord)
    coord.owned = set(mine_now)
    srv.note_map(coord.committed)
    srv.ownership(0.2, frozenset(mine_now), 12)
    srv.on_tick(0.2 + srv.cfg.handoff_wait)  # waited for a and b in vain
    assert set(mine_now) <= srv.active
    srv.drain()
    srv.on_message(0.8, "a:8600", Handoff("a", 4, {mine_now[0]: b"[]"}), True)
    assert srv.stats["late_handoffs"] == 1 and mine_now[0] not in srv.parked
    # state naming shards outside the map is hostile: dropped, counted, not acked
    srv.drain()
    srv.on_message(0.9, "a:8600", Handoff("a", 4, {SHARDS + 5: b""}), True)
    assert srv.drain() is None and srv.stats["malformed"] == 1


def test_map_query_answers_the_committed_map_and_the_request_addresses():
    srv, coord, _svc = server()
    srv.on_message(0.0, "x:1", MapQuery(0), True)
    [(dest, ans)] = sends(srv)
    assert isinstance(ans, MapAnswer) and dest == "x:1" and ans.index == 5
    assert ShardMap.decode(ans.blob) == ShardMap.decode(coord.committed.blob)
    assert ans.endpoints == {"a": "a:8600", "b": "b:8600", "c": "c:8600"}
    srv.on_message(0.0, "x:1", MapQuery(5), True)  # current already: no blob
    [(_d, ans)] = sends(srv)
    assert ans.blob == b"" and ans.index == 5
    # datagrams are refused on the request port
    srv.on_message(0.0, "x:1", MapQuery(0), False)
    assert sends(srv) == [] and srv.stats["malformed"] == 1


def test_stale_parked_state_waits_for_the_newer_handoff():
    """c parked state for a shard long ago (version 2); b served it since and now hands
    it back at map 9: c waits for b's newer state instead of serving the stale one."""
    srv, coord, svc = server(name="c", nodes=("a", "b"))
    s = next(x for x in ShardMap.decode(record(9, ["a", "b", "c"]).blob).shards_of("c")
             if ShardMap.decode(coord.committed.blob).owner(x) == "b")
    srv.parked[s] = (2, b"[[0, 1]]")  # an old fence left it here, never acknowledged
    coord.committed = record(9, ["a", "b", "c"])
    srv.note_map(coord.committed)
    coord.owned = {s}
    srv.ownership(1.0, frozenset({s}), 9)
    assert svc.acquired == [] and s in srv.waiting
    srv.on_message(1.1, "b:8600", Handoff("b", 9, {s: b"[[0, 7]]"}), True)
    assert svc.acquired == [(frozenset({s}), {s: b"[[0, 7]]"})]
    # an older version arriving while waiting does not end the wait
    srv2, coord2, svc2 = server(name="c", nodes=("a", "b"))
    coord2.committed = record(9, ["a", "b", "c"])
    srv2.note_map(coord2.committed)
    coord2.owned = {s}
    srv2.ownership(1.0, frozenset({s}), 9)
    srv2.on_message(1.1, "a:8600", Handoff("a", 4, {s: b"[[0, 1]]"}), True)
    assert svc2.acquired == [] and s in srv2.waiting
    srv2.on_message(1.2, "b:8600", Handoff("b", 9, {s: b"[[0, 7]]"}), True)
    assert svc2.acquired == [(frozenset({s}), {s: b"[[0, 7]]"})]


def test_a_joiner_holds_a_handoff_that_arrives_before_its_first_map():
    """Parked state rule, early: the previous owner releases shards when it applies
    the proposal that gives them to a joiner, which may apply it later; the handoff
    is held (bounded, not acknowledged) until the joiner has a map, then parked and
    acknowledged, and the gain at the commit acquires it. (Dropping it restarted
    every moved counter at 1: the README example.)"""
    coord = FakeCoord(committed=None)  # type: ignore[arg-type]
    svc = Counters("c")
    srv = RequestServer("c", svc, coord, FakeMembers(["a", "b", "c"]),
                        ServerConfig(max_early_handoffs=1))
    srv.start(0.0)
    old = record(5, ["a", "b"])
    new = record(7, ["a", "b", "c"])
    gained = ShardMap.decode(new.blob).shards_of("c")
    s0 = gained[0]
    src = ShardMap.decode(old.blob).owner(s0)
    assert src is not None
    srv.on_message(0.1, f"{src}:8600", Handoff(src, 7, {s0: b"[[0, 41]]"}), True)
    srv.on_message(0.1, "x:8600", Handoff("x", 7, {s0: b"[[0, 1]]"}), True)  # over the bound
    assert srv.drain() is None and srv.stats["early_handoffs"] == 2 and srv.parked == {}
    # the joiner applies the log: the old commit, then the proposal
    coord.committed, coord.pending = old, new
    srv.note_map(old)
    srv.map_changed(0.2)
    acks = [(s.dest, s.msg) for s in (srv.drain() or Output()).sends
            if isinstance(s.msg, HandoffAck)]
    assert acks == [(f"{src}:8600", HandoffAck("c", 7, (s0,)))]
    # the commit: the gain acquires the handed-over state at once
    coord.committed, coord.pending = new, None
    srv.note_map(new)
    coord.owned = set(gained)
    srv.ownership(0.3, frozenset(gained), 7)
    assert (s0, b"[[0, 41]]") in [(s, st.get(s)) for _sh, st in svc.acquired for s in st]
    srv.on_message(0.3, "cl:1", req(s0), True)
    replies = [s.msg for s in (srv.drain() or Output()).sends if isinstance(s.msg, Reply)]
    assert [r.payload for r in replies] == [b"42" if s0 == 0 else b"1"]


def test_a_lagging_receiver_holds_state_from_a_proposal_it_has_not_applied():
    """Parked state rule, ahead: state handed over under proposal 9 reaches a node
    still at map 5. It is held -- not sent on to the shard's owner in the stale map,
    which would then drop it as late -- until the node applies proposal 9, then
    parked and acknowledged. (20 nodes, --app demo, seed 1: a get returned 0 after
    an acknowledged 1.) Held handoffs expire after queue_wait."""
    srv, coord, _svc = server(name="c", nodes=("a", "b"))
    new = record(9, ["a", "b", "c"])
    gained = ShardMap.decode(new.blob).shards_of("c")
    s0 = gained[0]
    srv.on_message(1.0, "a:8600", Handoff("a", 9, {s0: b"[[0, 7]]"}), True)
    assert srv.drain() is None and srv.parked == {} and srv.stats["early_handoffs"] == 1
    coord.pending = new
    srv.map_changed(1.1)
    sent = [(s.dest, s.msg) for s in (srv.drain() or Output()).sends]
    assert sent == [("a:8600", HandoffAck("c", 9, (s0,)))]  # nothing sent on to b
    assert srv.parked[s0] == (9, b"[[0, 7]]")
    # held handoffs do not outlive queue_wait: a stale one is purged by the next
    srv.on_message(2.0, "x:8600", Handoff("x", 50, {s0: b"[]"}), True)
    srv.on_message(2.0 + srv.cfg.queue_wait, "y:8600", Handoff("y", 51, {s0: b"[]"}), True)
    assert [m.node for _t, _src, m in srv._early] == ["y"]


def test_parked_state_whose_retry_is_moot_leaves_no_past_deadline():
    """Parked state rule (sending): state sent on to another owner, whose map then
    makes this node the owner, has no retry due any more -- its timer must not stay
    in the past (it made the driver tick forever at one instant: --app demo seed 3)."""
    srv, coord, _svc = server(name="c", nodes=("a", "b"))
    coord.pending = record(11, ["b"])
    srv.on_message(0.0, "a:8600", Handoff("a", 10, {3: b"[[3, 5]]"}), True)
    assert ("b:8600", "Handoff") in {(d, type(m).__name__) for d, m in sends(srv)}
    coord.pending = record(12, ["c"])  # the shard is this node's in the latest map
    srv.map_changed(0.05)
    t = srv.cfg.handoff_retry + 0.05
    srv.on_tick(t)
    assert srv.next_deadline() > t


def test_a_shard_gained_back_after_a_superseded_proposal_waits_for_its_state():
    """Gain rule, handed away: proposal 7 moves a's shards to b (a hands their state
    over, b acks); proposal 7 is superseded and the committed map 5 gives them back
    to a. a waits for the state to come back from b instead of serving without it
    (b's copy, arriving a moment later, was dropped as late: --app demo seed 3 lost
    21 acknowledged increments)."""
    srv, coord, _svc = server()
    a_shards = mine(srv, coord)
    s0 = a_shards[0]
    coord.owned = set(a_shards)
    srv.ownership(0.0, frozenset(a_shards), 5)
    for _ in range(3):
        srv.on_message(0.0, "cl:1", req(s0), True)
    sends(srv)
    coord.pending = record(7, ["b"])
    coord.owned = set()
    srv.release(0.1, 7, frozenset(a_shards))
    [handoff] = [m for _d, m in sends(srv) if isinstance(m, Handoff)]
    srv.on_message(0.12, "b:8600", HandoffAck("b", 7, tuple(a_shards)), True)
    events(srv)
    # the proposal is superseded: the committed map 5 is in force for a again
    coord.pending = record(8, ["a", "b"])
    coord.owned = set(a_shards)
    srv.ownership(0.3, frozenset(a_shards), 5)
    assert set(srv.waiting) == set(a_shards)  # not acquired without its state
    srv.on_message(0.31, "b:8600", Handoff("b", 7, dict(handoff.states), handoff.empty), True)
    srv.on_message(0.32, "cl:1", req(s0, rid=9), True)
    replies = [m for _d, m in sends(srv) if isinstance(m, Reply)]
    assert [r.payload for r in replies] == [b"4"]  # the three increments came back
