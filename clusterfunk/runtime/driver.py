"""The driver: the one piece of runtime code that runs a core, in production and in
simulation alike.

It turns transport callbacks and clock wake-ups into core inputs, and the core's
:class:`~clusterfunk.runtime.api.Output` into transport sends, durable writes,
public events and trace records, in that order of obligations:

1. decode incoming bytes; malformed input is dropped and counted (never raised);
2. feed the core;
3. hand ``persist`` records to the persister (a batch with a token is synced and
   reported back through :meth:`Driver.on_persisted`, which tells the core);
4. encode and hand ``sends`` to the transport (oversized datagrams are refused,
   counted and reported as ``net.oversize``), unless they depend on a batch that
   is not durable yet (``Output.wait_token``): then they, and every later send,
   are held in order and released when the persister reports that batch durable.
   (Sends that depend on nothing un-durable, not even this output's own batch,
   are handed over before step 3: a Raft leader's AppendEntries for entries it
   writes in parallel.) A persister that fails stops the driver (fail-stop):
   nothing after it leaves, held sends included;
5. publish ``events`` to subscribers, write ``trace`` records; after a step that
   published events, call the step-end hooks once (so work can be done once per
   step instead of once per event);
6. re-arm the clock at the core's next deadline.

Timer re-arming is exact by default. With ``lazy_timer=True`` it is lazy: a core
whose deadline moves later on almost every step (a Raft follower's election
deadline moves on every AppendEntries) keeps the armed, earlier wake-up; when it
fires before the core's deadline the core is not ticked and the timer is re-armed
at the real deadline. A deadline that moves earlier is armed at once. Invariant:
armed <= the core's deadline, so a core is never ticked later than it asked.

All handlers are synchronous: the trio runtime calls them from its receive and
timer tasks, the simulator calls them from its event loop one at a time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs

from clusterfunk import wire
from clusterfunk.runtime.api import (
    Clock,
    Core,
    DiskFailure,
    DurableCore,
    Output,
    Persister,
    Send,
    Tracer,
    Transport,
)

if TYPE_CHECKING:
    from clusterfunk.runtime.auth import Authorizer


#: Seconds a driver waits before ticking again a core whose tick left its own deadline
#: due (see :meth:`Driver.on_timer`).
STUCK_TIMER_DELAY = 0.01


@attrs.define
class DriverStats:
    """Counters a driver keeps (exposed for metrics and tests)."""

    datagrams_in: int = 0
    frames_in: int = 0
    datagrams_out: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    malformed: int = 0
    oversize: int = 0
    handler_errors: int = 0
    unauthorized: int = 0  # refused by the authorizer: never seen by the core
    stuck_timers: int = 0  # ticks after which the core's deadline stayed due (a core bug)


class Driver:
    """Runs one core on one transport endpoint with one clock."""

    def __init__(
        self,
        node: str,
        core: Core,
        transport: Transport,
        clock: Clock,
        *,
        tracer: Tracer | None = None,
        persister: Persister | None = None,
        encode: Callable[[Any], bytes] = wire.encode,
        decode: Callable[[bytes], Any] = wire.decode,
        authorizer: Authorizer | None = None,
        lazy_timer: bool = False,
    ) -> None:
        self.node = node
        self.core = core
        self.transport = transport
        self.clock = clock
        self.tracer = tracer
        self.persister = persister
        self.encode = encode
        self.decode = decode
        #: asked before the core sees a message (None: everything is allowed)
        self.authorizer = authorizer
        self.stats = DriverStats()
        self._subscribers: list[Callable[[Any], None]] = []
        self._step_end: list[Callable[[], None]] = []
        self._after_step: list[Callable[[], None]] = []
        self._deadline = math.inf
        self._core_deadline = math.inf  # the core's next_deadline() as _flush last read it
        self.lazy_timer = lazy_timer
        self.running = False
        # durability (see _handle): sends held until their wait token is durable
        self._held: deque[tuple[int, list[Send]]] = deque()
        self._durable = 0  # highest persist token the persister reported durable
        self._acked = 0  # highest token the core has been told about
        self._in_flush = False
        self.persist_failure: BaseException | None = None
        transport.bind(self)
        if persister is not None:
            persister.bind(self)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the core and arm the first timer."""
        self.running = True
        self.core.start(self.clock.now())
        self._flush()

    def stop(self) -> None:
        """Stop feeding the core; later callbacks are ignored."""
        self.running = False

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Receive every public event the core emits, in order. Returns an unsubscriber."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def on_step_end(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every step whose events were published (once per
        step, after the last subscriber saw the last event). Returns a remover."""
        self._step_end.append(callback)
        return lambda: self._step_end.remove(callback)

    def after_step(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every step (every input: message, timer, call),
        once its output is handled, events or not: for waiters that re-check a
        condition on the core. Returns a remover."""
        self._after_step.append(callback)
        return lambda: self._after_step.remove(callback)

    def call(self, fn: Callable[[Any, float], Any]) -> Any:
        """Run ``fn(core, now)`` as a local input (an API call) and flush its output."""
        if not self.running:
            raise RuntimeError(f"driver for {self.node} is not running")
        result = fn(self.core, self.clock.now())
        self._flush()
        return result

    # -- transport callbacks ----------------------------------------------

    def on_datagram(self, src: str, data: bytes) -> None:
        if self.running:
            self.stats.datagrams_in += 1
            self._receive(src, data, False, None)

    def on_frame(self, src: str, data: bytes) -> None:
        self.on_frame_from(src, None, data)

    def on_frame_from(self, src: str, identity: str | None, data: bytes) -> None:
        """A frame with the authenticated identity of its connection (None: none)."""
        if self.running:
            self.stats.frames_in += 1
            self._receive(src, data, True, identity)

    def _receive(self, src: str, data: bytes, stream: bool, identity: str | None) -> None:
        self.stats.bytes_in += len(data)
        try:
            msg = self.decode(data)
        except wire.WireError as exc:
            self._malformed(src, exc)
            return
        authorizer = self.authorizer
        if authorizer is not None and not authorizer.allow(identity, msg, stream):
            self.stats.unauthorized += 1
            return
        self.core.on_message(self.clock.now(), src, msg, stream)
        self._flush()

    def _malformed(self, src: str, exc: wire.WireError) -> None:
        self.stats.malformed += 1
        self._trace("net.malformed", {"src": src, "reason": str(exc)})

    # -- clock callback ----------------------------------------------------

    def on_timer(self) -> None:
        if not self.running:
            return
        # The armed timer is spent: re-arm below (exact mode re-arms even at infinity,
        # which a clock treats as a cancel; lazy mode arms only a finite deadline).
        self._deadline = math.inf if self.lazy_timer else -math.inf
        now = self.clock.now()
        core = self.core
        if now >= core.next_deadline():
            core.on_tick(now)
            self._flush()
            # (the deadline _flush read is still the core's unless a hook ran after it)
            due = self._core_deadline if not self._after_step else core.next_deadline()
            if self.running and due <= now:
                # The tick left the core's timer due: a core bug. Counted, and the
                # next tick waits STUCK_TIMER_DELAY instead of spinning at one instant.
                self.stats.stuck_timers += 1
                self._deadline = now + STUCK_TIMER_DELAY
                self.clock.schedule(self, self._deadline)
        else:  # spurious wake-up (clock skew changed, or a stale timer): re-arm
            self._arm(force=True)

    # -- output ------------------------------------------------------------

    def _flush(self) -> None:
        self._in_flush = True
        core = self.core
        try:
            out = core.drain()
            if out is not None:
                self._handle(out)
            # Durability reported during this step (a synchronous persister): release
            # what waited for it, tell the core, and hand over what that produced.
            while self._durable > self._acked and self.running:
                self._acked = self._durable
                self._release()
                cast(DurableCore, core).on_persisted(self.clock.now(), self._acked)
                out = core.drain()
                if out is not None:
                    self._handle(out)
        finally:
            self._in_flush = False
        self._arm()
        if self._after_step:
            for hook in tuple(self._after_step):
                hook()

    # -- persister callbacks -----------------------------------------------

    def on_persisted(self, token: int) -> None:
        """The persister made every batch up to ``token`` durable."""
        if token > self._durable:
            self._durable = token
        if not self._in_flush and self.running:
            self._flush()

    def on_persist_failed(self, exc: BaseException) -> None:
        """Fail-stop: a write or sync failed, so nothing after it may be relied on.
        The driver stops at once (held messages never leave, no input is taken);
        the host stops the node."""
        self.persist_failure = exc
        self._held.clear()
        self.running = False

    def _release(self) -> None:
        held = self._held
        while held and held[0][0] <= self._durable:
            self._send(held.popleft()[1])

    def _handle(self, out: Output) -> None:
        # Sends that do not wait for this output's own batch (a Raft leader's
        # AppendEntries for entries it writes in parallel) leave before it is handed
        # over: with a synchronous persister the sync then overlaps the followers'.
        early = bool(out.sends) and out.wait_token < out.persist_token \
            and not self._held and out.wait_token <= self._durable
        if early:
            self._send(out.sends)
        if out.persist:
            if self.persister is None:
                raise RuntimeError("core produced records to persist but has no persister")
            try:
                self.persister.persist(out.persist, out.persist_token)
            except Exception as exc:
                self.on_persist_failed(exc)
                raise DiskFailure(f"{self.node}: cannot persist: {exc}") from exc
            if not self.running:  # the persister failed (fail-stop): nothing leaves
                return
        if out.sends and not early:
            if self._held or out.wait_token > self._durable:
                # depends on a batch that is not durable yet (or must stay behind
                # messages that do): hold, in order
                self._held.append((out.wait_token, out.sends))
            else:
                self._send(out.sends)
        if out.events or out.trace:
            self._publish(out)

    def _send(self, sends: list[Send]) -> None:
        if sends:
            transport = self.transport
            stats = self.stats
            limit = transport.max_datagram
            encode = self.encode
            last_msg: Any = None
            data = b""
            for s in sends:
                msg = s.msg
                if msg is not last_msg:  # one message object sent to many peers: encode once
                    data = encode(msg)
                    last_msg = msg
                if s.stream:
                    stats.frames_out += 1
                    stats.bytes_out += len(data)
                    transport.send_frame(s.dest, data)
                elif len(data) > limit:
                    stats.oversize += 1
                    self._trace(
                        "net.oversize",
                        {"dst": s.dest, "bytes": len(data), "msg": type(s.msg).__name__},
                    )
                else:
                    stats.datagrams_out += 1
                    stats.bytes_out += len(data)
                    transport.send_datagram(s.dest, data)

    def _publish(self, out: Output) -> None:
        if out.events:
            for ev in out.events:
                for cb in tuple(self._subscribers):
                    cb(ev)
            for hook in tuple(self._step_end):
                hook()
        if out.trace and self.tracer is not None:
            emit = self.tracer.emit
            node = self.node
            for ev, fields in out.trace:
                emit(node, ev, fields)

    def _arm(self, force: bool = False) -> None:
        deadline = self._core_deadline = self.core.next_deadline()
        if force or deadline < self._deadline or (
            deadline != self._deadline and not self.lazy_timer
        ):
            self._deadline = deadline
            self.clock.schedule(self, deadline)

    def _trace(self, ev: str, fields: dict[str, Any]) -> None:
        if self.tracer is not None:
            self.tracer.emit(self.node, ev, fields)
