"""The leader's view of one follower (etcd-io/raft's Progress).

States:

* ``PROBE``: the leader does not know where the follower's log matches; it sends at
  most one AppendEntries until it hears back (or a heartbeat response unpauses it).
* ``REPLICATE``: the follower's log is known to match up to ``match``; the leader
  streams entries optimistically (``next`` runs ahead of ``match``) with at most
  ``max_inflight`` messages unacknowledged.
* ``SNAPSHOT``: the entries the follower needs were compacted away; the leader sends
  the snapshot in chunks, one at a time.

Invariant: ``match < next``.
"""

from __future__ import annotations

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "address",
        "hb_commit",
        "hb_idle",
        "hb_match",
        "inflight",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "read_ack",
        "recent_active",
        "snap_index",
        "snap_offset",
        "snap_progress",
        "state",
    )

    def __init__(self, address: str, next_index: int, max_inflight: int) -> None:
        self.address = address
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.max_inflight = max_inflight
        #: last index carried by each unacknowledged AppendEntries (REPLICATE only)
        self.inflight: deque[int] = deque()
        self.recent_active = False
        self.read_ack = 0  # highest heartbeat round (ctx) echoed
        self.hb_match = -1  # match seen at the previous heartbeat response
        self.hb_commit = -1  # commit index carried by the last heartbeat sent
        self.hb_idle = 0  # heartbeat rounds skipped since the last one sent (non-voters)
        self.snap_index = 0
        self.snap_offset = 0
        self.snap_progress = False

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.snap_index + 1)
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, snap_index: int) -> None:
        self.state = SNAPSHOT
        self.snap_index = snap_index
        self.snap_offset = 0
        self.snap_progress = True
        self.inflight.clear()

    def update(self, match: int) -> bool:
        """An acknowledgement up to ``match``; returns True if it was news."""
        if match <= self.match:
            return False
        self.match = match
        if self.next <= match:
            self.next = match + 1
        inflight = self.inflight
        while inflight and inflight[0] <= match:
            inflight.popleft()
        return True

    def sent(self, last: int) -> None:
        """An AppendEntries ending at ``last`` was sent."""
        if self.state == REPLICATE:
            self.next = last + 1
            self.inflight.append(last)
        else:
            self.probe_sent = True

    @property
    def paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True
