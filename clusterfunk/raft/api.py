"""The Trio API of a Raft node.

::

    async with RaftNode("n1", bind="127.0.0.1:0", peers={...}, storage=MemoryStorage(),
                        state_machine=KVStateMachine()) as node:
        result = await node.apply(kv.put("k", "v"), timeout=1.0)
        value = await node.read(lambda sm: sm.get("k"))

The node runs a :class:`~clusterfunk.raft.core.RaftCore` through the shared
:class:`~clusterfunk.runtime.driver.Driver` on the real transport
(:func:`clusterfunk.runtime.trio_host.open_driver`). Everything here is a thin,
synchronous-at-heart layer over the core's public events:

* a proposal is pending under its ``(index, term)``; the core's ``Applied(index,
  term, result)`` resolves it. An ``Applied`` at that index with another term
  means the proposal was overwritten: :class:`LeadershipLost`. When this node stops
  being leader, every pending proposal fails with :class:`LeadershipLost` (its
  fate is unknown: it may still commit under the next leader);
* a read asks the core for a ReadIndex (``read_index(now, ctx)``); on
  ``ReadReady(ctx, index)`` it waits until ``last_applied >= index`` and then runs
  the query on the local state machine (linearizable);
* :meth:`RaftNode.events` gives each subscriber its own unbounded queue of role,
  leader and configuration changes: a slow subscriber costs memory, never an
  event.

Invariant: every waiter (proposal, read, applied-index wait) is removed exactly
once, by its resolution, its failure or its caller's timeout.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import weakref
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from clusterfunk.raft import core as _core
from clusterfunk.raft import errors as _errors
from clusterfunk.raft import events as _core_events
from clusterfunk.raft.events import ReadFailure
from clusterfunk.raft.roles import Role
from clusterfunk.runtime.api import split_address
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.net import format_address, free_port

NotLeader = _errors.NotLeader
LeadershipLost = _errors.LeadershipLost


class Timeout(_errors.RaftError):
    """The operation did not complete in time; whether it took effect is unknown."""


class NodeStopped(_errors.RaftError):
    """The node was closed while the operation was pending."""


class EventStream:
    """One subscriber's event queue (see :meth:`RaftNode.events`): an async iterator
    and an async context manager that unsubscribes on exit. A stream dropped
    without closing is unsubscribed when it is garbage collected."""

    def __init__(
        self,
        node: RaftNode,
        send: trio.MemorySendChannel[Any],
        recv: trio.MemoryReceiveChannel[Any],
    ) -> None:
        self._node = node
        self._send = send
        self._recv = recv
        weakref.finalize(self, recv.close)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def receive_nowait(self) -> Any:
        """The next queued event; raises ``trio.WouldBlock`` if there is none."""
        return self._recv.receive_nowait()

    def close(self) -> None:
        subs = self._node._subscribers
        if self._send in subs:
            subs.remove(self._send)
        self._send.close()
        self._recv.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class _StepEnd:
    """Marker event appended after the events of one core step (see :class:`_Stepped`)."""

    __slots__ = ()


STEP_END = _StepEnd()


class _Stepped:
    """The core as the driver sees it: identical, except that

    * a step's events end with :data:`STEP_END`, so the node can run work once per
      step (for example, send all replies of a step in one write) instead of once
      per event;
    * its deadline is re-armed lazily: a follower's election deadline moves later
      on every AppendEntries, and re-arming the timer each time costs more than
      the step. While the core's deadline is at or after the armed one, the armed
      one stays; when it fires early, the core is not ticked (its deadline has
      not passed) and the timer is re-armed at the core's deadline. A deadline
      that moves earlier is armed at once. Invariant: armed <= core deadline, so
      the core is ticked no later than it asked."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.start = core.start
        self.on_message = core.on_message
        self._on_tick = core.on_tick
        self._next_deadline = core.next_deadline
        self._drain = core.drain
        self._armed = math.inf

    def next_deadline(self) -> float:
        real = self._next_deadline()
        if real < self._armed:
            self._armed = real
        return self._armed

    def on_tick(self, now: float) -> None:
        if now >= self._next_deadline():
            self._on_tick(now)
        self._armed = self._next_deadline()  # fired (or spurious): re-arm exactly

    def drain(self) -> Any:
        out = self._drain()
        if out is not None and out.events:
            out.events.append(STEP_END)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


