"""Readable scripted scenarios: the transcript (steps, messages, audit events) is the
expected output. A change in behaviour shows up as a diff of this story."""

from __future__ import annotations

import textwrap

from clusterfunk.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)


def fmt(msg) -> str:
    t = type(msg)
    if t is RequestVote:
        kind = "PreVote" if msg.pre_vote else "Vote"
        return f"{kind}(term={msg.term}, last={msg.last_index}/{msg.last_term})"
    if t is RequestVoteResponse:
        kind = "PreVoteResp" if msg.pre_vote else "VoteResp"
        return f"{kind}(term={msg.term}, {'yes' if msg.granted else 'no'})"
    if t is AppendEntries:
        ents = ",".join(f"{e.term}:{e.data.decode(errors='replace') or '-'}"
                        if e.kind == 1 else f"{e.term}:{'noop' if e.kind == 2 else 'cfg'}"
                        for e in msg.entries)
        return (f"Append(term={msg.term}, prev={msg.prev_index}/{msg.prev_term}, "
                f"[{ents}], commit={msg.commit})")
    if t is AppendEntriesResponse:
        if msg.success:
            return f"AppendOK(term={msg.term}, match={msg.match_index})"
        return (f"AppendReject(term={msg.term}, at={msg.reject_index}, "
                f"hint={msg.conflict_index}/{msg.conflict_term})")
    if t is Heartbeat:
        return f"Heartbeat(term={msg.term}, commit={msg.commit})"
    if t is HeartbeatResponse:
        return f"HeartbeatOK(term={msg.term})"
    if t is TimeoutNow:
        return f"TimeoutNow(term={msg.term})"
    return type(msg).__name__


class Story:
    def __init__(self, net) -> None:
        self.net = net
        self.out: list[str] = []
        self.seen = len(net.lines)

    def events(self) -> None:
        for line in self.net.lines[self.seen:]:
            if " raft.apply " in line:
                line = line.split(" digest=")[0]
            self.out.append("   " + line)
        self.seen = len(self.net.lines)

    def step(self, text: str) -> None:
        self.events()
        self.out.append(f"# {text}")

    def deliver(self) -> None:
        net = self.net
        self.events()
        while net.queue:
            dest, src, msg = net.queue[0]
            s = src.partition(":")[0]
            lost = dest in net.down or (s, dest) in net.blocked
            self.out.append(f"{s} -> {dest}: {fmt(msg)}" + ("  (lost)" if lost else ""))
            net.deliver_one()
            self.events()

    def text(self) -> str:
        self.events()
        return "\n".join(self.out) + "\n"


def test_scenario_election_replication_and_transfer(make_net):
    net = make_net(["n1", "n2", "n3"])
    story = Story(net)
    story.step("n1's election timer fires")
    net.timeout("n1")
    story.deliver()
    story.step("a client writes x=1 through n1")
    net.propose("n1", b"x=1")
    story.deliver()
    story.step("heartbeat: followers learn the commit index")
    net.now += 0.1
    net.tick("n1")
    story.deliver()
    story.step("n1 hands leadership to n2")
    net.call("n1", lambda c, now: c.transfer_leadership(now, "n2"))
    story.deliver()
    assert story.text() == textwrap.dedent("""\
        # n1's election timer fires
           n1 raft.role term=0 role=precandidate
        n1 -> n2: PreVote(term=1, last=1/0)
        n1 -> n3: PreVote(term=1, last=1/0)
        n2 -> n1: PreVoteResp(term=1, yes)
           n1 raft.role term=1 role=candidate
        n3 -> n1: PreVoteResp(term=1, yes)
        n1 -> n2: Vote(term=1, last=1/0)
           n2 raft.role term=1 role=follower
        n1 -> n3: Vote(term=1, last=1/0)
           n3 raft.role term=1 role=follower
        n2 -> n1: VoteResp(term=1, yes)
           n1 raft.role term=1 role=leader
        n3 -> n1: VoteResp(term=1, yes)
        n1 -> n2: Append(term=1, prev=1/0, [1:noop], commit=0)
        n1 -> n3: Append(term=1, prev=1/0, [1:noop], commit=0)
        n2 -> n1: AppendOK(term=1, match=2)
           n1 raft.apply index=1 term=0
           n1 raft.apply index=2 term=1
        n3 -> n1: AppendOK(term=1, match=2)
        # a client writes x=1 through n1
        n1 -> n2: Append(term=1, prev=2/1, [1:x=1], commit=2)
           n2 raft.apply index=1 term=0
           n2 raft.apply index=2 term=1
        n1 -> n3: Append(term=1, prev=2/1, [1:x=1], commit=2)
           n3 raft.apply index=1 term=0
           n3 raft.apply index=2 term=1
        n2 -> n1: AppendOK(term=1, match=3)
           n1 raft.apply index=3 term=1
        n3 -> n1: AppendOK(term=1, match=3)
        # heartbeat: followers learn the commit index
        n1 -> n2: Heartbeat(term=1, commit=3)
           n2 raft.apply index=3 term=1
        n1 -> n3: Heartbeat(term=1, commit=3)
           n3 raft.apply index=3 term=1
        n2 -> n1: HeartbeatOK(term=1)
        n3 -> n1: HeartbeatOK(term=1)
        # n1 hands leadership to n2
        n1 -> n2: TimeoutNow(term=1)
           n2 raft.role term=2 role=candidate
        n2 -> n1: Vote(term=2, last=3/1)
           n1 raft.role term=2 role=follower
        n2 -> n3: Vote(term=2, last=3/1)
           n3 raft.role term=2 role=follower
        n1 -> n2: VoteResp(term=2, yes)
           n2 raft.role term=2 role=leader
        n3 -> n2: VoteResp(term=2, yes)
        n2 -> n1: Append(term=2, prev=3/1, [2:noop], commit=3)
        n2 -> n3: Append(term=2, prev=3/1, [2:noop], commit=3)
        n1 -> n2: AppendOK(term=2, match=4)
           n2 raft.apply index=4 term=2
        n3 -> n2: AppendOK(term=2, match=4)
        """)
    assert net.sms["n2"].data == {} and net["n2"].commit_index == 4


