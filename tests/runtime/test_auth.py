"""Identity on every message (issue 11): the authorizer rules, the driver hook, and
the whole path over mutual TLS on loopback (forged sender, datagrams to Raft,
forged LeaveRequest / Ack)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import trio
import trustme

from clusterfunk import wire
from clusterfunk.cluster.messages import Ack, LeaveRequest
from clusterfunk.raft.messages import AppendEntries, Heartbeat, RequestVote
from clusterfunk.runtime.api import Output
from clusterfunk.runtime.auth import (
    coordination_authorizer,
    coordination_rule,
    raft_authorizer,
    raft_rule,
)
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.net import open_transport
from clusterfunk.runtime.trio_host import TrioClock
from tests.runtime.helpers import wait_for
from tests.runtime.test_tls import write_node

LOOP = "127.0.0.1:0"


def test_raft_rule() -> None:
    hb = Heartbeat(5, "n1", 0, 0)
    assert raft_rule("n1", hb, True) is None
    assert raft_rule("n1", hb, False) == "raft message in a datagram"
    assert raft_rule("mallory", hb, True) == "sender is not the authenticated identity"
    assert raft_rule(None, hb, True) == "sender is not the authenticated identity"
    assert raft_rule(None, hb, True, require_identity=False) is None
    assert raft_rule(None, hb, False, require_identity=False) == "raft message in a datagram"
    assert raft_rule("n1", Ack("n1", 3), True) == "not a raft message"


def test_coordination_rule() -> None:
    assert coordination_rule("b", LeaveRequest("b"), True) is None
    assert coordination_rule("mallory", LeaveRequest("b"), True) == \
        "node is not the authenticated identity"
    assert coordination_rule("a", Ack("b", 7), True) == "node is not the authenticated identity"
    assert coordination_rule("b", Ack("b", 7), True) is None
    assert coordination_rule("b", Ack("b", 7), False) == "coordination message in a datagram"
    assert coordination_rule(None, LeaveRequest("b"), True, require_identity=False) is None
    assert coordination_rule("b", Heartbeat(1, "b", 0, 0), True) == \
        "not a coordination message"


class Seen:
    """A core that records every message it is given."""

    def __init__(self) -> None:
        self.msgs: list[tuple[str, Any, bool]] = []

    def start(self, now: float) -> None: ...

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.msgs.append((src, msg, stream))

    def on_tick(self, now: float) -> None: ...

    def next_deadline(self) -> float:
        return math.inf

    def drain(self) -> Output | None:
        return None


class NullTransport:
    local_address = "127.0.0.1:1"
    max_datagram = 1400

    def bind(self, handler: Any) -> None: ...

    def send_datagram(self, dest: str, data: bytes) -> None: ...

    def send_frame(self, dest: str, data: bytes) -> None: ...


class NullClock:
    def now(self) -> float:
        return 0.0

    def schedule(self, driver: Any, deadline: float) -> None: ...


def test_driver_asks_the_authorizer_before_the_core() -> None:
    core = Seen()
    auth = raft_authorizer()
    d = Driver("n2", core, NullTransport(), NullClock(), authorizer=auth)
    d.start()
    hb = wire.encode(Heartbeat(3, "n1", 0, 0))
    d.on_frame_from("n1:8300", "n1", hb)
    d.on_frame_from("n1:8300", "mallory", hb)  # forged sender
    d.on_datagram("n1:8300", hb)  # Raft takes no datagrams
    d.on_frame("n1:8300", hb)  # no identity at all
    assert [m for _, m, _ in core.msgs] == [Heartbeat(3, "n1", 0, 0)]
    assert d.stats.unauthorized == 3
    assert auth.denied == {"sender is not the authenticated identity": 2,
                           "raft message in a datagram": 1}
    # without an authorizer the driver passes everything on, as before
    plain = Driver("n3", Seen(), NullTransport(), NullClock())
    plain.start()
    plain.on_datagram("x:1", hb)
    plain.on_frame_from("x:1", "mallory", hb)
    assert len(plain.core.msgs) == 2 and plain.stats.unauthorized == 0  # type: ignore[attr-defined]


async def test_forged_messages_over_tls_never_reach_the_cores(tmp_path: Path) -> None:
    """Mallory holds a real certificate of the cluster CA (her own name): her Raft
    frames claiming to be n1, her Raft datagrams and her LeaveRequest for b are
    refused; n1's and b's own messages get through."""
    ca = trustme.CA()
    tb = write_node(ca, tmp_path / "b", "b")
    tm = write_node(ca, tmp_path / "m", "mallory")
    t1 = write_node(ca, tmp_path / "n1", "n1")
    raft_core, coord_core = Seen(), Seen()
    ra, co = raft_authorizer(), coordination_authorizer()
    async with open_transport(LOOP, tls=tb) as braft, open_transport(LOOP, tls=tb) as bcoord, \
            open_transport(LOOP, tls=tm) as m, open_transport(LOOP, tls=t1) as n1, \
            trio.open_nursery() as nursery:
        clock = TrioClock(nursery)
        d_raft = Driver("b", raft_core, braft, clock, authorizer=ra)
        d_coord = Driver("b", coord_core, bcoord, clock, authorizer=co)
        d_raft.start()
        d_coord.start()
        for t in (m, n1):
            t.bind(Seen())
        t = 7
        forged = AppendEntries.make(t, "n1", 0, 0, (), 0)
        m.send_frame(braft.local_address, wire.encode(forged))
        m.send_frame(braft.local_address, wire.encode(RequestVote(2**40, "n1", 99, 99, False,
                                                                  True)))
        m.send_datagram(braft.local_address, wire.encode(Heartbeat(2**40, "mallory", 0, 0)))
        m.send_frame(bcoord.local_address, wire.encode(LeaveRequest("b")))
        m.send_frame(bcoord.local_address, wire.encode(Ack("b", 3)))
        n1.send_frame(braft.local_address, wire.encode(Heartbeat(t, "n1", 0, 0)))
        n1.send_frame(bcoord.local_address, wire.encode(Ack("n1", 3)))
        await wait_for(lambda: d_raft.stats.unauthorized == 3 and d_coord.stats.unauthorized == 2
                       and len(raft_core.msgs) == 1 and len(coord_core.msgs) == 1)
        assert raft_core.msgs == [(n1.local_address, Heartbeat(t, "n1", 0, 0), True)]
        assert coord_core.msgs == [(n1.local_address, Ack("n1", 3), True)]
        assert ra.denied == {"sender is not the authenticated identity": 2,
                             "raft message in a datagram": 1}
        assert co.denied == {"node is not the authenticated identity": 2}
        nursery.cancel_scope.cancel()


def test_the_raft_authorizer_decides_as_the_rule_and_counts_refusals_by_reason() -> None:
    msgs = [Heartbeat(5, "n1", 0, 0), RequestVote(2, "n2", 0, 0), Ack("n1", 3), object()]
    for require in (True, False):
        auth = raft_authorizer(require_identity=require)
        expected: dict[str, int] = {}
        for msg in msgs:
            for identity in ("n1", "n2", None):
                for stream in (True, False):
                    reason = raft_rule(identity, msg, stream, require)
                    assert auth.allow(identity, msg, stream) is (reason is None)
                    if reason is not None:
                        expected[reason] = expected.get(reason, 0) + 1
        assert auth.denied == expected
