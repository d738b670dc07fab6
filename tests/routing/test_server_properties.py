"""Property: whatever the coordinator, the map and the network do, the request server
calls ``service.handle`` only for a shard the coordinator serves at that instant and
the service acquired, and answers every request exactly once (at the latest when
its queue or forward bound passes)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.routing.api import ForwardMode
from clusterfunk.routing.messages import Handoff, HandoffAck, Reply, Request
from clusterfunk.routing.server import RequestServer, ServerConfig

from .helpers import Counters
from .test_server_rules import SHARDS, FakeCoord, FakeMembers, record

MAPS = [["a", "b"], ["a", "b", "c"], ["b", "c"], ["a"]]

op = st.one_of(
    st.tuples(st.just("req"), st.integers(0, 40)),
    st.tuples(st.just("gain"), st.frozensets(st.integers(0, SHARDS - 1), max_size=4)),
    st.tuples(st.just("lose"), st.frozensets(st.integers(0, SHARDS - 1), max_size=4)),
    st.tuples(st.just("lease"), st.booleans()),
    st.tuples(st.just("pending"), st.integers(-1, len(MAPS) - 1)),
    st.tuples(st.just("commit"), st.integers(0, len(MAPS) - 1)),
    st.tuples(st.just("tick"), st.floats(0.0, 0.4)),
    st.tuples(st.just("handoff"), st.frozensets(st.integers(0, SHARDS - 1), max_size=3)),
    st.tuples(st.just("ack"), st.frozensets(st.integers(0, SHARDS - 1), max_size=3)),
    st.tuples(st.just("reply"), st.integers(1, 30)),
)


class CheckedCoord(FakeCoord):
    lease: bool = True

    def serves(self, now: float, shard: int) -> bool:
        return self.lease and shard in self.owned


class Guarded(Counters):
    def __init__(self, coord: CheckedCoord, clock: list[float]) -> None:
        super().__init__("a")
        self.coord = coord
        self.clock = clock
        self.violations: list[str] = []  # (the server turns exceptions into errors)

    def handle(self, shard: int, key: int, payload: bytes) -> bytes:
        if not self.coord.serves(self.clock[0], shard):
            self.violations.append(f"handled shard {shard}, not served")
        if shard not in self.shards:
            self.violations.append(f"handled shard {shard}, not acquired")
        return super().handle(shard, key, payload)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(op, max_size=60), forward=st.booleans())
def test_handle_only_while_served_and_every_request_answered_once(ops, forward):
    cfg = ServerConfig(forward=ForwardMode.FORWARD if forward else ForwardMode.MOVED,
                       max_queue=5, queue_wait=0.3, forward_wait=0.3, handoff_wait=0.2)
    coord = CheckedCoord(committed=record(5, MAPS[0]))
    clock = [0.0]
    svc = Guarded(coord, clock)
    srv = RequestServer("a", svc, coord, FakeMembers(["a", "b", "c"]), cfg)
    srv.note_map(record(3, ["b"]))  # before map 5, b held everything: gains wait for it
    srv.note_map(coord.committed)
    srv.start(0.0)
    index = 5
    rid = 0
    answers: dict[int, int] = {}

    def collect() -> None:
        out = srv.drain()
        if out is None:
            return
        for s in out.sends:
            if isinstance(s.msg, Reply) and s.dest == "cl:1":
                answers[s.msg.id] = answers.get(s.msg.id, 0) + 1

    for kind, arg in ops:
        now = clock[0]
        if kind == "req":
            rid += 1
            srv.on_message(now, "cl:1", Request("cl", rid, arg, b"inc", 1.0), True)
        elif kind == "gain":
            got = frozenset(arg) - coord.owned
            coord.owned |= got
            if got:
                srv.ownership(now, got, index)
        elif kind == "lose":
            lost = frozenset(arg) & coord.owned
            coord.owned -= lost
            if lost:
                srv.release(now, index, lost)
        elif kind == "lease":
            coord.lease = arg
        elif kind == "pending":
            index += 1
            coord.pending = record(index, MAPS[arg]) if arg >= 0 else None
            srv.map_changed(now)
        elif kind == "commit":
            index += 1
            coord.committed, coord.pending = record(index, MAPS[arg]), None
            srv.note_map(coord.committed)
            srv.map_changed(now)
        elif kind == "tick":
            clock[0] = now + arg
            srv.on_tick(clock[0])
        elif kind == "handoff":
            srv.on_message(now, "b:8600", Handoff("b", index, {s: b"[]" for s in arg}), True)
        elif kind == "ack":
            srv.on_message(now, "b:8600", HandoffAck("b", index, tuple(sorted(arg))), True)
        elif kind == "reply" and arg <= rid:
            srv.on_message(now, "b:8600", Reply("cl", arg, "ok", b"9", node="b"), True)
        collect()
        assert all(n == 1 for n in answers.values()), answers
        assert svc.violations == []
    # past every bound, every request has exactly one answer
    clock[0] += 1.0
    srv.on_tick(clock[0])
    collect()
    assert sorted(answers) == list(range(1, rid + 1))
    assert all(n == 1 for n in answers.values())
    assert srv.queue == [] and srv.forwards == {}
