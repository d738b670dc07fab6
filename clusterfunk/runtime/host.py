"""The host seam: what a node assembly needs from the machine it runs on.

A *node assembly* (``clusterfunk.cluster.assembly``, ``clusterfunk.raft.assembly``,
``clusterfunk.gossip.assembly``) wires storage, cores, drivers and glue exactly once;
the same constructor runs in production and in the simulator. Only the host
differs:

* :class:`clusterfunk.runtime.trio_host.TrioHost`: real sockets (bound *before*
  the assembly is built, so a port 0 is resolved race-free in this one place),
  trio's clock, deferred work run by a task the host's ``async with`` owns;
* :class:`clusterfunk.sim.simulation.SimHost`: the simulator's in-memory
  endpoints, virtual clock with skew, deferred work as a simulator event.

Ports are named (``"gossip"``, ``"raft"``, ``"coord"``, and ``"app"`` for the
request server or a routing client, :data:`clusterfunk.routing.api.APP`): a host
maps each name to one bound endpoint, so several ports configured as 0 never
collide.

Rules every host keeps:

1. :meth:`Host.driver` creates a driver on an already bound endpoint but does not
   start it; the host starts every driver, in creation order, once the assembly
   is built (so no core runs before the node is wired).
2. :meth:`Host.defer` runs ``fn`` later, never inside the current driver step,
   and never after the node stopped.
3. Callbacks in :attr:`Host.on_stop` run once, when the node stops.
4. When :attr:`Host.authenticated` is true, every stream frame reaches its driver
   with the identity of its sender, and assemblies make their authorizers require
   it (a Raft message only from the server it names; an ``Ack`` or
   ``LeaveRequest`` only from the node it speaks for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from clusterfunk.runtime.api import Address, Core, Persister
from clusterfunk.runtime.auth import Authorizer
from clusterfunk.runtime.driver import Driver

#: The port names of a cluster node (their default numbers are in ``cluster.assembly``).
GOSSIP = "gossip"
RAFT = "raft"
COORD = "coord"


class Host(Protocol):
    """The machine a node assembly runs on (see the module docstring)."""

    @property
    def name(self) -> str:
        """The node id."""
        ...

    #: Callbacks run once when the node stops.
    on_stop: list[Callable[[], None]]

    def address(self, port: str) -> Address:
        """The advertised ``host:port`` of the endpoint named ``port``."""
        ...

    def driver(
        self,
        core: Core,
        port: str,
        *,
        persister: Persister | None = None,
        lazy_timer: bool = False,
        authorizer: Authorizer | None = None,
        encode: Callable[[Any], bytes] = ...,
        decode: Callable[[bytes], Any] = ...,
    ) -> Driver:
        """A driver for ``core`` on endpoint ``port`` (started by the host, rule 1);
        ``authorizer`` screens every decoded message (runtime/auth.py);
        ``encode``/``decode`` replace the wire codec (the gossip keyring seals)."""
        ...

    @property
    def authenticated(self) -> bool:
        """Stream frames carry the sender's authenticated node id (a TLS certificate's
        name on the real network; the sending host in the simulator), so authorizers
        can require it (rule 4)."""
        ...

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` soon, outside any driver step (rule 2)."""

    def wall_offset(self) -> float:
        """Unix time minus the node's local clock (for wall-clock stamps in the log)."""
        ...
