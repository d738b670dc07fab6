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


_new = object.__new__
# the slots' setters (attrs keeps them as Send's member descriptors)
_set_dest = vars(Send)["dest"].__set__
_set_msg = vars(Send)["msg"].__set__
_set_stream = vars(Send)["stream"].__set__


@attrs.define(slots=True)
class Output:
    """Everything a core produced since it was last drained.

    Durability (etcd-raft style): ``persist`` holds records to write, in order.
    ``persist_token > 0`` asks for them to be synced and the completion to be
    reported back to the core (:meth:`DurableCore.on_persisted`); 0 means write
    only. ``wait_token > 0``: the messages in ``sends`` depend on state that is
    durable only once every batch up to that token is; the driver holds them (and
    every later message, to keep their order) until the persister reports it.
    ``wait_token == 0``: they may leave at once (a Raft leader's AppendEntries for
    its own new entries, written in parallel).
    """

    sends: list[Send] = attrs.Factory(list)
    persist: list[Any] = attrs.Factory(list)
    events: list[Any] = attrs.Factory(list)
    trace: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)
    persist_token: int = 0
    wait_token: int = 0

    def send(self, dest: Address, msg: Any, stream: bool = False) -> None:
        # Send(dest, msg, stream), built by filling its slots (what its attrs
        # __init__ does, without the frozen class's object.__setattr__ calls)
        s = _new(Send)
        _set_dest(s, dest)
        _set_msg(s, msg)
        _set_stream(s, stream)
        self.sends.append(s)

    def emit(self, ev: str, **fields: Any) -> None:
        """Append a trace record (``ev`` plus fields; the driver adds ``t`` and ``node``)."""
        self.trace.append((ev, fields))

    def __bool__(self) -> bool:
        return bool(self.sends or self.persist or self.events or self.trace)


class Outbox:
    """Mixin for a core: ``self._out`` collects the Output of its steps (set it in
    ``__init__``); :meth:`drain` hands it over -- a getter, ``None`` when empty."""

    _out: Output

    def drain(self) -> Output | None:
        out = self._out
        if not (out.sends or out.persist or out.events or out.trace):  # not out
            return None
        self._out = Output()
        return out


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


class DurableCore(Protocol):
    """A core whose ``Output`` asks for durable writes (Raft)."""

    def on_persisted(self, now: float, token: int) -> None:
        """Every persist batch up to ``token`` is durable."""


class PersistHandler(Protocol):
    """Where a persister reports (the driver)."""

    def on_persisted(self, token: int) -> None:
        """Every batch up to ``token`` is durable (called in hand-over order)."""

    def on_persist_failed(self, exc: BaseException) -> None:
        """A write or sync failed: nothing after it is durable; the node must stop."""


class DiskFailure(Exception):
    """A persister could not make a batch durable (fsync or commit error). Fail-stop:
    the node stops and never continues as if the write were durable (a retried
    fsync can report success for data the kernel already dropped)."""


class Persister(Protocol):
    """Makes a core's ``Output.persist`` records durable.

    :meth:`persist` hands over one batch; batches are written in hand-over order.
    A batch with ``token > 0`` is synced, and the persister then calls
    ``handler.on_persisted(token)`` (at once, from inside :meth:`persist`, for a
    synchronous persister; later, from the host's own task, for an asynchronous
    one). On failure it calls ``handler.on_persist_failed(exc)`` or raises
    :class:`DiskFailure` from :meth:`persist`, and never reports a later token.
    """

    def bind(self, handler: PersistHandler) -> None:
        """Report completions to ``handler`` (the driver calls this once)."""

    def persist(self, records: list[Any], token: int) -> None: ...


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
