"""What the management server needs from a node: the :class:`ManagedNode` protocol.

The HTTP server (:mod:`.server`) and the metrics collector (:mod:`.metrics`) talk to a
node only through this protocol; :class:`.adapter.ClusterManaged` implements it over
:class:`clusterfunk.node.Cluster`, and the tests implement it with a fake.

Every read accessor returns plain JSON-ready data (the ``TypedDict`` views below) and
is cheap: it reads the node's in-memory state at call time, without awaiting. The
write methods are ``async``, are only meaningful on the Raft leader (the server sends
writes that reach a follower on to the leader, see :mod:`.server`), and raise
:class:`ManagementError` with an HTTP status when they cannot be carried out.
"""

from __future__ import annotations

from typing import NotRequired, Protocol, TypedDict, runtime_checkable

#: The endpoint name under which a node publishes its management API (gossip tag
#: ``ep.clusterfunk.management``), as the issue names it.
MANAGEMENT_ENDPOINT = "clusterfunk.management"


class ManagementError(Exception):
    """A request the node cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NodeView(TypedDict):
    """One node of the committed shard map."""

    node: str
    worker_id: int
    shards: int
    weight: float
    share: float  # weight / total weight of the map (0..1)


class StatusView(TypedDict):
    node: str
    state: str  # invalid | starting | joining | operational | voting | resharding | stopping
    role: str  # unknown | follower | leader | nonvoter | nonmember
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    map_index: int  # Raft index of the committed shard map (0: none yet)
    created: float | None  # cluster creation time, Unix seconds
    uptime: float  # seconds since this node started
    version: str
    nodes: list[str]  # the committed map's nodes, sorted
    #: why the node has not joined yet, after a failed join round (None: joined or
    #: no round failed)
    join_error: NotRequired[str | None]


class MemberView(TypedDict):
    node: str
    address: str
    status: str  # alive | suspect | dead | left
    incarnation: int
    tags: dict[str, str]
    rtt: float | None  # Vivaldi estimate from this node, seconds


class EndpointView(TypedDict):
    node: str
    name: str  # without the ``ep.`` prefix
    address: str


class ShardsView(TypedDict):
    map_index: int
    shards: int  # number of shards in the map
    total_weight: float
    nodes: list[NodeView]


class ProgressView(TypedDict):
    node: str
    match: int
    next: int
    state: str  # probe | replicate | snapshot


class RaftView(TypedDict):
    node: str
    role: str  # the Raft core's own role (leader, follower, candidate, ...)
    term: int
    leader: str | None
    commit_index: int
    applied_index: int
    voters: dict[str, str]  # id -> Raft address
    nonvoters: dict[str, str]
    progress: list[ProgressView]  # per follower; only on the leader


class DiagView(TypedDict):
    node: str
    ok: bool  # no problem listed below
    problems: list[str]  # one readable line each
    raft_members_not_live: list[str]  # in the Raft configuration, not alive in gossip
    live_not_in_raft: list[str]  # alive members with an ep.raft tag, not in Raft
    map_not_in_raft: list[str]  # in the committed map, not in the Raft configuration
    raft_not_in_map: list[str]  # Raft members missing from the committed map
    quarantined: list[str]  # left out of maps: missed an ack (leader's view)
    unresponsive: list[str]  # left out of maps: heartbeat echoes stalled (leader's view)
    #: index, term, leader, nodes, moved, digest, why (what it added / removed)
    last_reshard: dict[str, object] | None


class TrafficView(TypedDict):
    """Message counters of one protocol's driver (raft, gossip, coord)."""

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    malformed: int
    oversize: int
    unauthorized: NotRequired[int]  # refused by the identity / stream rules (issue 11)
    handler_errors: NotRequired[int]  # a core's handler raised (the node stops on it)
    stuck_timers: NotRequired[int]  # a core's tick left its deadline due (a core bug)


class ReshardCounters(TypedDict):
    """Reshard counters of the coordinator (monotonic since the node started)."""

    committed: int  # committed maps this node applied (every reshard it saw)
    led: int  # reshard rounds this node committed as leader (= sum of ``counts``)
    bounds: list[float]  # upper bounds (seconds) of the duration buckets
    counts: list[int]  # rounds led per bucket, not cumulative; len(bounds) + 1 (last: above)
    seconds_sum: float  # total duration of those rounds, proposal to commit
    ack_timeouts: int  # rounds that timed out waiting for acks (leader)
    quarantines: int  # nodes quarantined for a missed ack (leader)


class CountersView(TypedDict):
    """Counters for /metrics that the views above do not carry."""

    traffic: dict[str, TrafficView]  # by protocol; empty if the node does not expose it
    gossip: dict[str, int]  # gossip core counters (probes, suspicions, refutes, ...)
    coordinator: dict[str, int]  # coordinator event counts by reason
    owned_weight: float  # total weight of this node's shards in the committed map
    owned_shards: int
    reshards: NotRequired[ReshardCounters]
    raft_dropped: NotRequired[dict[str, int]]  # Raft core: messages dropped, by reason
    #: transport counters by port (gossip, raft, coord): counter name -> value
    transport: NotRequired[dict[str, dict[str, int]]]
    #: the request server's counters (routing; only on a node that serves requests)
    requests: NotRequired[dict[str, int]]


@runtime_checkable
class ManagedNode(Protocol):
    """The node as the management API sees it (see the module docstring)."""

    @property
    def node_id(self) -> str: ...

    # -- reads (synchronous, cheap, JSON-ready) --
    def status(self) -> StatusView: ...
    def nodes(self) -> list[NodeView]: ...
    def members(self) -> list[MemberView]: ...
    def endpoints(self, name: str | None = None) -> list[EndpointView]: ...
    def shards(self) -> ShardsView: ...
    def raft_info(self) -> RaftView: ...
    def diag(self) -> DiagView: ...
    def counters(self) -> CountersView: ...
    def endpoint_of(self, node: str, name: str) -> str | None:
        """The address member ``node`` publishes for endpoint ``name`` (no ``ep.``)."""
        ...

    # -- writes (leader only; raise ManagementError) --
    async def step_down(self) -> None:
        """Hand Raft leadership to another voter; returns once it is done."""
        ...

    async def remove_node(self, node: str) -> None:
        """Remove ``node`` from the Raft configuration and the shard map."""
        ...

    async def set_voters(self, n: int) -> None:
        """Set the target number of Raft voters (>= 1)."""
        ...
