"""The cluster layer: gossip drives Raft membership, the Raft leader commits the
shard map through the log, nodes ack it (see ``docs/cluster.md``).

Pure parts (no trio): :mod:`.messages` (wire tags 192-223), :mod:`.statemachine`
(the replicated cluster log), :mod:`.coordinator` (one node's cluster logic as a
sans-I/O core), :mod:`.views` (the read-only Raft and membership views the
coordinator reads, and their adapters over the cores), :mod:`.glue` (joins a node's
three drivers, host-agnostic), :mod:`.assembly` (the one node assembly, on any
host). The Trio API is :class:`clusterfunk.node.Cluster`; the simulation workload
is :mod:`clusterfunk.sim.workloads.cluster`.
"""
