"""Linearizable reads: ReadIndex and the lease (dissertation 6.4)."""

from __future__ import annotations

import pytest

from clusterfunk.raft import kv
from clusterfunk.raft.errors import NotLeader
from clusterfunk.raft.events import ReadFailed, ReadReady
from clusterfunk.raft.messages import Heartbeat


def reads(net, sid, cls=ReadReady):
    return [e for e in net.events[sid] if isinstance(e, cls)]


def test_read_index_waits_for_a_quorum_heartbeat_round(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.propose("n1", kv.encode_put("k", "v"))
    net.deliver_all()
    net.call("n1", lambda c, now: c.read_index(now, 7))
    assert reads(net, "n1") == []
    hbs = [m for d, s, m in net.queue if isinstance(m, Heartbeat)]
    assert len(hbs) == 2  # a round went out for the read
    net.deliver_all()
    assert reads(net, "n1") == [ReadReady(7, net["n1"].commit_index)]
    assert net.sms["n1"].get("k") == "v"


def test_read_index_on_a_partitioned_leader_fails(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.3)
    net.isolate("n1")
    net.call("n1", lambda c, now: c.read_index(now, 1))
    net.advance(3.0)  # check-quorum deposes n1
    assert reads(net, "n1") == []
    assert reads(net, "n1", ReadFailed) == [ReadFailed(1, "leadership lost")]
    with pytest.raises(NotLeader) as ei:
        net.call("n1", lambda c, now: c.read_index(now, 2))
    assert ei.value.leader_id is None or ei.value.leader_id != "n1"


def test_read_before_the_new_leader_commits_its_noop_waits(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.timeout("n1")
    while net["n1"].role != "leader":
        net.deliver_one()
    net.call("n1", lambda c, now: c.read_index(now, 5))
    assert reads(net, "n1") == []
    net.deliver_all()
    (r,) = reads(net, "n1")
    assert r.ctx == 5 and r.index >= 2  # covers the no-op of its term


def test_lease_read_is_served_without_a_round_while_the_lease_holds(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.35)  # heartbeat rounds acknowledged: lease running
    net.call("n1", lambda c, now: c.read_index(now, 1, lease=True))
    assert reads(net, "n1") == [ReadReady(1, net["n1"].commit_index)]
    assert not [m for d, s, m in net.queue if isinstance(m, Heartbeat)]
    # partitioned: after T * (1 - drift) the lease is gone and the read needs a round
    net.isolate("n1")
    net.advance(0.95)
    assert net["n1"].role == "leader"
    net.call("n1", lambda c, now: c.read_index(now, 2, lease=True))
    assert [r.ctx for r in reads(net, "n1")] == [1]


def test_no_lease_reads_after_sending_timeout_now(make_net):
    """A TimeoutNow may arrive late, after the transfer was abandoned, and start an
    election that bypasses leader stickiness: the lease is forfeited for the term."""
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.35)
    net.call("n1", lambda c, now: c.transfer_leadership(now, "n2"))
    held = [q for q in net.queue]
    net.queue.clear()  # the TimeoutNow is delayed in the network
    net.now += 1.05
    net.tick("n1")  # transfer abandoned; n1 goes on leading
    net.advance(0.3)
    assert net["n1"].role == "leader"
    net.call("n1", lambda c, now: c.read_index(now, 9, lease=True))
    assert [r.ctx for r in reads(net, "n1")] == []  # needs a heartbeat round now
    net.deliver_all()
    assert [r.ctx for r in reads(net, "n1")] == [9]
    assert held



def test_a_nonvoter_echo_serves_reads_a_configuration_change_made_safe(make_net):
    """The read rule runs on a non-voter's heartbeat echo when the configuration
    changed since it last ran: here a removal leaves the leader the only voter, so
    the pending read is safe at the next echo, even a non-voter's."""
    from clusterfunk.raft.messages import HeartbeatResponse

    net = make_net(["n1", "n2"])
    net.elect("n1")
    net.add("n3", None)
    net.call("n1", lambda c, now: c.add_nonvoter(now, "n3", "n3:8300"))
    net.deliver_all()
    assert "n3" in net["n1"].configuration.nonvoters
    net.advance(0.3)
    net.isolate("n2")
    net.call("n1", lambda c, now: c.read_index(now, 9))
    net.deliver_all()  # the round reaches no voter
    for _ in range(10):  # heartbeat rounds until an (idle) non-voter's turn
        if any(d == "n3" and isinstance(m, Heartbeat) for d, _s, m in net.queue):
            break
        net.tick("n1", net["n1"].next_deadline())
    while net.queue and not isinstance(net.queue[0][2], HeartbeatResponse):
        net.deliver_one()  # the round reaches n3 (and not n2); n3's echo is queued
    assert [(d, m.sender) for d, _s, m in net.queue] == [("n1", "n3")]
    assert reads(net, "n1") == [] and net["n1"].role == "leader"
    net.call("n1", lambda c, now: c.remove_server(now, "n2"))
    assert list(net["n1"].configuration.voters) == ["n1"]
    assert reads(net, "n1") == []
    net.deliver_one()  # n3's echo
    assert [r.ctx for r in reads(net, "n1")] == [9]
