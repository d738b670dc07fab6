"""The routing client on the real network (Trio)::

    async with open_client(seeds=["10.0.0.4:8600"]) as client:
        reply = await client.request(12345, b"payload", timeout=2.0)

:func:`open_client` binds its own endpoint (replies come back to it: connections
are one-way) on a :class:`~clusterfunk.runtime.trio_host.TrioHost` and runs the
sans-I/O :class:`~clusterfunk.routing.client.RoutingClient` there; the rules and
the delivery guarantee (at-least-once) are in :mod:`clusterfunk.routing.client`.
``seeds`` are request addresses (port ``app``) of members; the client learns
the others and the committed map from them.

TLS: pass the cluster's ``TLSConfig`` for a client certificate of the cluster CA
(``load_tls_dir(dir, "client")``): the client then talks mutual TLS and accepts
answers only from nodes whose certificate names them.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from clusterfunk.routing.api import APP, RequestFailed
from clusterfunk.routing.client import ClientConfig, Finished, HostClient
from clusterfunk.runtime.tls import TLSConfig
from clusterfunk.runtime.trio_host import TrioHost, open_host


class Client:
    """A running routing client (made by :func:`open_client`)."""

    def __init__(self, host: TrioHost, seeds: Sequence[str], client_id: str,
                 config: ClientConfig | None, rng: random.Random) -> None:
        self.host = host
        self._waiting: dict[int, trio.Event] = {}
        self._results: dict[int, Finished] = {}
        self._hc = HostClient(host, seeds, client_id=client_id, config=config, rng=rng,
                              on_finished=self._finished)
        self.core = self._hc.core
        self.address = host.address(APP)

    def _finished(self, ev: Finished) -> None:
        self._results[ev.id] = ev
        event = self._waiting.pop(ev.id, None)
        if event is not None:
            event.set()

    async def finish(self, key: int, payload: bytes, timeout: float) -> Finished:
        """Run one request to its end and return how it ended (never raises for a
        failed request)."""
        rid = self._hc.request(key, payload, timeout)
        if rid not in self._results:
            event = self._waiting[rid] = trio.Event()
            await event.wait()
        return self._results.pop(rid)

    async def request(self, key: int, payload: bytes, timeout: float) -> bytes:
        """Send ``payload`` for integer ``key`` to its shard's owner; return the
        service's reply. Raises :class:`~clusterfunk.routing.api.RequestFailed` at the
        deadline (``timeout`` seconds; the reason names the last outcome) or at
        once for an ``error`` answer (the service refused it)."""
        ev = await self.finish(key, payload, timeout)
        if not ev.ok:
            raise RequestFailed(f"request {ev.id} for key {key}: {ev.outcome}: {ev.error}")
        return ev.payload

    @property
    def map_index(self) -> int:
        """Index of the committed map the client routes by (0: none yet)."""
        return self.core.index

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.core.stats)


@asynccontextmanager
async def open_client(
    seeds: Sequence[str],
    *,
    tls: TLSConfig | None = None,
    bind_host: str = "127.0.0.1",
    port: int = 0,
    advertise_host: str | None = None,
    client_id: str | None = None,
    config: ClientConfig | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Client]:
    """Run a routing client until the block exits (see the module docstring).
    ``port`` 0 binds a free port; ``client_id`` (default: random) names the client
    in requests and traces. Under ``tls`` the endpoint's node id is the
    certificate's name."""
    cid = client_id or f"client-{secrets.token_hex(4)}"
    name = tls.node_id if tls is not None else cid
    bind = f"[{bind_host}]:{port}" if ":" in bind_host else f"{bind_host}:{port}"
    adv_host = advertise_host or bind_host
    adv = f"[{adv_host}]:0" if ":" in adv_host else f"{adv_host}:0"
    async with open_host(name, {APP: bind}, advertise={APP: adv}, tls=tls,
                         tls_ports=(APP,) if tls is not None else (),
                         rng=random.Random(secrets.randbits(64))) as host:
        client = Client(host, seeds, cid, config, rng or random.Random(secrets.randbits(64)))
        host.start()
        yield client


__all__ = ["Client", "open_client"]
