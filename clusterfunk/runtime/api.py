"""The seams between protocol cores, the runtime that drives them, and the world.

Three roles, each swappable on its own:

* a **core** (:class:`Core`) is a pure state machine: no trio, no sockets, no
  ``time.time()``, no global ``random``. Inputs are messages and clock readings;
  outputs are collected in an :class:`Output` (messages to send, writes to persist
  before those messages leave, public events, trace records) and the next deadline
  at which the core wants :meth:`Core.on_tick`.
* a **transport** (:class:`Transport`) moves bytes: *datagrams* (unreliable,
  unordered, at most ``max_datagram`` bytes) and *frames* on streams (reliable,
  ordered per peer, length-delimited). The real one is UDP + TCP on trio sockets
  (:mod:`clusterfunk.runtime.net`); the simulated one is an in-memory network in
  virtual time (:mod:`clusterfunk.sim`).
* a **clock** (:class:`Clock`) reads the node's local time and wakes the driver at
  a deadline. The real one is trio's clock; the simulated one is virtual, with
  per-node skew and drift.

:class:`clusterfunk.runtime.driver.Driver` joins them, identically in production
and in simulation.

Addresses are strings ``"host:port"``. In simulation the host is the node name
(``"n3:7946"``), so partitions and crashes act on hosts.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

Address = str

#: Default datagram budget, as in memberlist: fits one Ethernet MTU with headers.
DEFAULT_DATAGRAM_BUDGET = 1400

@attrs.frozen(slots=True)
class Send:
    """One outgoing message. ``stream=True`` asks for the reliable, ordered channel."""

    dest: Address
    msg: Any
    stream: bool = False


@attrs.define(slots=True)
class Output:
    """Everything a core produced since it was last drained.

    Invariant the driver keeps: ``persist`` is made durable *before* any message
    in ``sends`` is handed to the transport (Raft: term, vote and entries are on
    disk before the messages that depend on them leave).
    """

    sends: list[Send] = attrs.Factory(list)
    persist: list[Any] = attrs.Factory(list)
    events: list[Any] = attrs.Factory(list)
    trace: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)

    def send(self, dest: Address, msg: Any, stream: bool = False) -> None:
        self.sends.append(Send(dest, msg, stream))

    def emit(self, ev: str, **fields: Any) -> None:
        """Append a trace record (``ev`` plus fields; the driver adds ``t`` and ``node``)."""
        self.trace.append((ev, fields))

    def __bool__(self) -> bool:
        return bool(self.sends or self.persist or self.events or self.trace)


@runtime_checkable
class Core(Protocol):
    """A sans-I/O protocol state machine. ``now`` is always the node's local clock."""

    def start(self, now: float) -> None:
        """Called once before any other input."""

    def on_message(self, now: float, src: Address, msg: Any, stream: bool) -> None:
        """A decoded message arrived from ``src`` (by datagram or stream frame)."""

    def on_tick(self, now: float) -> None:
        """The deadline from :meth:`next_deadline` has passed (spurious calls are allowed)."""

    def next_deadline(self) -> float:
        """Local time at which :meth:`on_tick` is next wanted; ``math.inf`` for never."""
        ...

    def drain(self) -> Output | None:
        """Return the pending :class:`Output` (``None`` if empty) and start a new one."""
        ...


class Clock(Protocol):
    """A node's local clock plus one wake-up per driver."""

    def now(self) -> float:
        """Local time in seconds (monotonic for the real clock; skewable in simulation)."""
        ...

    def schedule(self, driver: Any, deadline: float) -> None:
        """Call ``driver.on_timer()`` at local time ``deadline`` (replaces earlier ones)."""


class Transport(Protocol):
    """One bound endpoint. Received bytes go to the handler given to :meth:`bind`."""

    local_address: Address
    max_datagram: int

    def bind(self, handler: Any) -> None:
        """Deliver received bytes as ``handler.on_datagram(src, data)`` and
        ``handler.on_frame(src, data)``."""

    def send_datagram(self, dest: Address, data: bytes) -> None:
        """Best effort; never blocks, never raises on network trouble (drops instead)."""

    def send_frame(self, dest: Address, data: bytes) -> None:
        """Queue a frame on the stream to ``dest`` (connects or reuses a connection)."""


class Persister(Protocol):
    """Makes a core's ``Output.persist`` records durable (synchronously)."""

    def persist(self, records: list[Any]) -> None: ...


class Tracer(Protocol):
    def emit(self, node: str, ev: str, fields: dict[str, Any]) -> None: ...

    @property
    def wants_net(self) -> bool: ...


def split_address(addr: Address) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; raises ValueError on anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