def test_scenario_partitioned_leader_and_log_repair(make_net):
    net = make_net(["n1", "n2", "n3"])
    net.elect("n1")
    net.advance(0.2)
    story = Story(net)
    story.step("n1 is cut off and accepts a write it cannot commit")
    net.isolate("n1")
    net.propose("n1", b"k=lost")
    story.deliver()
    story.step("n2 campaigns and wins term 2 with n3")
    net.now += 1.0  # the followers' leases on n1 run out
    net.timeout("n2")
    story.deliver()
    story.step("the partition heals; n2's heartbeat deposes n1, which is repaired")
    net.heal()
    net.now += 0.1
    net.tick("n2")
    story.deliver()
    text = story.text()
    assert text == textwrap.dedent("""\
        # n1 is cut off and accepts a write it cannot commit
        n1 -> n2: Append(term=1, prev=2/1, [1:k=lost], commit=2)  (lost)
        n1 -> n3: Append(term=1, prev=2/1, [1:k=lost], commit=2)  (lost)
        # n2 campaigns and wins term 2 with n3
           n2 raft.role term=1 role=precandidate
        n2 -> n1: PreVote(term=2, last=2/1)  (lost)
        n2 -> n3: PreVote(term=2, last=2/1)
        n3 -> n2: PreVoteResp(term=2, yes)
           n2 raft.role term=2 role=candidate
        n2 -> n1: Vote(term=2, last=2/1)  (lost)
        n2 -> n3: Vote(term=2, last=2/1)
           n3 raft.role term=2 role=follower
        n3 -> n2: VoteResp(term=2, yes)
           n2 raft.role term=2 role=leader
        n2 -> n1: Append(term=2, prev=2/1, [2:noop], commit=2)  (lost)
        n2 -> n3: Append(term=2, prev=2/1, [2:noop], commit=2)
        n3 -> n2: AppendOK(term=2, match=3)
           n2 raft.apply index=3 term=2
        # the partition heals; n2's heartbeat deposes n1, which is repaired
        n2 -> n1: Heartbeat(term=2, commit=0)
           n1 raft.role term=2 role=follower
        n2 -> n3: Heartbeat(term=2, commit=3)
           n3 raft.apply index=3 term=2
        n1 -> n2: HeartbeatOK(term=2)
        n3 -> n2: HeartbeatOK(term=2)
        n2 -> n1: Append(term=2, prev=2/1, [2:noop], commit=3)
           n1 raft.apply index=3 term=2
        n1 -> n2: AppendOK(term=2, match=3)
        """)
    assert net["n1"].log.entry(3).kind == 2  # the uncommitted write was replaced
