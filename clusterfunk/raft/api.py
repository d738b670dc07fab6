"""The Trio API of a Raft node.

::

    async with RaftNode("n1", bind="127.0.0.1:0", peers={...}, storage=MemoryStorage(),
                        state_machine=KVStateMachine()) as node:
        result = await node.apply(kv.put("k", "v"), timeout=1.0)
        value = await node.read(lambda sm: sm.get("k"))

The node is the one Raft server assembly (:class:`~clusterfunk.raft.assembly.RaftServer`:
core, driver with the lazy timer, request waiters), the same the simulator runs, on
a :class:`~clusterfunk.runtime.trio_host.TrioHost` (the port is bound first, so
``bind`` with port 0 is race-free). Everything here is a thin layer over the
assembly's :class:`~clusterfunk.raft.requests.Requests`:

* a proposal is pending under its ``(index, term)``; the core's ``Applied(index,
  term, result)`` resolves it. An ``Applied`` at that index with another term
  means the proposal was overwritten: :class:`LeadershipLost`. When this node stops
  being leader, every pending proposal fails with :class:`LeadershipLost` (its
  fate is unknown: it may still commit under the next leader);
* a read asks the core for a ReadIndex (``read_index(now, ctx)``); on
  ``ReadReady(ctx, index)`` it waits until ``last_applied >= index`` and then runs
  the query on the local state machine (linearizable);
* :meth:`RaftNode.events` gives each subscriber its own unbounded queue of role,
  leader and configuration changes (:class:`clusterfunk.runtime.events.EventStream`):
  a slow subscriber costs memory, never an event.

Invariant: every waiter (proposal, read, applied-index wait) is removed exactly
once, by its resolution, its failure or its caller's timeout.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from clusterfunk.raft import errors as _errors
from clusterfunk.raft import events as _core_events
from clusterfunk.raft.assembly import RaftServer
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.roles import Role
from clusterfunk.raft.storage import MemoryStorage
from clusterfunk.runtime.api import Persister
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.events import EventHub, EventStream
from clusterfunk.runtime.host import RAFT
from clusterfunk.runtime.persist import open_persister
from clusterfunk.runtime.tls import TLSConfig
from clusterfunk.runtime.trio_host import open_host

NotLeader = _errors.NotLeader
LeadershipLost = _errors.LeadershipLost

#: Core events that concern request waiters only (not published to event streams).
_PRIVATE_EVENTS = (_core_events.Applied, _core_events.ReadReady, _core_events.ReadFailed)


class Timeout(_errors.RaftError):
    """The operation did not complete in time; whether it took effect is unknown."""


class NodeStopped(_errors.RaftError):
    """The node was closed while the operation was pending."""


class _Waiter:
    """A one-shot result slot a task can wait on (a tiny future)."""

    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def __call__(self, result: Any, error: BaseException | None) -> None:
        if not self.event.is_set():
            self.result = result
            self.error = error
            self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.result


class RaftNode:
    """One Raft server on the real network. Use with ``async with``.

    ``peers`` maps server id -> ``host:port`` of every voter of the initial
    configuration (this node included; its own entry may say port 0 when
    ``bind`` picks the port). ``bootstrap=False`` starts with no configuration (a
    node that waits to be added). ``config`` is a ``RaftConfig``. ``tls``
    (:func:`clusterfunk.runtime.tls.load_tls_dir`) runs mutual TLS on the Raft port:
    then a Raft message is accepted only from the server its certificate names.

    Timeouts: every waiting method takes ``timeout=`` as a convenience (raising
    :class:`Timeout`); ``trio.fail_after`` / ``move_on_after`` around a call work
    just as well: cancellation removes the waiter.
    """

    def __init__(
        self,
        server_id: str,
        bind: str = "127.0.0.1:0",
        *,
        peers: dict[str, str] | None = None,
        storage: Any,
        state_machine: Any,
        config: Any = None,
        advertise: str | None = None,
        tracer: Any = None,
        rng: random.Random | None = None,
        bootstrap: bool = True,
        tls: TLSConfig | None = None,
    ) -> None:
        self.server_id = server_id
        self.tls = tls
        self.bind = bind
        self.peers = dict(peers or {})
        self.storage = storage
        self.state_machine = state_machine
        self.config = config
        self.advertise = advertise
        self.tracer = tracer
        self.rng = rng if rng is not None else random.Random()
        self.bootstrap = bootstrap
        self.server: RaftServer | None = None
        self._stack: AsyncExitStack | None = None
        self._seq = itertools.count(1)
        self._events: EventHub[Any] = EventHub()
        self._closed = False
        self._in_step = False
        self._step_hooks: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> RaftNode:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            # A durable store syncs in a worker thread (never on the event loop); the
            # persister outlives the host (LIFO), so it writes what is still queued.
            persister: Persister | None = None
            if not isinstance(self.storage, MemoryStorage):
                persister = await stack.enter_async_context(open_persister(self.storage))
            host = await stack.enter_async_context(
                open_host(
                    self.server_id,
                    {RAFT: self.bind},
                    advertise={RAFT: self.advertise} if self.advertise else None,
                    tracer=self.tracer,
                    rng=random.Random(self.rng.random()),
                    tls=self.tls,
                    tls_ports=(RAFT,) if self.tls is not None else (),
                )
            )
            mine = self.peers.get(self.server_id)
            if self.bootstrap and (not self.peers or (mine is not None and mine.endswith(":0"))):
                self.peers[self.server_id] = host.address(RAFT)
            server = RaftServer(
                host,
                storage=self.storage,
                persister=persister,
                state_machine=self.state_machine,
                rng=self.rng,
                config=self.config,
                bootstrap=self.peers if self.bootstrap and self.peers else None,
                # no tracer, no reader of raft.apply records: skip their sha256 per entry
                trace_applies=self.tracer is not None,
            )
            server.driver.subscribe(self._on_event)
            server.driver.on_step_end(self._on_step_end)
            self.server = server
            host.start()
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._closed = True
        if self.server is not None:
            self.server.requests.fail_all(NodeStopped(f"{self.server_id} stopped"))
        self._events.close()
        stack, self._stack = self._stack, None
        if stack is not None:
            return await stack.__aexit__(*exc)
        return None

    @property
    def core(self) -> RaftCore:
        """The Raft core (read-only use: its public attributes and methods)."""
        assert self.server is not None, "the node is not running"
        return self.server.core

    @property
    def driver(self) -> Driver:
        assert self.server is not None, "the node is not running"
        return self.server.driver

    @property
    def address(self) -> str:
        """This node's advertised Raft address (``host:port``)."""
        return self.driver.transport.local_address

    # -- observable state --------------------------------------------------------

    @property
    def role(self) -> Role:
        return Role(self.core.role)

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def leader(self) -> str | None:
        """The current leader's server id, when known."""
        return self.core.leader_id

    @property
    def leader_address(self) -> str | None:
        return self.core.leader_address

    @property
    def commit_index(self) -> int:
        return self.core.commit_index

    @property
    def last_applied(self) -> int:
        return self.core.last_applied

    @property
    def configuration(self) -> Any:
        return self.core.configuration

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    # -- commands ------------------------------------------------------------------

    def propose_nowait(
        self, command: bytes, callback: Callable[[Any, BaseException | None], None]
    ) -> tuple[int, int]:
        """Propose ``command`` without waiting; ``callback(result, error)`` runs once
        it is applied (or fails). Raises NotLeader / ProposalTooLarge at once."""
        return self._running().propose(command, callback)

    def propose_many_nowait(
        self, items: list[tuple[bytes, Callable[[Any, BaseException | None], None]]]
    ) -> list[BaseException | None]:
        """Propose several commands in one core step (one flush, one batch on the
        wire). Returns, per item, None or the error it was refused with (the
        callback is not called for refused items)."""
        server = self._running()
        requests = server.requests
        errors: list[BaseException | None] = []

        def run(core: Any, now: float) -> None:
            try:  # the fast path: one log append for the whole batch
                placed = core.propose_many(now, [c for c, _ in items])
            except Exception:
                pass
            else:
                for (index, term), (_c, cb) in zip(placed, items, strict=True):
                    requests.pending(index, term, cb)
                errors.extend([None] * len(items))
                return
            propose = core.propose
            for command, cb in items:
                try:
                    index, term = propose(now, command)
                except Exception as exc:  # NotLeader, ProposalTooLarge, ...
                    errors.append(exc)
                    continue
                requests.pending(index, term, cb)
                errors.append(None)

        server.driver.call(run)
        return errors

    async def apply(self, command: bytes, timeout: float | None = None) -> Any:
        """Replicate ``command``; return the state machine's result once it is
        committed and applied here.

        Raises :class:`NotLeader` (with ``leader_id`` / ``leader_address`` when
        known), :class:`Timeout` (outcome unknown), :class:`LeadershipLost`
        (outcome unknown, or certainly lost when overwritten).
        """
        w = _Waiter()
        server = self._running()
        index, _term = server.propose(command, w)
        return await self._wait(w, timeout, lambda: server.requests.forget_proposal(index))

    async def read(
        self,
        query: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        *,
        lease: bool = False,
    ) -> Any:
        """A linearizable read: confirm leadership with a quorum (ReadIndex),
        wait until that index is applied here, then return ``query(state_machine)``
        (or None without a query). ``lease=True`` skips the quorum round while the
        leader's lease holds (relies on bounded clock drift: see docs/raft.md)."""
        server = self._running()
        ctx = next(self._seq)
        w = _Waiter()
        server.read_index(ctx, w, lease)
        await self._wait(w, timeout, lambda: server.requests.forget_read(ctx))
        return query(self.state_machine) if query is not None else None

    async def add_voter(self, server_id: str, address: str, timeout: float | None = None) -> int:
        """Add (or promote) a voter; returns the configuration entry's index once applied."""
        return await self._config_change(
            lambda core, now: core.add_voter(now, server_id, address), timeout
        )

    async def add_nonvoter(self, server_id: str, address: str, timeout: float | None = None) -> int:
        return await self._config_change(
            lambda core, now: core.add_nonvoter(now, server_id, address), timeout
        )

    async def remove_server(self, server_id: str, timeout: float | None = None) -> int:
        return await self._config_change(
            lambda core, now: core.remove_server(now, server_id), timeout
        )

    async def transfer_leadership(
        self, target: str | None = None, timeout: float | None = None
    ) -> str:
        """Hand leadership to ``target`` (or the most up-to-date voter); returns the
        new leader's id once this node sees it."""
        server = self._running()
        async with self.events() as events:
            server.driver.call(lambda core, now: core.transfer_leadership(now, target))
            with trio.move_on_after(math.inf if timeout is None else timeout):
                async for ev in events:
                    leader = getattr(ev, "leader_id", None)
                    if leader is not None and leader != self.server_id:
                        return leader
        raise Timeout(f"leadership transfer not observed within {timeout} s")

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Wait until this node has applied ``index``."""
        server = self._running()
        w = _Waiter()
        cancel = server.requests.when_applied(index, lambda: w(None, None))
        await self._wait(w, timeout, cancel)

    async def wait_leader(self, timeout: float | None = None) -> str:
        """Wait until some leader is known; return its id."""
        with trio.move_on_after(math.inf if timeout is None else timeout):
            async with self.events() as events:
                if self.leader is not None:
                    return self.leader
                async for _ev in events:
                    if self.leader is not None:
                        return self.leader
        raise Timeout(f"no leader within {timeout} s")

    def events(self) -> EventStream[Any]:
        """Subscribe to role, leader and configuration change events (from now on)::

            async for ev in node.events(): ...          # or, to unsubscribe on exit:
            async with node.events() as events:
                async for ev in events: ...

        The queue is unbounded and per subscriber: nothing is ever dropped. The
        stream ends when the node stops.
        """
        return self._events.subscribe()

    # -- internals ---------------------------------------------------------------

    def _running(self) -> RaftServer:
        if self.server is None or self._closed or not self.server.driver.running:
            raise NodeStopped(f"{self.server_id} is not running")
        return self.server

    async def _config_change(self, fn: Callable[[Any, float], Any], timeout: float | None) -> int:
        server = self._running()
        requests = server.requests
        w = _Waiter()

        def run(core: Any, now: float) -> int:
            res = fn(core, now)
            if isinstance(res, tuple):
                index, term = res
            else:  # the index of the configuration entry (maybe an existing one)
                index = res
                term = core.log.term_at(index)
                term = core.term if term is None else term

            def done(_result: Any, error: BaseException | None) -> None:
                w(index, error)

            if index <= core.last_applied:  # nothing to do (already a member, as asked)
                w(index, None)
            else:
                requests.pending(index, term, done)  # inside the step (Requests rule 4)
            return index

        index = server.driver.call(run)
        return await self._wait(w, timeout, lambda: requests.forget_proposal(index))

    async def _wait(self, w: _Waiter, timeout: float | None, forget: Callable[[], Any]) -> Any:
        """Wait for ``w``; on a timeout or a cancellation, ``forget`` the waiter."""
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                return await w.wait()
        finally:
            if not w.event.is_set():
                forget()
        raise Timeout(f"no result within {timeout} s")

    def after_step(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the events of the current core step have all been
        dispatched (at once when not called from inside an event callback)."""
        if not self._in_step:
            fn()
        elif fn not in self._step_hooks:
            self._step_hooks.append(fn)

    def _on_event(self, ev: Any) -> None:
        """Driver subscriber: runs synchronously inside the core's flush, after the
        request waiters (subscribed first) saw the event."""
        self._in_step = True
        if not isinstance(ev, _PRIVATE_EVENTS):
            self._events.publish(ev)

    def _on_step_end(self) -> None:
        self._in_step = False
        hooks, self._step_hooks = self._step_hooks, []
        for fn in hooks:
            fn()
