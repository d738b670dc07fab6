"""The coordinator's read-only views of Raft and of gossip membership.

:class:`~clusterfunk.cluster.coordinator.CoordinatorCore` never holds the Raft or the
gossip core: it reads them through two small protocols, so it depends on no field of
either core and its rules can be unit-tested with fakes
(``tests/cluster/test_coordinator_rules.py``):

* :class:`RaftView`: this server's role, term, leader, commit index and
  configuration; on the leader, per follower, its match index and the last heartbeat
  round it echoed (the leader's fast failure detector counts rounds, not time: the
  coordinator times them on its own clock);
* :class:`MembershipView`: whether gossip has joined, and a typed snapshot
  (:class:`MemberInfo`) of one or every known member.

The adapters :class:`RaftCoreView` and :class:`GossipMembershipView` implement them
over a :class:`~clusterfunk.raft.core.RaftCore` and a
:class:`~clusterfunk.gossip.core.GossipCore`, reading only their public attributes
and methods. Views are read at the moment of the coordinator's input (the glue runs
one handler at a time), never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from clusterfunk.gossip.messages import Status
from clusterfunk.raft.roles import Role

if TYPE_CHECKING:
    from clusterfunk.gossip.core import GossipCore
    from clusterfunk.gossip.state import Member
    from clusterfunk.raft.core import RaftCore


class RaftView(Protocol):
    """What the coordinator reads of its own Raft server (current values)."""

    @property
    def role(self) -> Role: ...

    @property
    def term(self) -> int: ...

    @property
    def leader_id(self) -> str | None:
        """The leader this server knows of in its term, if any."""

    @property
    def commit_index(self) -> int: ...

    @property
    def voters(self) -> Mapping[str, str]:
        """Voters of the current configuration: id -> Raft address, sorted by id."""

    @property
    def nonvoters(self) -> Mapping[str, str]:
        """Non-voters of the current configuration: id -> Raft address, sorted by id."""

    @property
    def leader_contact(self) -> float:
        """Local time this server last heard from a leader of its term (the leader:
        its last successful CheckQuorum); the shard lease is measured from it."""

    @property
    def leader_commit(self) -> int | None:
        """The highest commit index a leader announced to this server since boot (None
        before any; the leader: its commit index once it committed in its term)."""

    @property
    def leader_commit_at(self) -> float:
        """Local time :attr:`leader_commit` was last announced (an AppendEntries)."""

    def followers(self) -> Iterable[str]:
        """Leader only: the servers it replicates to, sorted by id (empty otherwise)."""

    def match_index(self, server: str) -> int | None:
        """Leader only: the highest index known replicated on ``server`` (None if the
        leader does not replicate to it)."""

    def heartbeat_echo(self, server: str) -> int | None:
        """Leader only: the last heartbeat round ``server`` echoed back (it advances
        while the follower answers heartbeats; None if not replicated to)."""


@attrs.frozen(slots=True)
class MemberInfo:
    """One gossip member as the coordinator sees it."""

    name: str
    status: Status
    tags: Mapping[str, str] = attrs.field(factory=dict, hash=False)


class MembershipView(Protocol):
    """What the coordinator reads of gossip membership (current values)."""

    @property
    def joined(self) -> bool:
        """This node has joined the gossip cluster (heard back from a seed)."""

    def member(self, name: str) -> MemberInfo | None:
        """The member called ``name``, or None if gossip does not know it."""

    def members(self) -> Sequence[MemberInfo]:
        """Every known member, this node and dead / left ones included, by name."""


class RaftCoreView:
    """:class:`RaftView` over a :class:`~clusterfunk.raft.core.RaftCore`."""

    __slots__ = ("_core",)

    def __init__(self, core: RaftCore) -> None:
        self._core = core

    @property
    def role(self) -> Role:
        return self._core.role

    @property
    def term(self) -> int:
        return self._core.term

    @property
    def leader_id(self) -> str | None:
        return self._core.leader_id

    @property
    def commit_index(self) -> int:
        return self._core.commit_index

    @property
    def voters(self) -> Mapping[str, str]:
        return self._core.configuration.voters

    @property
    def nonvoters(self) -> Mapping[str, str]:
        return self._core.configuration.nonvoters

    @property
    def leader_contact(self) -> float:
        return self._core.leader_contact

    @property
    def leader_commit(self) -> int | None:
        return self._core.leader_commit

    @property
    def leader_commit_at(self) -> float:
        return self._core.leader_commit_at

    def followers(self) -> Iterable[str]:
        return self._core.progress.keys()

    def match_index(self, server: str) -> int | None:
        pr = self._core.progress.get(server)
        return None if pr is None else pr.match

    def heartbeat_echo(self, server: str) -> int | None:
        pr = self._core.progress.get(server)
        return None if pr is None else pr.read_ack


def _info(m: Member) -> MemberInfo:
    return MemberInfo(m.name, Status(m.status), m.tags)


class GossipMembershipView:
    """:class:`MembershipView` over a :class:`~clusterfunk.gossip.core.GossipCore`.

    :meth:`members` reuses the :class:`MemberInfo` it made for a member while the
    member's status and tags still equal it (every read compares them with the core's
    snapshot, so no change can be missed: nothing needs to invalidate the cache; a
    member gossip forgot is dropped from it at the next read).
    """

    __slots__ = ("_core", "_infos")

    def __init__(self, core: GossipCore) -> None:
        self._core = core
        self._infos: dict[str, MemberInfo] = {}

    @property
    def joined(self) -> bool:
        return self._core.joined

    def member(self, name: str) -> MemberInfo | None:
        m = self._core.member(name)
        return None if m is None else _info(m)

    def members(self) -> list[MemberInfo]:
        old = self._infos
        infos: dict[str, MemberInfo] = {}
        out: list[MemberInfo] = []
        for m in self._core.members():
            info = old.get(m.name)
            # (a Status is the string it names: equal to the snapshot's status string)
            if info is None or info.status != m.status or info.tags != m.tags:
                info = _info(m)
            infos[m.name] = info
            out.append(info)
        self._infos = infos
        return out
