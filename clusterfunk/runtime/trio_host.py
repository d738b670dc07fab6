"""The Trio host: runs a :class:`~clusterfunk.runtime.driver.Driver` on real time
and the real network.

* :class:`TrioClock` implements :class:`~clusterfunk.runtime.api.Clock` on
  ``trio.current_time()`` (so ``trio.testing.MockClock`` drives it in tests). Each
  driver gets one timer task that sleeps in a cancel scope whose deadline is moved
  on every :meth:`~TrioClock.schedule`; no task is spawned per timer.
* :func:`open_driver` binds UDP + TCP (:func:`clusterfunk.runtime.net.open_transport`),
  builds the driver, starts it, and on exit stops it and closes everything.

Handler errors: an exception raised by the core (via the driver) from a timer or
a received message is logged with its traceback, counted in the driver's
``stats.handler_errors``, and re-raised, which tears the node down: the
``async with open_driver(...)`` block fails with an ``ExceptionGroup`` holding
the core's exception. A core that raised mid-transition is in an unknown state,
and crash-stop is what Raft and SWIM are built to survive. Malformed input never
gets this far: the driver drops and counts it.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from clusterfunk import wire
from clusterfunk.runtime.api import DEFAULT_DATAGRAM_BUDGET, Core, Persister, Tracer
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.net import NetTransport, open_transport

log = logging.getLogger("clusterfunk.runtime")


class _Timer:
    __slots__ = ("deadline", "driver", "scope")

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.deadline = math.inf
        self.scope: trio.CancelScope | None = None


class TrioClock:
    """Trio's clock plus one re-armable timer task per driver, run in ``nursery``.

    Invariant: a timer task sleeps in a cancel scope whose deadline equals its
    ``_Timer.deadline``; :meth:`schedule` updates both, so moving a deadline
    (earlier or later) costs one attribute write and no task switch.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        fail_stop: bool = True,
        on_handler_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._nursery = nursery
        self._timers: dict[Any, _Timer] = {}
        self.fail_stop = fail_stop
        self.on_handler_error = on_handler_error
        self.fired = 0

    def now(self) -> float:
        return trio.current_time()

    def schedule(self, driver: Any, deadline: float) -> None:
        timer = self._timers.get(driver)
        if timer is None:
            if deadline == math.inf:
                return
            timer = self._timers[driver] = _Timer(driver)
            self._nursery.start_soon(self._run, timer, name=f"cf-timer {driver!r}")
        timer.deadline = deadline
        if timer.scope is not None:
            timer.scope.deadline = deadline

    def cancel(self, driver: Any) -> None:
        """Disarm ``driver``'s timer (its task keeps sleeping until the nursery ends)."""
        if driver in self._timers:
            self.schedule(driver, math.inf)

    async def _run(self, timer: _Timer) -> None:
        while True:
            with trio.CancelScope(deadline=timer.deadline) as scope:
                timer.scope = scope
                await trio.sleep_forever()
            timer.scope = None
            if trio.current_time() < timer.deadline:
                continue  # the deadline moved later after the scope had expired
            timer.deadline = math.inf  # spent; on_timer re-arms through schedule()
            self.fired += 1
            try:
                timer.driver.on_timer()
            except Exception as exc:
                log.error("timer handler raised", exc_info=exc)
                if self.on_handler_error is not None:
                    self.on_handler_error(exc)
                if self.fail_stop:
                    raise


@asynccontextmanager
async def open_driver(
    node: str,
    core: Core | Callable[[str], Core],
    bind: str,
    *,
    advertise: str | None = None,
    tracer: Tracer | None = None,
    persister: Persister | None = None,
    encode: Callable[[Any], bytes] = wire.encode,
    decode: Callable[[bytes], Any] = wire.decode,
    max_datagram: int = DEFAULT_DATAGRAM_BUDGET,
) -> AsyncIterator[Driver]:
    """Run ``core`` as ``node`` on UDP + TCP ``bind`` (``host:port``) until the block exits.

    ``driver.transport.local_address`` is the advertised ``host:port`` (``advertise``,
    or the bound address with the real port when ``bind`` asked for port 0).

    ``core`` may also be a factory ``core(local_address) -> Core``: it is called
    once the sockets are bound, so a core that must know its own address (gossip
    members, Raft servers) can be built with the real port when ``bind`` used
    port 0, without a race for a free port.
    """
    holder: list[Driver] = []

    def count(exc: BaseException) -> None:
        if holder:
            holder[0].stats.handler_errors += 1

    async with (
        open_transport(
            bind,
            advertise=advertise,
            max_datagram=max_datagram,
            rng=random.Random(),
            on_handler_error=count,
        ) as transport,
        trio.open_nursery() as nursery,
    ):
        clock = TrioClock(nursery, on_handler_error=count)
        if not hasattr(core, "on_message"):  # a factory, waiting for the bound address
            core = core(transport.local_address)
        driver = Driver(
            node,
            core,
            transport,
            clock,
            tracer=tracer,
            persister=persister,
            encode=encode,
            decode=decode,
        )
        holder.append(driver)
        try:
            driver.start()
            yield driver
        finally:
            driver.stop()
            nursery.cancel_scope.cancel()


__all__ = ["NetTransport", "TrioClock", "open_driver", "open_transport"]
