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
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from clusterfunk import wire
from clusterfunk.runtime.api import DEFAULT_DATAGRAM_BUDGET, Core, Persister, Tracer
from clusterfunk.runtime.auth import Authorizer
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.net import NetTransport, open_transport
from clusterfunk.runtime.tls import TLSConfig

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


class TrioHost:
    """A node's machine on the real network (:class:`~clusterfunk.runtime.host.Host`).

    Made by :func:`open_host`, which binds every named endpoint first; drivers made
    by :meth:`driver` start together at :meth:`start`. Deferred work runs in one
    task owned by the host's ``async with``.
    """

    def __init__(
        self,
        name: str,
        transports: dict[str, NetTransport],
        clock: TrioClock,
        tracer: Tracer | None,
        authenticated: bool = False,
    ) -> None:
        self._name = name
        self._authenticated = authenticated
        self.transports = transports
        self.clock = clock
        self.tracer = tracer
        self.drivers: list[Driver] = []
        self.on_stop: list[Callable[[], None]] = []
        self._deferred: list[Callable[[], None]] = []
        self._wake = trio.Event()
        self._wall_offset = time.time() - trio.current_time()
        self.stopped = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def authenticated(self) -> bool:
        """True when the stream ports run mutual TLS (see :func:`open_host`)."""
        return self._authenticated

    def address(self, port: str) -> str:
        return self.transports[port].local_address

    def driver(
        self,
        core: Core,
        port: str,
        *,
        persister: Persister | None = None,
        lazy_timer: bool = False,
        authorizer: Authorizer | None = None,
        encode: Callable[[Any], bytes] = wire.encode,
        decode: Callable[[bytes], Any] = wire.decode,
    ) -> Driver:
        d = Driver(
            self._name,
            core,
            self.transports[port],
            self.clock,
            tracer=self.tracer,
            persister=persister,
            encode=encode,
            decode=decode,
            lazy_timer=lazy_timer,
            authorizer=authorizer,
        )
        self.drivers.append(d)
        return d

    def start(self) -> None:
        """Start every driver, in creation order."""
        for d in self.drivers:
            if not d.running:
                d.start()

    def defer(self, fn: Callable[[], None]) -> None:
        if not self.stopped:
            self._deferred.append(fn)
            self._wake.set()

    def wall_offset(self) -> float:
        return self._wall_offset

    def _count_error(self, exc: BaseException) -> None:
        for d in self.drivers:  # the error came from one of them; count it once
            d.stats.handler_errors += 1
            break

    async def _run_deferred(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._deferred = self._deferred, []
            for fn in batch:
                if self.stopped:
                    return
                fn()

    def _stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        callbacks, self.on_stop = self.on_stop, []
        for cb in callbacks:
            cb()
        for d in self.drivers:
            d.stop()


async def wait_until(drivers: Iterable[Driver], done: Callable[[], bool]) -> None:
    """Wait until ``done()`` holds, re-checking it after every step of any of
    ``drivers`` (what can change a core's state) instead of polling. The caller
    bounds the wait (``trio.fail_after`` / ``move_on_after``)."""
    changed = [trio.Event()]  # replaced after each wake-up; the hooks read the current one
    removers = [d.after_step(lambda: changed[0].set()) for d in drivers]
    try:
        while not done():
            await changed[0].wait()
            changed[0] = trio.Event()
    finally:
        for remove in removers:
            remove()


@asynccontextmanager
async def open_host(
    name: str,
    binds: dict[str, str],
    *,
    advertise: dict[str, str] | None = None,
    max_datagram: dict[str, int] | None = None,
    tracer: Tracer | None = None,
    rng: random.Random | None = None,
    tls: TLSConfig | None = None,
    tls_ports: Collection[str] = (),
) -> AsyncIterator[TrioHost]:
    """Bind one UDP + TCP endpoint per named port (``binds``: name -> ``host:port``,
    port 0 picks a free port, race-free: the socket is bound before anyone learns
    the address), then run the host until the block exits. Build the node
    assembly on the yielded host and call :meth:`TrioHost.start`.

    ``advertise`` gives, per port name, the address peers should use (an advertised
    port of 0 means the bound port). ``tls``: the ports named in ``tls_ports`` run
    mutual TLS (every stream connection, both ways, with a certificate of the
    cluster CA whose name is the node id the peer claims); then the host is
    :attr:`~TrioHost.authenticated` and frames reach drivers with that identity. On
    exit the host's ``on_stop`` callbacks run, every driver stops and every socket
    closes.
    """
    if tls_ports and tls is None:
        raise ValueError("tls_ports given without a TLS configuration")
    rng = rng if rng is not None else random.Random()
    advertise = advertise or {}
    max_datagram = max_datagram or {}
    holder: list[TrioHost] = []

    def count(exc: BaseException) -> None:
        if holder:
            holder[0]._count_error(exc)

    async with AsyncExitStack() as stack:
        transports: dict[str, NetTransport] = {}
        for port, bind in binds.items():
            transports[port] = await stack.enter_async_context(
                open_transport(
                    bind,
                    advertise=advertise.get(port),
                    max_datagram=max_datagram.get(port, DEFAULT_DATAGRAM_BUDGET),
                    rng=random.Random(rng.random()),
                    on_handler_error=count,
                    tls=tls if port in tls_ports else None,
                    node_id=name,
                )
            )
        nursery = await stack.enter_async_context(trio.open_nursery())
        host = TrioHost(name, transports, TrioClock(nursery, on_handler_error=count), tracer,
                        authenticated=tls is not None and bool(tls_ports))
        holder.append(host)
        nursery.start_soon(host._run_deferred, name=f"cf-deferred {name}")
        try:
            yield host
        finally:
            host._stop()
            nursery.cancel_scope.cancel()


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
    lazy_timer: bool = False,
) -> AsyncIterator[Driver]:
    """Run one ``core`` as ``node`` on UDP + TCP ``bind`` (``host:port``) until the
    block exits: a one-port :func:`open_host`.

    ``driver.transport.local_address`` is the advertised ``host:port`` (``advertise``,
    or the bound address with the real port when ``bind`` asked for port 0).
    ``core`` may also be a factory ``core(local_address) -> Core``: it is called
    once the socket is bound, so a core that must know its own address can be
    built with the real port when ``bind`` used port 0, without a race.
    """
    port = "main"
    async with open_host(
        node,
        {port: bind},
        advertise={port: advertise} if advertise else None,
        max_datagram={port: max_datagram},
        tracer=tracer,
    ) as host:
        if not hasattr(core, "on_message"):  # a factory, waiting for the bound address
            core = core(host.address(port))
        driver = host.driver(
            core,  # type: ignore[arg-type]
            port,
            persister=persister,
            encode=encode,
            decode=decode,
            lazy_timer=lazy_timer,
        )
        host.start()
        yield driver


__all__ = [
    "NetTransport", "TrioClock", "TrioHost", "open_driver", "open_host", "open_transport",
    "wait_until",
]
