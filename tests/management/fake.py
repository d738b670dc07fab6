"""A fake :class:`~clusterfunk.management.api.ManagedNode` for the management tests."""

from __future__ import annotations

from typing import Any

from clusterfunk.management.api import (
    CountersView,
    DiagView,
    EndpointView,
    ManagementError,
    MemberView,
    NodeView,
    RaftView,
    ReshardCounters,
    ShardsView,
    StatusView,
    TrafficView,
)


class FakeNode:
    """Three nodes a, b, c; this one is ``node_id``; ``leader`` says who leads."""

    def __init__(self, node_id: str = "a", leader: str | None = "a") -> None:
        self._id = node_id
        self.leader = leader
        self.term = 7
        self.voters = 3
        self.map_nodes = ["a", "b", "c"]
        self.calls: list[tuple[str, Any]] = []
        self.fail_with: ManagementError | None = None
        self.management: dict[str, str] = {}  # node -> management address
        self.broken = False

    @property
    def node_id(self) -> str:
        return self._id

    def status(self) -> StatusView:
        if self.broken:
            raise RuntimeError("accessor exploded")
        return StatusView(
            node=self._id, state="operational",
            role="leader" if self.leader == self._id else "follower",
            leader=self.leader, term=self.term, commit_index=42, applied_index=41,
            map_index=40, created=1_700_000_000.5, uptime=12.5, version="0.1.0",
            nodes=list(self.map_nodes),
        )

    def nodes(self) -> list[NodeView]:
        shares = {"a": 34, "b": 33, "c": 33}
        return [NodeView(node=n, worker_id=i, shards=shares[n], weight=float(shares[n]),
                         share=shares[n] / 100) for i, n in enumerate(self.map_nodes)]

    def members(self) -> list[MemberView]:
        return [
            MemberView(node="a", address="127.0.0.1:7946", status="alive", incarnation=1,
                       tags={"ep.raft": "127.0.0.1:8300", "ep.web": "127.0.0.1:80"}, rtt=None),
            MemberView(node="b", address="127.0.0.1:7947", status="alive", incarnation=2,
                       tags={"ep.raft": "127.0.0.1:8301"}, rtt=0.0012),
            MemberView(node="c", address="127.0.0.1:7948", status="suspect", incarnation=0,
                       tags={"ep.raft": "127.0.0.1:8302", "ep.web": "127.0.0.1:82"},
                       rtt=0.0031),
            MemberView(node="d", address="127.0.0.1:7949", status="dead", incarnation=5,
                       tags={}, rtt=None),
        ]

    def endpoints(self, name: str | None = None) -> list[EndpointView]:
        out = []
        for m in self.members():
            for tag, addr in sorted(m["tags"].items()):
                if tag.startswith("ep.") and (name is None or tag[3:] == name):
                    out.append(EndpointView(node=m["node"], name=tag[3:], address=addr))
        return out

    def endpoint_of(self, node: str, name: str) -> str | None:
        return self.management.get(node)

    def shards(self) -> ShardsView:
        return ShardsView(map_index=40, shards=100, total_weight=100.0, nodes=self.nodes())

    def raft_info(self) -> RaftView:
        return RaftView(node=self._id, role="leader" if self.leader == self._id else "follower",
                        term=self.term, leader=self.leader, commit_index=42, applied_index=41,
                        voters={"a": "127.0.0.1:8300", "b": "127.0.0.1:8301"},
                        nonvoters={"c": "127.0.0.1:8302"},
                        progress=[{"node": "b", "match": 42, "next": 43, "state": "replicate"},
                                  {"node": "c", "match": 30, "next": 31, "state": "probe"}])

    def diag(self) -> DiagView:
        return DiagView(node=self._id, ok=False, problems=["Raft member c is suspect"],
                        raft_members_not_live=[], live_not_in_raft=[], map_not_in_raft=[],
                        raft_not_in_map=[], quarantined=["c"], unresponsive=[],
                        last_reshard={"index": 40, "term": 7, "leader": "a",
                                      "nodes": ["a", "b", "c"], "moved": 33, "digest": "ab",
                                      "why": "added c"})

    def counters(self) -> CountersView:
        return CountersView(
            traffic={"gossip": TrafficView(messages_in=10, messages_out=11, bytes_in=1000,
                                           bytes_out=1100, malformed=2, oversize=1,
                                           handler_errors=0)},
            gossip={"probes": 9, "refutes": 1, "malformed": 3, "suspicions": 5},
            coordinator={"ack timeouts": 4, "stale ack": 2},
            owned_weight=34.0, owned_shards=34,
            reshards=ReshardCounters(committed=6, led=3, bounds=[0.5, 1.0],
                                     counts=[1, 0, 2], seconds_sum=7.25, ack_timeouts=4,
                                     quarantines=5),
            raft_dropped={"stale term": 8, "unknown server": 1},
            transport={"gossip": {"datagrams_received": 12, "bytes_sent": 640},
                       "raft": {"datagrams_received": 0, "bytes_sent": 900}},
            requests={"ok": 20, "moved": 3, "busy": 1, "error": 0, "queued": 2,
                      "handoff_timeouts": 1},
        )

    async def _write(self, name: str, arg: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append((name, arg))

    async def step_down(self) -> None:
        await self._write("step_down", None)
        self.leader = "b"
        self.term += 1

    async def remove_node(self, node: str) -> None:
        await self._write("remove_node", node)
        self.map_nodes = [n for n in self.map_nodes if n != node]

    async def set_voters(self, n: int) -> None:
        await self._write("set_voters", n)
        self.voters = n
