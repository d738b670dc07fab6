"""The Trio API of the gossip layer: :class:`GossipNode`.

::

    async with GossipNode("web-1", bind="127.0.0.1:0", seeds=["10.0.0.2:7946"],
                          config=LAN, tags={"role": "web"}, keyring=ring) as node:
        print(node.address, [m.name for m in node.members()])
        async for ev in node.events():      # member joined/updated/suspect/failed/left/reaped,
            ...                             # user events, queries

The node runs the pure gossip core (:mod:`clusterfunk.gossip.core`) through the
one runtime (:func:`clusterfunk.runtime.trio_host.open_driver`): UDP for probes and
gossip, TCP for push-pull. Every call into the core goes through
``driver.call``, so the core stays single-threaded and sans-I/O.

Event streams never drop silently: every subscriber gets its own unbounded
queue, filled synchronously as the core emits; a slow consumer costs memory, not
events. Query responses are routed to the :meth:`GossipNode.query` call that asked.

Keys: with a keyring, every packet is sealed (or authenticated, ``encrypt=False``)
with the primary key (:mod:`clusterfunk.gossip.keyring`). :meth:`install_key`,
:meth:`use_key` and :meth:`remove_key` rotate keys across the running cluster
with internal queries, as Serf does: each member applies the operation to its
own keyring and answers; the call returns every member's answer.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from clusterfunk.gossip import keyring as kr
from clusterfunk.gossip.assembly import GossipMember
from clusterfunk.gossip.config import LAN, GossipConfig, query_timeout
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.events import QueryAck, QueryDone, QueryResponse
from clusterfunk.gossip.keyring import KeyResult, Keyring, SecureCodec
from clusterfunk.gossip.messages import Status
from clusterfunk.runtime.api import Tracer
from clusterfunk.runtime.events import EventHub, EventStream
from clusterfunk.runtime.host import GOSSIP
from clusterfunk.runtime.trio_host import open_host, wait_until


class GossipError(RuntimeError):
    """A gossip operation could not be completed (join found nobody, ...)."""


@attrs.frozen
class QueryResult:
    """What a query collected before its deadline."""

    #: Members that acknowledged receipt (when acks were requested), sorted.
    acks: tuple[str, ...]
    #: member -> response payload, in arrival order.
    responses: dict[str, bytes]


class GossipNode:
    """A gossip member on the real network, used with ``async with``."""

    def __init__(
        self,
        name: str,
        *,
        bind: str = "127.0.0.1:0",
        seeds: Iterable[str] = (),
        config: GossipConfig = LAN,
        tags: dict[str, str] | None = None,
        keyring: Keyring | None = None,
        encrypt: bool = True,
        advertise: str | None = None,
        tracer: Tracer | None = None,
        rng: random.Random | None = None,
        join_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.bind = bind
        self.seeds = list(seeds)
        self.config = config
        self.tags = dict(tags or {})
        self.keyring = keyring
        self.encrypt = encrypt
        self.codec: SecureCodec | None = None
        self.advertise = advertise
        self.tracer = tracer
        self.rng = rng if rng is not None else random.Random()
        self.join_timeout = join_timeout
        self._driver: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._events: EventHub[Any] = EventHub()
        self._queries: dict[int, _Collector] = {}
        self._unsubscribe: Any = None
        self.core: GossipCore | None = None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> GossipNode:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            host = await stack.enter_async_context(
                open_host(
                    self.name,
                    {GOSSIP: self.bind},
                    advertise={GOSSIP: self.advertise} if self.advertise else None,
                    max_datagram={GOSSIP: self.config.udp_buffer_size},
                    tracer=self.tracer,
                    rng=random.Random(self.rng.random()),
                )
            )
            member = GossipMember(
                host,
                rng=self.rng,
                config=self.config,
                tags=self.tags,
                keyring=self.keyring,
                encrypt=self.encrypt,
            )
            self.core = member.core
            self.codec = member.codec
            self._driver = member.driver
            self._unsubscribe = self._driver.subscribe(self._on_event)
            host.start()
            stack.callback(self._close_streams)
            self._stack = stack
            if self.seeds:
                await self.join(self.seeds, timeout=self.join_timeout)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _close_streams(self) -> None:
        self._events.close()
        for c in self._queries.values():
            c.done.set()

    # -- plumbing ------------------------------------------------------------

    def _call(self, fn: Any) -> Any:
        if self._driver is None or not self._driver.running:
            raise GossipError("the gossip node is not running")
        return self._driver.call(fn)

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, QueryAck | QueryResponse | QueryDone):
            c = self._queries.get(ev.id)
            if c is not None:
                c.feed(ev)
        self._events.publish(ev)

    # -- public API ----------------------------------------------------------

    @property
    def address(self) -> str:
        """The advertised ``host:port`` (UDP and TCP)."""
        if self._driver is None:
            raise GossipError("the gossip node is not running")
        return self._driver.transport.local_address

    @property
    def stats(self) -> Any:
        """The driver's counters (packets, bytes, malformed input, ...)."""
        return self._driver.stats

    def members(self) -> list[Any]:
        """Every member this node knows of (alive, suspect, dead, left), sorted by name."""
        return self._call(lambda core, now: core.members())

    def alive_members(self) -> list[Any]:
        return [m for m in self.members() if m.status == Status.ALIVE]

    async def join(self, seeds: Iterable[str], *, timeout: float | None = None) -> int:
        """Join through ``seeds`` (addresses); waits until another member is known.

        Returns the number of known members. Raises :class:`GossipError` if nobody
        answered within ``timeout`` (the core keeps retrying in the background).
        """
        seeds = [s for s in seeds if s != self.address]
        if not seeds:
            return len(self.members())
        self._call(lambda core, now: core.join(now, seeds))

        def others() -> int:
            return sum(1 for m in self.members() if m.name != self.name)

        with trio.move_on_after(self.join_timeout if timeout is None else timeout):
            await wait_until([self._driver], lambda: others() > 0)
            return others() + 1
        raise GossipError(f"could not join through {seeds}")

    async def leave(self, *, timeout: float | None = None) -> None:
        """Leave gracefully: the leave is disseminated (distinct from a failure).

        Waits until the leave broadcast has been sent (or ``timeout``, by default
        a few gossip intervals) so others learn it from us, not by failure detection.
        """
        self._call(lambda core, now: core.leave(now))
        limit = timeout if timeout is not None else 5 * self.config.gossip_interval + 0.5
        core = self.core
        assert core is not None
        with trio.move_on_after(limit):
            await wait_until([self._driver], lambda: core.pending_broadcasts() == 0)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Replace this node's tags; the update is disseminated."""
        self.tags = dict(tags)
        self._call(lambda core, now: core.set_tags(now, dict(tags)))

    def send_event(self, name: str, payload: bytes = b"", *, coalesce: bool = True) -> None:
        """Broadcast a user event to every member."""
        self._call(lambda core, now: core.user_event(now, name, payload, coalesce=coalesce))

    async def query(
        self,
        name: str,
        payload: bytes = b"",
        *,
        filter_nodes: Iterable[str] | None = None,
        filter_tags: dict[str, str] | None = None,
        timeout: float | None = None,
        want_ack: bool = True,
        enough: int | None = None,
    ) -> QueryResult:
        """Ask every (filtered) member; collect acks and responses until the timeout,
        or until ``enough`` responses arrived."""
        fn = tuple(filter_nodes) if filter_nodes is not None else None
        ft = dict(filter_tags) if filter_tags is not None else None
        collector = _Collector(enough=enough)

        def start(core: Any, now: float) -> int:
            qid = core.query(
                now,
                name,
                payload,
                filter_nodes=fn,
                filter_tags=ft,
                timeout=timeout,
                want_ack=want_ack,
            )
            self._queries[qid] = collector
            return qid

        qid = self._call(start)
        try:
            # The core ends the query at its deadline (QueryDone); the extra second
            # only guards against a core that stopped.
            if timeout is None:
                n = self._call(lambda core, now: core.num_members())
                limit = query_timeout(self.config, n) + 1.0
            else:
                limit = timeout + 1.0
            with trio.move_on_after(limit):
                await collector.done.wait()
        finally:
            self._queries.pop(qid, None)
        return QueryResult(tuple(sorted(collector.acks)), dict(collector.responses))

    def respond(self, query: Any, payload: bytes) -> bool:
        """Answer an incoming :class:`~clusterfunk.gossip.events.Query` (once, before
        its deadline). Returns False if it is too late or already answered."""
        return self._call(lambda core, now: core.respond(now, query, payload))

    def health_score(self) -> int:
        """Lifeguard local health score (0 = healthy)."""
        return self._call(lambda core, now: core.health_score)

    def events(self, *, buffer: float = math.inf) -> EventStream[Any]:
        """A new subscription to every public event from now on (unbounded queue by
        default; a finite ``buffer`` that overflows ends the stream, with
        ``overflowed`` set: nothing is dropped silently).

        Use as ``async for ev in node.events()`` or ``async with node.events() as s``.
        """
        return self._events.subscribe(buffer)

    # -- keys ----------------------------------------------------------------

    async def install_key(self, key: bytes, *, timeout: float | None = None) -> KeyResult:
        """Install ``key`` on every member (each can then open packets sealed with it)."""
        return await self._key_op(kr.INSTALL, key, timeout)

    async def use_key(self, key: bytes, *, timeout: float | None = None) -> KeyResult:
        """Make ``key`` the primary on every member (it must be installed everywhere)."""
        return await self._key_op(kr.USE, key, timeout)

    async def remove_key(self, key: bytes, *, timeout: float | None = None) -> KeyResult:
        """Remove ``key`` from every member (it must not be anyone's primary)."""
        return await self._key_op(kr.REMOVE, key, timeout)

    def list_keys(self) -> list[bytes]:
        if self.keyring is None:
            return []
        return self.keyring.keys

    async def _key_op(
        self, op: str, key: bytes, timeout: float | None, attempts: int = 3
    ) -> KeyResult:
        if self.keyring is None or self.codec is None:
            raise GossipError("this node has no keyring")
        if not self.codec.encrypt:
            # The key travels in a gossip packet: never in clear text.
            raise GossipError("key rotation by query needs an encrypting keyring")
        kr.check_key(key)
        # The query reaches this node too: its own handler applies the operation
        # synchronously, before the query leaves (sealed with the resulting primary).
        # Queries travel by gossip, which may miss a member; the operations are
        # idempotent, so a step that did not reach everyone is simply asked again.
        result = None
        for _ in range(max(1, attempts)):
            expected = sum(1 for m in self.members() if m.status == Status.ALIVE)
            res = await self.query(
                kr.query_name(op), key, timeout=timeout, want_ack=False, enough=expected
            )
            result = kr.collect_key_result(op, res.responses, expected)
            if result.complete or result.errors:
                break
        assert result is not None
        return result


@attrs.define
class _Collector:
    acks: list[str] = attrs.Factory(list)
    responses: dict[str, bytes] = attrs.Factory(dict)
    done: trio.Event = attrs.Factory(trio.Event)
    enough: int | None = None

    def feed(self, ev: Any) -> None:
        if isinstance(ev, QueryDone):
            self.done.set()
        elif isinstance(ev, QueryAck):
            self.acks.append(ev.node)
        else:
            self.responses[ev.node] = ev.payload
            if self.enough is not None and len(self.responses) >= self.enough:
                self.done.set()