class _Waiter:
    """A one-shot result slot a task can wait on (a tiny future)."""

    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def set(self, result: Any) -> None:
        if not self.event.is_set():
            self.result = result
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
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
    node that waits to be added). ``config`` is a ``RaftConfig``.
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
    ) -> None:
        self.server_id = server_id
        self.bind = bind
        self.peers = dict(peers or {})
        self.storage = storage
        self.state_machine = state_machine
        self.config = config
        self.advertise = advertise
        self.tracer = tracer
        self.rng = rng if rng is not None else random.Random()
        self.bootstrap = bootstrap
        self.core: Any = None
        self.driver: Driver | None = None
        self._stack: AsyncExitStack | None = None
        self._pending: dict[int, tuple[int, Callable[[Any, BaseException | None], None]]] = {}
        self._reads: dict[int, Callable[[int | None, BaseException | None], None]] = {}
        self._applied_waits: list[tuple[int, int, _Waiter]] = []
        self._seq = itertools.count(1)
        self._subscribers: list[trio.MemorySendChannel[Any]] = []
        self._closed = False
        self._in_step = False
        self._step_hooks: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> RaftNode:
        from clusterfunk.runtime.trio_host import open_driver

        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._settle_address()
            bootstrap = dict(self.peers) if self.bootstrap and self.peers else None
            self.core = _make_core(
                self.server_id, self.storage, self.state_machine, self.rng, self.config, bootstrap
            )
            # No tracer, no reader of raft.apply records: skip their sha256 per entry.
            self.core.trace_applies = self.tracer is not None
            self.driver = await stack.enter_async_context(
                open_driver(
                    self.server_id,
                    _Stepped(self.core),
                    self.bind,
                    advertise=self.advertise,
                    tracer=self.tracer,
                )
            )
            self.driver.subscribe(self._on_event)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._closed = True
        self._fail_all(NodeStopped(f"{self.server_id} stopped"))
        for ch in self._subscribers:
            ch.close()
        self._subscribers.clear()
        stack, self._stack = self._stack, None
        if stack is not None:
            return await stack.__aexit__(*exc)
        return None

    def _settle_address(self) -> None:
        """The configuration needs this node's real address before the core starts:
        with ``bind`` port 0, pick a free port now (TCP and UDP), and use it for this
        node's entry in ``peers`` (added for a single-node bootstrap with no peers)."""
        host, port = split_address(self.bind)
        mine = self.peers.get(self.server_id)
        if port == 0:
            port = free_port(host)
            self.bind = format_address(host, port)
        if self.bootstrap and (not self.peers or (mine is not None and mine.endswith(":0"))):
            self.peers[self.server_id] = self.advertise or self.bind

    @property
    def address(self) -> str:
        """This node's advertised Raft address (``host:port``)."""
        assert self.driver is not None
        return self.driver.transport.local_address

    # -- observable state --------------------------------------------------------

    @property
    def role(self) -> Role:
        return _role_name(self.core.role)

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
        drv = self._running()
        pending = self._pending

        def run(core: Any, now: float) -> tuple[int, int]:
            index, term = core.propose(now, command)
            # Registered inside the step: a single-voter leader commits and applies
            # before the step's events are dispatched.
            pending[index] = (term, callback)
            return index, term

        return drv.call(run)

    def propose_many_nowait(
        self, items: list[tuple[bytes, Callable[[Any, BaseException | None], None]]]
    ) -> list[BaseException | None]:
        """Propose several commands in one core step (one flush, one batch on the
        wire). Returns, per item, None or the error it was refused with (the
        callback is not called for refused items)."""
        drv = self._running()
        pending = self._pending
        errors: list[BaseException | None] = []

        def run(core: Any, now: float) -> None:
            try:  # the fast path: one log append for the whole batch
                placed = core.propose_many(now, [c for c, _ in items])
            except Exception:
                pass
            else:
                for (index, term), (_c, cb) in zip(placed, items, strict=True):
                    pending[index] = (term, cb)
                errors.extend([None] * len(items))
                return
            propose = core.propose
            for command, cb in items:
                try:
                    index, term = propose(now, command)
                except Exception as exc:  # NotLeader, ProposalTooLarge, ...
                    errors.append(exc)
                    continue
                pending[index] = (term, cb)
                errors.append(None)

        drv.call(run)
        return errors

    async def apply(self, command: bytes, timeout: float | None = None) -> Any:
        """Replicate ``command``; return the state machine's result once it is
        committed and applied here.

        Raises :class:`NotLeader` (with ``leader_id`` / ``leader_address`` when
        known), :class:`Timeout` (outcome unknown), :class:`LeadershipLost`
        (outcome unknown, or certainly lost when overwritten).
        """
        w = _Waiter()

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                w.fail(error)
            else:
                w.set(result)

        index, _term = self.propose_nowait(command, done)
        return await self._wait(w, timeout, lambda: self._pending.pop(index, None))

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
        drv = self._running()
        ctx = next(self._seq)
        w = _Waiter()

        def ready(index: int | None, error: BaseException | None) -> None:
            if error is not None:
                w.fail(error)
            else:
                w.set(index)

        self._reads[ctx] = ready
        try:
            drv.call(lambda core, now: core.read_index(now, ctx, lease))
        except BaseException:
            self._reads.pop(ctx, None)
            raise
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            index = await self._wait(w, None, lambda: self._reads.pop(ctx, None))
            await self._wait_applied(index)
            return query(self.state_machine) if query is not None else None
        assert scope.cancelled_caught
        self._reads.pop(ctx, None)
        raise Timeout(f"read not confirmed within {timeout} s")

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
        drv = self._running()
        async with self.events() as events:
            drv.call(lambda core, now: core.transfer_leadership(now, target))
            with trio.move_on_after(math.inf if timeout is None else timeout):
                async for ev in events:
                    leader = getattr(ev, "leader_id", None)
                    if leader is not None and leader != self.server_id:
                        return leader
        raise Timeout(f"leadership transfer not observed within {timeout} s")

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Wait until this node has applied ``index``."""
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._wait_applied(index)
            return
        raise Timeout(f"index {index} not applied within {timeout} s")

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

    def events(self) -> EventStream:
        """Subscribe to role, leader and configuration change events (from now on)::

            async for ev in node.events(): ...          # or, to unsubscribe on exit:
            async with node.events() as events:
                async for ev in events: ...

        The queue is unbounded and per subscriber: nothing is ever dropped. The
        stream ends when the node stops.
        """
        send, recv = trio.open_memory_channel[Any](math.inf)
        self._subscribers.append(send)
        return EventStream(self, send, recv)

    # -- internals ---------------------------------------------------------------

    def _running(self) -> Driver:
        if self.driver is None or self._closed or not self.driver.running:
            raise NodeStopped(f"{self.server_id} is not running")
        return self.driver

    async def _config_change(self, fn: Callable[[Any, float], Any], timeout: float | None) -> int:
        drv = self._running()
        w = _Waiter()
        pending = self._pending

        def run(core: Any, now: float) -> int:
            res = fn(core, now)
            if isinstance(res, tuple):
                index, term = res
            else:  # the index of the configuration entry (maybe an existing one)
                index = res
                term = core.log.term_at(index)
                term = core.term if term is None else term

            def done(result: Any, error: BaseException | None) -> None:
                if error is not None:
                    w.fail(error)
                else:
                    w.set(index)

            if index <= core.last_applied:  # nothing to do (already a member, as asked)
                w.set(index)
            else:
                pending[index] = (term, done)  # inside the step, as in propose_nowait
            return index

        index = drv.call(run)
        return await self._wait(w, timeout, lambda: self._pending.pop(index, None))

    async def _wait(self, w: _Waiter, timeout: float | None, forget: Callable[[], Any]) -> Any:
        if timeout is None:
            try:
                return await w.wait()
            finally:
                if not w.event.is_set():
                    forget()
        with trio.move_on_after(timeout):
            return await w.wait()
        forget()
        raise Timeout(f"no result within {timeout} s")

    async def _wait_applied(self, index: int) -> None:
        if self.core.last_applied >= index:
            return
        w = _Waiter()
        heapq.heappush(self._applied_waits, (index, next(self._seq), w))
        try:
            await w.wait()
        finally:
            if not w.event.is_set():
                self._applied_waits = [x for x in self._applied_waits if x[2] is not w]
                heapq.heapify(self._applied_waits)

    def _fail_all(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for _term, cb in pending.values():
            cb(None, error)
        reads, self._reads = self._reads, {}
        for cb in reads.values():
            cb(None, error)
        waits, self._applied_waits = self._applied_waits, []
        for _i, _s, w in waits:
            w.fail(error)

    def after_step(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the events of the current core step have all been
        dispatched (at once when not called from inside an event callback)."""
        if not self._in_step:
            fn()
        elif fn not in self._step_hooks:
            self._step_hooks.append(fn)

    def _on_event(self, ev: Any) -> None:
        """Driver subscriber: runs synchronously inside the core's flush."""
        if ev is STEP_END:
            self._in_step = False
            hooks, self._step_hooks = self._step_hooks, []
            for fn in hooks:
                fn()
            return
        self._in_step = True
        if isinstance(ev, _core_events.Applied):
            self._on_applied(ev.index, ev.term, ev.result)
            return
        if isinstance(ev, _core_events.ReadReady):
            cb = self._reads.pop(ev.ctx, None)
            if cb is not None:
                cb(ev.index, None)
            return
        if isinstance(ev, _core_events.ReadFailed):
            cb = self._reads.pop(ev.ctx, None)
            if cb is not None:
                cb(None, _read_error(ev, self.core))
            return
        if isinstance(ev, _core_events.RoleChanged) and _role_name(ev.role) is not Role.LEADER:
            # A deposed leader cannot know the fate of what it proposed.
            pending, self._pending = self._pending, {}
            lost = LeadershipLost(f"{self.server_id} lost leadership in term {ev.term}")
            for _term, cb in pending.values():
                cb(None, lost)
            reads, self._reads = self._reads, {}
            for cb in reads.values():
                cb(None, lost)
        gone = None
        for ch in self._subscribers:
            try:
                ch.send_nowait(ev)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                gone = [*(gone or []), ch]  # its reader was closed or collected
        for ch in gone or ():
            self._subscribers.remove(ch)

    def _on_applied(self, index: int, term: int, result: Any) -> None:
        p = self._pending.pop(index, None)
        if p is not None:
            if p[0] == term:
                p[1](result, None)
            else:
                p[1](
                    None,
                    LeadershipLost(f"entry {index} of term {p[0]} was overwritten by term {term}"),
                )
        waits = self._applied_waits
        while waits and waits[0][0] <= index:
            heapq.heappop(waits)[2].set(None)


def _role_name(role: str) -> Role:
    """The core's role as a :class:`Role` (its value is the name traces use)."""
    return Role(role)


def _read_error(ev: _core_events.ReadFailed, core: Any) -> BaseException:
    """The exception a failed read raises, chosen by its typed reason: a server that
    lost leadership answers :class:`NotLeader` (with the leader it knows of now, if
    any), so the caller retries at the new leader."""
    if ev.reason is ReadFailure.LEADERSHIP_LOST:
        return NotLeader(core.leader_id, core.leader_address)
    return LeadershipLost(f"read failed: {ev.reason}")


def _make_core(
    server_id: str,
    storage: Any,
    state_machine: Any,
    rng: random.Random,
    config: Any,
    bootstrap: dict[str, str] | None,
) -> Any:
    kwargs: dict[str, Any] = {}
    if config is not None:
        kwargs["config"] = config
    return _core.RaftCore(server_id, storage, state_machine, rng, bootstrap=bootstrap, **kwargs)
