"""One Raft server, assembled once for every host.

:class:`RaftServer` wires a :class:`~clusterfunk.raft.core.RaftCore` over the given
storage and state machine, its driver (with the lazy timer: a follower's election
deadline moves on every AppendEntries) and the :class:`~clusterfunk.raft.requests.Requests`
that turn the core's events into callbacks. The Trio API
(:class:`clusterfunk.raft.api.RaftNode`) builds it on a
:class:`~clusterfunk.runtime.trio_host.TrioHost`; the ``raft`` simulation workload
builds the very same object on a :class:`~clusterfunk.sim.simulation.SimHost`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.persist import SyncPersister
from clusterfunk.raft.requests import Callback, Requests
from clusterfunk.runtime.api import Persister
from clusterfunk.runtime.auth import raft_authorizer
from clusterfunk.runtime.host import RAFT, Host


class RaftServer:
    """A Raft server's parts on ``host`` (see the module docstring).

    ``bootstrap`` maps the initial voters' ids to addresses (applied by the core to
    an empty store only). ``fail_on_step_down``: see :class:`Requests` rule 2.
    """

    def __init__(
        self,
        host: Host,
        *,
        storage: Any,
        state_machine: Any,
        rng: random.Random,
        config: RaftConfig | None = None,
        bootstrap: Mapping[str, str] | None = None,
        port: str = RAFT,
        trace_applies: bool = True,
        fail_on_step_down: bool = True,
        persister: Persister | None = None,
    ) -> None:
        self.host = host
        self.core = RaftCore(
            host.name,
            storage,
            state_machine,
            rng,
            config=config if config is not None else RaftConfig(),
            bootstrap=dict(bootstrap) if bootstrap is not None else None,
        )
        self.core.trace_applies = trace_applies
        self.driver = host.driver(
            self.core, port, lazy_timer=True,
            persister=persister if persister is not None else SyncPersister(storage),
            authorizer=raft_authorizer(require_identity=host.authenticated),
        )
        self.requests = Requests(self.core, fail_on_step_down=fail_on_step_down)
        self.driver.subscribe(self.requests.on_event)

    def propose(
        self,
        command: bytes,
        callback: Callback,
        placed: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Propose ``command``; ``callback(result, error)`` runs once its fate is
        known (``placed(index, term)`` first, inside the step, when the entry is in
        the log). Raises NotLeader / ProposalTooLarge at once (callbacks not called)."""
        requests = self.requests

        def run(core: Any, now: float) -> tuple[int, int]:
            index, term = core.propose(now, command)
            if placed is not None:
                placed(index, term)
            requests.pending(index, term, callback)  # inside the step (Requests rule 4)
            return index, term

        result: tuple[int, int] = self.driver.call(run)
        return result

    def read_index(self, ctx: int, callback: Callback, lease: bool = False) -> None:
        """Start a linearizable read ``ctx``; ``callback(index, None)`` once the read
        index is applied here, ``callback(None, error)`` if it fails. Raises
        NotLeader at once on a follower (callback not called)."""
        self.requests.read(ctx, callback)  # before the call: it may be ready within it
        try:
            self.driver.call(lambda core, now: core.read_index(now, ctx, lease))
        except BaseException:
            self.requests.forget_read(ctx)
            raise
