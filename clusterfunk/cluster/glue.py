"""The glue between one node's three drivers (gossip, Raft, coordination).

Host-agnostic: the simulator and the Trio host build the drivers and pass a
``defer(fn)`` that runs ``fn()`` soon, *outside* any driver handler (simulation: the
next event at the same virtual instant; Trio: a task woken by an event).

Why defer: a driver publishes a step's events before it writes the step's trace
records. Acting on an event synchronously (say, proposing to a single-voter Raft
core, which commits and applies at once) would nest a second step inside the first
and write its trace records first, out of causal order. So subscribers only queue;
the pump runs the queue, in FIFO order, when no handler is running:

* Raft ``Applied`` of a cluster entry -> ``coordinator.applied(result)`` (log order);
  ``Applied`` of a configuration or no-op entry -> ``raft_changed(config_committed)``;
  role / leader / configuration changes -> ``raft_changed``; ``SnapshotRestored`` ->
  ``resync``;
* gossip member events -> ``members_changed`` (coalesced: the coordinator reads the
  full member list, so no event can be lost);
* coordinator actions -> ``raft_driver.call(...)``; a refusal (``RaftError``) goes
  back as ``action_failed``;
* coordinator ``StateChanged`` -> the ``on_state`` callbacks (immediately; they only
  enqueue for the application);
* shard ownership: ``OwnershipChanged`` -> the ``on_ownership`` callbacks
  (immediately, enqueue only); ``ReleaseShards`` -> the ``release`` handler, which
  must call :meth:`NodeGlue.released` once the application finished (the Trio API
  runs the async hook in a task; the simulator at once or after a simulated delay);
  without a handler the release is reported at once (through the queue). After a
  pump that processed log results or Raft changes, ``coordinator.settle`` runs the
  fencing and gain rules once on the final state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from clusterfunk.cluster import coordinator as co
from clusterfunk.cluster.statemachine import (
    BootstrapApplied,
    CommitApplied,
    Ignored,
    ProposalApplied,
    VotersApplied,
)
from clusterfunk.gossip import events as gev
from clusterfunk.raft import events as rev
from clusterfunk.raft.errors import RaftError
from clusterfunk.runtime.driver import Driver

if TYPE_CHECKING:
    from clusterfunk.raft.core import RaftCore

_RESULTS = (ProposalApplied, CommitApplied, BootstrapApplied, VotersApplied, Ignored)

_RAFT = ("raft",)
_CONFIG = ("config",)
_MEMBERS = ("members",)
_RESTORED = ("restored",)
_SETTLE = ("settle",)


class NodeGlue:
    """Joins the drivers of one node; see the module docstring."""

    def __init__(
        self,
        coord: Driver,
        raft: Driver | None,
        gossip: Driver | None,
        defer: Callable[[Callable[[], None]], None],
    ) -> None:
        self.coord = coord
        self.raft = raft
        self.gossip = gossip
        self.defer = defer
        self.queue: deque[tuple[Any, ...]] = deque()
        self.on_state: list[Callable[[co.StateChanged], None]] = []
        self.on_ownership: list[Callable[[co.OwnershipChanged], None]] = []
        #: runs the application's release work for a ReleaseShards; must end with
        #: :meth:`released` (None: released at once)
        self.release: Callable[[co.ReleaseShards], None] | None = None
        self.closed = False
        self.synced = False
        self.pumps = 0
        self._scheduled = False
        coord.subscribe(self._on_coord)
        if raft is not None:
            raft.subscribe(self._on_raft)
        if gossip is not None:
            gossip.subscribe(self._on_gossip)

    def close(self) -> None:
        self.closed = True
        self.queue.clear()

    # -- subscribers: queue only -------------------------------------------------

    def _push(self, item: tuple[Any, ...]) -> None:
        q = self.queue
        if len(item) == 1 and q and q[-1] is item:
            return  # coalesce repeated markers
        q.append(item)
        self.kick()

    def kick(self) -> None:
        if not self._scheduled and not self.closed:
            self._scheduled = True
            self.defer(self.pump)

    def _on_raft(self, ev: Any) -> None:
        if isinstance(ev, rev.Applied):
            if isinstance(ev.result, _RESULTS):
                self._push(("applied", ev.result))
            elif ev.result is None:
                self._push(_CONFIG)  # a configuration or no-op entry committed
        elif isinstance(ev, rev.RoleChanged | rev.LeaderChanged | rev.ConfigChanged):
            self._push(_RAFT)
        elif isinstance(ev, rev.SnapshotRestored):
            self._push(_RESTORED)

    def _on_gossip(self, ev: Any) -> None:
        if isinstance(ev, gev.MEMBER_EVENTS):
            self._push(_MEMBERS)

    def released(self, index: int) -> None:
        """The application finished releasing the shards of ``ReleaseShards(index)``
        (call from outside any driver step, e.g. a task or a simulator event)."""
        self._push(("released", index))

    def _on_coord(self, ev: Any) -> None:
        if isinstance(ev, co.StateChanged):
            for cb in tuple(self.on_state):
                cb(ev)
        elif isinstance(ev, co.OwnershipChanged):
            for ocb in tuple(self.on_ownership):
                ocb(ev)
        elif isinstance(ev, co.Settle):
            self._push(_SETTLE)
        elif isinstance(ev, co.ReleaseShards):
            if self.release is None:
                self._push(("released", ev.index))
            else:
                self.release(ev)
        else:
            self._push(("action", ev))

    # -- the pump -----------------------------------------------------------------

    def pump(self) -> None:
        """Run the queue until it is empty (items queued meanwhile included)."""
        self._scheduled = False
        if self.closed or not self.coord.running:
            return
        self.pumps += 1
        call = self.coord.call
        if not self.synced:
            self.synced = True
            self._resync()
        q = self.queue
        settle = False
        while q and not self.closed:
            item = q.popleft()
            kind = item[0]
            if kind == "applied":
                call(_applied(item[1]))
                settle = True
            elif kind == "raft":
                call(lambda c, now: c.raft_changed(now))
                settle = True
            elif kind == "config":
                call(lambda c, now: c.raft_changed(now, config_committed=True))
                settle = True
            elif kind == "settle":
                settle = True
            elif kind == "released":
                call(_released(item[1]))
            elif kind == "members":
                call(lambda c, now: c.members_changed(now))
            elif kind == "restored":
                self._resync()
                settle = True
            elif kind == "action":
                self._act(item[1])
            if settle and not q and not self.closed:
                settle = False
                call(lambda c, now: c.settle(now))

    def _resync(self) -> None:
        raft = self.raft
        last = cast("RaftCore", raft.core).last_applied if raft is not None else 0
        # results already reflected in the state machine are skipped by index
        self.coord.call(lambda c, now: c.resync(now, last))
        if raft is not None:
            self.coord.call(lambda c, now: c.raft_changed(now, config_committed=True))
        if self.gossip is not None:
            self.coord.call(lambda c, now: c.members_changed(now))

    def _act(self, action: co.Action) -> None:
        raft = self.raft
        if raft is None or not raft.running:
            return
        fn: Callable[[Any, float], Any]
        if isinstance(action, co.Propose):
            cmds = list(action.commands)
            fn = lambda core, now: core.propose_many(now, cmds)  # noqa: E731
        elif isinstance(action, co.AddNonVoter):
            fn = lambda core, now: core.add_nonvoter(now, action.server, action.address)  # noqa: E731
        elif isinstance(action, co.AddVoter):
            fn = lambda core, now: core.add_voter(now, action.server, action.address)  # noqa: E731
        elif isinstance(action, co.RemoveServer):
            fn = lambda core, now: core.remove_server(now, action.server)  # noqa: E731
        elif isinstance(action, co.TransferLeadership):
            fn = lambda core, now: core.transfer_leadership(now)  # noqa: E731
        else:
            return
        try:
            raft.call(fn)
        except RaftError as exc:
            err = f"{type(exc).__name__}: {exc}"
            self.coord.call(lambda c, now: c.action_failed(now, action, err))


def _released(index: int) -> Callable[[co.CoordinatorCore, float], None]:
    return lambda c, now: c.released(now, index)


def _applied(result: Any) -> Callable[[co.CoordinatorCore, float], None]:
    return lambda c, now: c.applied(now, result)
