"""The real transport: UDP datagrams and TCP frame streams on trio sockets.

One :class:`NetTransport` is one endpoint bound to the same ``host:port`` for UDP
and TCP. It implements :class:`clusterfunk.runtime.api.Transport`: the send
methods are synchronous and never block; the receive side runs as tasks in the
nursery of :func:`open_transport` and calls the bound handler synchronously.

Datagrams
    One ``sendto`` per datagram on a non-blocking socket. A datagram larger than
    ``max_datagram`` is refused and counted; a full socket buffer or a network
    error drops it and counts. Received datagrams are read in batches with
    non-blocking ``recvfrom`` after ``wait_readable``; the source is ``host:port``
    of the sender's socket, which is its advertised port when it binds the
    address it advertises.

Streams (framing and hello in :mod:`clusterfunk.runtime.framing`)
    One outgoing connection per destination, owned by one writer task. Frames
    are queued (bounded in count and bytes; when full the frame is dropped and
    counted, never blocking the caller), and the writer sends everything queued
    in one ``send_all``. The first bytes on a connection are a hello carrying the
    dialer's advertised address, so the acceptor reports frames from the peer's
    listening address, not its ephemeral port. Connections are one-way: a node
    answers over its own connection to the peer. The writer also watches its
    connection for EOF, so a restarted peer is noticed at once; it reconnects
    with capped exponential backoff jittered by an injected RNG. Frames already
    handed to the kernel when a connection breaks may be lost (protocols above
    retry); frames still queued are sent on the next connection.

Mutual TLS (``tls=``, a :class:`clusterfunk.runtime.tls.TLSConfig`)
    Every connection is wrapped in a :class:`trio.SSLStream`: the dialer is the
    TLS client, the acceptor the TLS server, and both show a certificate from the
    cluster CA. The hello then carries the dialer's node id (hello version 2),
    which must be a name of its certificate; otherwise the connection is closed
    and its frames dropped (``identity_mismatch``). A failed handshake is counted
    (``tls_failures``). The TLS handshake and the hello share one time limit,
    ``hello_timeout``. :meth:`TLSConfig.reload` changes the certificates used by
    connections opened afterwards.

Identity of incoming frames
    A handler that defines ``on_frame_from(src, identity, data)`` gets it called
    instead of ``on_frame(src, data)``: ``identity`` is the node id the peer's
    certificate authenticates, or ``None`` without TLS (a hello's node id is
    only a claim then, and is never passed on as an identity). Handlers with
    only ``on_frame`` work as before. Datagrams carry no identity.

Bad input (bad hello, bad frame length) closes that one connection and is
counted; nothing a peer sends can crash the endpoint.

Bounded resources (each limit has a counter in :class:`TransportStats`)
    * ``max_incoming`` connections in total. When full, a new connection evicts
      the one that has been idle longest among those past their hello, preferring
      those that never delivered a frame (``evicted_idle``): idle connections
      cannot lock a real peer out. If none is past its hello, the new one is
      refused (``rejected``).
    * ``max_handshakes`` connections still in their TLS handshake or hello; more
      are refused (``rejected_handshakes``). Each has ``hello_timeout`` seconds
      (``hello_timeouts``).
    * ``max_incoming_per_peer`` connections per peer (its authenticated identity
      under TLS, else the address in its hello): one more closes that peer's
      oldest (``evicted_per_peer``; a restarted peer replaces its stale one).
    * ``max_incoming_bytes``: one memory budget for partly received frames,
      shared by all connections. A connection is charged a frame's declared size
      when its header arrives; if the budget is spent, it stops reading until
      other frames complete (``budget_waits``), within the frame's time limit.
      Beyond the budget, each connection holds at most one 64 KiB read.
    * ``frame_timeout``: a frame, once begun, must be complete within this many
      seconds or the connection is closed (``frame_timeouts``, also when it was
      waiting for the budget): a slow-loris sender holds nothing for long.
    * Outgoing: ``queue_frames`` / ``queue_bytes`` per destination (see Streams).

Handler errors (an exception raised by the core behind the handler) are logged
with their traceback, counted in ``stats.handler_errors`` and, by default
(``fail_stop=True``), re-raised: a core that raised mid-transition is in an
unknown state, and crash-stop is the failure the protocols are built to survive.
With ``fail_stop=False`` the message is dropped and the loop goes on.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import random
import socket as stdsocket
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from clusterfunk.runtime.api import DEFAULT_DATAGRAM_BUDGET, Address, split_address
from clusterfunk.runtime.framing import (
    DEFAULT_MAX_FRAME,
    FrameReader,
    FramingError,
    encode_hello,
    pack_length,
)
from clusterfunk.runtime.tls import TLSConfig, peer_identity

log = logging.getLogger("clusterfunk.net")

#: Datagrams (or full stream reads) per wake-up before yielding to other tasks.
_RECV_BATCH = 64


_PROBE_RANGE = (20000, 32000)  # below Linux's default ephemeral range (32768-60999)
_handed_out: set[tuple[str, int]] = set()
_probe_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` free for both TCP and UDP right now (probed, then released:
    another process may still take it before it is bound again).

    The port is drawn at random from below the kernel's ephemeral range, so the
    outgoing connections of processes already running (which take ephemeral ports)
    cannot take it between this probe and the bind; no port is handed out twice by
    one process. Use port 0 at bind time instead wherever the caller can learn the
    port afterwards.
    """
    family = stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET
    low, high = _PROBE_RANGE
    high = min(high, _ephemeral_low() - 1)
    for _ in range(200):
        port = _probe_rng.randint(low, high) if high > low else 0
        if (host, port) in _handed_out:
            continue
        with stdsocket.socket(family, stdsocket.SOCK_STREAM) as t:
            try:
                t.bind((host, port))
            except OSError:
                continue
            port = t.getsockname()[1]
            with stdsocket.socket(family, stdsocket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
        _handed_out.add((host, port))
        return port
    raise OSError(f"no free TCP+UDP port on {host}")


class StreamReader:
    """Reads a :class:`trio.SocketStream` with one scheduler pass per wake-up.

    ``receive_some`` adds a checkpoint to every read; here reads go straight to
    the stdlib socket, non-blocking. A short read means the socket is drained, so
    the next call waits for readability first (no recv spent on EAGAIN); after
    ``_RECV_BATCH`` full reads in a row it checkpoints, so a busy peer cannot
    starve the other tasks. Without a stdlib socket it falls back to
    ``receive_some``.
    """

    __slots__ = ("_burst", "_drained", "_raw", "_stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._raw: stdsocket.socket | None = getattr(stream.socket, "_sock", None)
        self._drained = False
        self._burst = 0

    async def receive(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream or on a socket error."""
        raw = self._raw
        if raw is None:
            return await self._stream.receive_some(size)
        while True:
            if self._drained:
                await trio.lowlevel.wait_readable(raw)
            try:
                data = raw.recv(size)
            except (BlockingIOError, InterruptedError):
                self._drained = True
                continue
            except OSError:
                return b""
            self._drained = len(data) < size
            if self._drained:
                self._burst = 0
            else:
                self._burst += 1
                if self._burst >= _RECV_BATCH:
                    self._burst = 0
                    await trio.lowlevel.checkpoint()
            return data


@attrs.define
class TransportStats:
    """Counters of one endpoint (exposed for metrics and tests)."""

    datagrams_sent: int = 0
    datagrams_received: int = 0
    datagrams_oversize: int = 0  # refused: larger than max_datagram
    datagrams_dropped: int = 0  # socket buffer full or network error on send
    frames_queued: int = 0
    frames_sent: int = 0  # handed to the kernel
    frames_received: int = 0
    frames_dropped_queue_full: int = 0
    frames_dropped_oversize: int = 0  # refused: empty or larger than max_frame
    frames_dropped_closed: int = 0  # queued when the endpoint closed
    unresolvable: int = 0  # destinations that are not (yet) an address we can use
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0  # outgoing connections lost
    idle_closed: int = 0  # outgoing connections closed after idle_timeout
    accepted: int = 0
    rejected: int = 0  # incoming connections over max_incoming (none could be evicted)
    rejected_handshakes: int = 0  # incoming connections over max_handshakes
    evicted_idle: int = 0  # idle connections closed to make room (max_incoming)
    evicted_per_peer: int = 0  # a peer's oldest connection, over max_incoming_per_peer
    budget_waits: int = 0  # frames that had to wait for the shared memory budget
    frame_timeouts: int = 0  # connections closed: a frame not complete in frame_timeout
    bad_hello: int = 0
    bad_frame: int = 0
    hello_timeouts: int = 0  # no complete TLS handshake + hello within hello_timeout
    tls_failures: int = 0  # TLS handshakes that failed (either side): no/bad certificate
    identity_mismatch: int = 0  # TLS connections whose hello claims a name not in the cert
    frames_dropped_identity: int = 0  # frames that came with such a false claim
    handler_errors: int = 0
    write_errors: int = 0  # outgoing connections that broke mid-write (EPIPE, reset)
    peer_task_errors: int = 0  # unexpected errors in a peer's writer task (a bug)
    serve_errors: int = 0  # unexpected errors serving an incoming connection (a bug)
    bytes_sent: int = 0
    bytes_received: int = 0


# ---------------------------------------------------------------------------
# Addresses.


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def format_address(host: str, port: int) -> Address:
    """Canonical ``host:port``: IPv6 in brackets and compressed, v4-mapped IPv6 as IPv4."""
    ip = _literal(host)
    if ip is None:
        return f"{host}:{port}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"{ip.ipv4_mapped}:{port}"
        scope = host[host.index("%") :] if "%" in host else ""
        return f"[{ip.compressed}{scope}]:{port}"
    return f"{ip}:{port}"


def canonical_address(addr: Address) -> Address:
    """Normalise a user-given ``host:port`` (``[::1]:7000``, ``127.0.0.1:7000``, names)."""
    host, port = split_address(addr)
    return format_address(host, port)


def _sockaddr(family: int, host: str, port: int) -> tuple[Any, ...] | None:
    """A sockaddr for a literal ``host`` usable on a socket of ``family``, or None."""
    if host == "localhost":
        host = "::1" if family == stdsocket.AF_INET6 else "127.0.0.1"
    ip = _literal(host)
    if ip is None:
        return None
    if family == stdsocket.AF_INET:
        return (str(ip), port) if ip.version == 4 else None
    if ip.version == 4:  # dual-stack IPv6 socket
        return (f"::ffff:{ip}", port, 0, 0)
    if "%" in host:
        return (host, port, 0, 0)  # scoped link-local: let the OS parse the scope
    return (str(ip), port, 0, 0)


# ---------------------------------------------------------------------------
# The endpoint.


class _Peer:
    """The outgoing side of the stream to one destination."""

    __slots__ = (
        "connected",
        "dest",
        "failures",
        "idle",
        "last_write",
        "partial",
        "queue",
        "queued_bytes",
        "raw",
        "wake",
        "writing",
    )

    def __init__(self, dest: Address) -> None:
        self.dest = dest
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake = trio.Event()
        self.connected = False
        self.writing = False
        self.failures = 0
        self.idle = False
        self.last_write = 0.0
        # The connected socket once the hello is out (None otherwise): lets
        # send_frame write at once when the writer is idle (no task switch).
        self.raw: stdsocket.socket | None = None
        # The unsent tail of a frame send_frame wrote in part: belongs to the
        # current connection only (dropped with it, never sent on a new one).
        self.partial = b""


class _Conn:
    """One incoming connection, for the limits: eviction and per-peer counts."""

    __slots__ = ("frames", "key", "last", "scope", "seq")

    def __init__(self, seq: int, now: float) -> None:
        self.seq = seq
        self.scope = trio.CancelScope()
        self.key: str | None = None  # the peer (identity or hello address) after the hello
        self.frames = 0
        self.last = now  # last complete frame (or the hello)


class NetTransport:
    """A bound UDP + TCP endpoint. Create it with :func:`open_transport`."""

    def __init__(
        self,
        udp: stdsocket.socket,
        listener: trio.socket.SocketType,
        local_address: Address,
        *,
        max_datagram: int = DEFAULT_DATAGRAM_BUDGET,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_frames: int = 4096,
        queue_bytes: int = 128 * 1024 * 1024,
        rng: random.Random | None = None,
        connect_timeout: float = 5.0,
        hello_timeout: float = 5.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        max_incoming: int = 1024,
        max_handshakes: int = 256,
        max_incoming_per_peer: int = 8,
        max_incoming_bytes: int = 256 * 1024 * 1024,
        frame_timeout: float = 30.0,
        idle_timeout: float = 120.0,
        user_timeout: float = 15.0,
        fail_stop: bool = True,
        on_handler_error: Callable[[BaseException], None] | None = None,
        tls: TLSConfig | None = None,
        node_id: str | None = None,
    ) -> None:
        self._udp = udp
        self._listener = listener
        self.family = udp.family
        self.local_address = local_address
        self.max_datagram = max_datagram
        self.max_frame = max_frame
        self.queue_frames = queue_frames
        self.queue_bytes = queue_bytes
        self.rng = rng if rng is not None else random.Random()
        self.connect_timeout = connect_timeout
        self.hello_timeout = hello_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_incoming = max_incoming
        self.max_handshakes = max_handshakes
        self.max_incoming_per_peer = max_incoming_per_peer
        if max_incoming_bytes < max_frame + 4:
            raise ValueError(f"max_incoming_bytes ({max_incoming_bytes}) must hold one "
                             f"frame of max_frame ({max_frame}) bytes")
        self.max_incoming_bytes = max_incoming_bytes
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.user_timeout = user_timeout
        self.fail_stop = fail_stop
        self.on_handler_error = on_handler_error
        self.stats = TransportStats()
        self.handler: Any = None
        self._on_frame_from: Callable[[Address, str | None, bytes], None] | None = None
        self._bound = trio.Event()
        #: TLS material (None: plain TCP). Its contexts are read per new connection.
        self.tls = tls
        #: The node id sent in the hello (the TLS certificate's name by default).
        self.node_id = node_id if node_id is not None else (tls.node_id if tls else None)
        self._hello = encode_hello(local_address, self.node_id)
        self._peers: dict[Address, _Peer] = {}
        self._dgram_addr: dict[Address, tuple[Any, ...] | None] = {}
        self._resolving: set[Address] = set()
        # Incoming connections by accept order (insertion-ordered), and by peer.
        self._conns: dict[int, _Conn] = {}
        self._by_peer: dict[str, list[_Conn]] = {}
        self._conn_seq = 0
        self._incoming = 0  # serving tasks still running (evicted ones until they end)
        self._handshaking = 0
        # The shared budget for partly received frames (bytes charged), and the
        # connections waiting for some of it.
        self._mem_used = 0
        self._mem_waiters = 0
        self._mem_freed = trio.Event()
        # A handler exception on its way out (fail_stop): not a connection's bug.
        self._fatal: BaseException | None = None
        self._closing = False
        self._nursery: trio.Nursery | None = None

    # -- Transport API -----------------------------------------------------

    def bind(self, handler: Any) -> None:
        self.handler = handler
        self._on_frame_from = getattr(handler, "on_frame_from", None)
        self._bound.set()

    def send_datagram(self, dest: Address, data: bytes) -> None:
        stats = self.stats
        if len(data) > self.max_datagram:
            stats.datagrams_oversize += 1
            return
        sa = self._dgram_addr.get(dest)
        if sa is None:
            sa = self._lookup(dest)
            if sa is None:
                return
        try:
            self._udp.sendto(data, sa)
        except OSError:  # EAGAIN (buffer full), ENETUNREACH, EPERM, ...
            stats.datagrams_dropped += 1
            return
        stats.datagrams_sent += 1
        stats.bytes_sent += len(data)

    def send_frame(self, dest: Address, data: bytes) -> None:
        stats = self.stats
        n = len(data)
        if n == 0 or n > self.max_frame:
            stats.frames_dropped_oversize += 1
            return
        if self._closing:
            stats.frames_dropped_closed += 1
            return
        peer = self._peers.get(dest)
        if peer is None:
            if self._nursery is None:
                raise RuntimeError("transport is not open")
            peer = self._peers[dest] = _Peer(dest)
            self._nursery.start_soon(self._peer_task, peer, name=f"cf-peer {dest}")
        if peer.queue and (
            len(peer.queue) >= 2 * self.queue_frames or peer.queued_bytes + n > self.queue_bytes
        ):
            stats.frames_dropped_queue_full += 1
            return
        raw = peer.raw
        if raw is not None and not peer.queue and not peer.writing and not peer.partial:
            # Fast path: the writer is idle, so nothing is ahead of this frame on the
            # connection; hand it to the kernel now, without waking the writer task.
            chunk = pack_length(n) + data
            try:
                sent = raw.send(chunk)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # broken: the writer (EOF watcher) reconnects
                sent = -1
            if sent >= 0:
                stats.frames_queued += 1
                stats.bytes_sent += sent
                peer.last_write = trio.current_time()
                if sent == len(chunk):
                    stats.frames_sent += 1
                    return
                if sent > 0:
                    peer.partial = chunk[sent:]
                    stats.frames_sent += 1
                    peer.wake.set()
                    return
                stats.frames_queued -= 1  # counted again below
        peer.queue.append(pack_length(n))
        peer.queue.append(data)
        peer.queued_bytes += n + 4
        stats.frames_queued += 1
        peer.wake.set()

    # -- helpers -------------------------------------------------------------

    def _lookup(self, dest: Address) -> tuple[Any, ...] | None:
        """Resolve ``dest`` for datagrams: literals at once; names in the background."""
        try:
            host, port = split_address(dest)
        except ValueError:
            self.stats.unresolvable += 1
            return None
        if dest in self._dgram_addr:  # known unusable
            self.stats.unresolvable += 1
            return None
        sa = _sockaddr(self.family, host, port)
        if sa is not None:
            if len(self._dgram_addr) > 65536:
                self._dgram_addr.clear()
            self._dgram_addr[dest] = sa
            return sa
        self.stats.unresolvable += 1
        if _literal(host) is None and dest not in self._resolving and self._nursery is not None:
            self._resolving.add(dest)
            self._nursery.start_soon(self._resolve_task, dest, host, port)
        else:
            self._dgram_addr[dest] = None
        return None

    async def _resolve(self, host: str, port: int) -> tuple[Any, ...] | None:
        if host == "localhost" or _literal(host) is not None:
            return _sockaddr(self.family, host, port)
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=stdsocket.SOCK_DGRAM)
        except OSError:
            return None
        for fam, *_rest, sa in infos:
            if fam == self.family or (
                self.family == stdsocket.AF_INET6 and fam == stdsocket.AF_INET
            ):
                return _sockaddr(self.family, str(sa[0]), port)
        return None

    async def _resolve_task(self, dest: Address, host: str, port: int) -> None:
        try:
            self._dgram_addr[dest] = await self._resolve(host, port)
        finally:
            self._resolving.discard(dest)

    def _handler_failed(self, exc: BaseException, what: str) -> None:
        self.stats.handler_errors += 1
        log.error("%s: handler raised on %s", self.local_address, what, exc_info=exc)
        if self.on_handler_error is not None:
            self.on_handler_error(exc)
        if self.fail_stop:
            self._fatal = exc
            raise exc

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff, jittered to 50-100 % by the injected RNG."""
        if failures <= 0:
            return 0.0
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 30))
        return delay * (0.5 + 0.5 * self.rng.random())

    # -- UDP -------------------------------------------------------------

    async def _udp_loop(self) -> None:
        await self._bound.wait()
        sock = self._udp
        recvfrom = sock.recvfrom
        bufsize = 65536
        stats = self.stats
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(_RECV_BATCH):
                try:
                    data, sa = recvfrom(bufsize)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # e.g. ECONNREFUSED from ICMP: nothing to read
                    continue
                stats.datagrams_received += 1
                stats.bytes_received += len(data)
                src = format_address(sa[0], sa[1])
                try:
                    self.handler.on_datagram(src, data)
                except Exception as exc:
                    self._handler_failed(exc, f"datagram from {src}")
            else:
                await trio.lowlevel.checkpoint()

    # -- TCP: accepting side ---------------------------------------------

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        await self._bound.wait()
        listener = self._listener
        while True:
            try:
                sock, _addr = await listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("%s: accept failed: %s", self.local_address, exc)
                    await trio.sleep(0.1)
                continue
            if self._handshaking >= self.max_handshakes:
                self.stats.rejected_handshakes += 1
                sock.close()
                continue
            if len(self._conns) >= self.max_incoming and not self._evict_idle():
                self.stats.rejected += 1
                sock.close()
                continue
            self.stats.accepted += 1
            self._tune(sock)
            self._conn_seq += 1
            conn = self._conns[self._conn_seq] = _Conn(self._conn_seq, trio.current_time())
            self._handshaking += 1
            self._incoming += 1
            nursery.start_soon(self._serve, sock, conn, name="cf-conn")

    def _evict_idle(self) -> bool:
        """Close the incoming connection past its hello that has been idle longest,
        those that never delivered a frame first. False if there is none."""
        victim: _Conn | None = None
        for c in self._conns.values():
            if c.key is not None and (
                victim is None or (c.frames > 0, c.last) < (victim.frames > 0, victim.last)
            ):
                victim = c
        if victim is None:
            return False
        self.stats.evicted_idle += 1
        self._forget(victim)
        victim.scope.cancel()
        return True

    def _forget(self, conn: _Conn) -> None:
        """Take ``conn`` out of the registries (idempotent)."""
        if self._conns.pop(conn.seq, None) is not None and conn.key is not None:
            same = self._by_peer.get(conn.key)
            if same is not None:
                with contextlib.suppress(ValueError):
                    same.remove(conn)
                if not same:
                    del self._by_peer[conn.key]

    def _register_peer(self, conn: _Conn, key: str) -> None:
        """The hello named the peer: count the connection under it; over the limit,
        close the peer's oldest connection."""
        conn.key = key
        conn.last = trio.current_time()
        same = self._by_peer.setdefault(key, [])
        while len(same) >= self.max_incoming_per_peer:
            old = same[0]
            self.stats.evicted_per_peer += 1
            self._forget(old)
            old.scope.cancel()
        same.append(conn)

    async def _admit(self, n: int, deadline: float) -> bool:
        """Charge ``n`` bytes to the shared budget, waiting (until ``deadline``) for
        other connections to release some. False if the deadline passed."""
        if self._mem_used + n <= self.max_incoming_bytes:
            self._mem_used += n
            return True
        self.stats.budget_waits += 1
        self._mem_waiters += 1
        try:
            with trio.move_on_at(deadline):
                while self._mem_used + n > self.max_incoming_bytes:
                    await self._mem_freed.wait()
                self._mem_used += n
                return True
        finally:
            self._mem_waiters -= 1
        return False

    def _release(self, n: int) -> None:
        self._mem_used -= n
        if self._mem_waiters:
            freed, self._mem_freed = self._mem_freed, trio.Event()
            freed.set()

    async def _serve(self, sock: trio.socket.SocketType, conn: _Conn) -> None:
        stats = self.stats
        plain = trio.SocketStream(sock)
        stream: trio.abc.Stream = plain
        reader = FrameReader(self.max_frame)
        tls = self.tls
        identity: str | None = None
        handshaking = True
        charged = 0  # bytes of the shared budget this connection holds
        try:
            with conn.scope:
                with trio.move_on_after(self.hello_timeout) as scope:
                    if tls is not None:
                        secure = trio.SSLStream(plain, tls.server_context, server_side=True)
                        stream = secure
                        try:
                            await secure.do_handshake()
                        except trio.BrokenResourceError as exc:
                            stats.tls_failures += 1
                            log.info("%s: TLS handshake failed: %s", self.local_address,
                                     exc.__cause__ or exc)
                            return
                    while reader.peer is None:
                        data = await stream.receive_some(4096)
                        if not data:
                            return
                        stats.bytes_received += len(data)
                        frames = reader.feed(data)
                        if reader.peer is not None:
                            if tls is not None:
                                assert isinstance(stream, trio.SSLStream)
                                identity = peer_identity(stream.getpeercert(), reader.node_id)
                                if identity is None:
                                    stats.identity_mismatch += 1
                                    stats.frames_dropped_identity += len(frames)
                                    log.info("%s: closing connection: hello claims %r, not "
                                             "a name of its certificate", self.local_address,
                                             reader.node_id)
                                    return
                            handshaking = False
                            self._handshaking -= 1
                            self._register_peer(conn, identity or reader.peer)
                            if frames:
                                conn.frames += len(frames)
                                self._deliver(reader.peer, identity, frames)
                            reader.check()
                if scope.cancelled_caught:
                    stats.hello_timeouts += 1
                    return
                src = reader.peer
                assert src is not None
                receive = StreamReader(plain).receive if tls is None else stream.receive_some
                frame_timeout = self.frame_timeout
                budget = self.max_incoming_bytes
                started = trio.current_time()  # when the frame being received began
                while True:
                    if reader.partial:
                        # Charge the frame's declared size to the shared budget.
                        deadline = started + frame_timeout
                        held = reader.held
                        if held > charged:
                            if self._mem_used + held - charged <= budget:
                                self._mem_used += held - charged
                            elif not await self._admit(held - charged, deadline):
                                stats.frame_timeouts += 1
                                log.info("%s: closing connection from %s: no memory budget "
                                         "for a %d-byte frame in %.1f s", self.local_address,
                                         src, held, frame_timeout)
                                return
                            charged = held
                        elif held < charged:
                            self._release(charged - held)
                            charged = held
                        data = b""
                        with trio.move_on_at(deadline) as fscope:
                            data = await receive(min(max(65536, reader.wanted), 4 << 20))
                        if fscope.cancelled_caught:
                            stats.frame_timeouts += 1
                            log.info("%s: closing connection from %s: frame not complete "
                                     "in %.1f s", self.local_address, src, frame_timeout)
                            return
                    else:
                        if charged:
                            self._release(charged)
                            charged = 0
                        data = await receive(65536)
                    if not data:
                        return
                    stats.bytes_received += len(data)
                    was_partial = reader.partial
                    frames = reader.feed(data)
                    if frames:
                        conn.frames += len(frames)
                        conn.last = trio.current_time()
                        self._deliver(src, identity, frames)
                        reader.check()
                    if reader.partial and (frames or not was_partial):
                        started = trio.current_time()  # a new frame began in this chunk
        except FramingError as exc:
            if reader.peer is None:
                stats.bad_hello += 1
            else:
                stats.bad_frame += 1
            log.info("%s: closing connection: %s", self.local_address, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception as exc:
            if exc is self._fatal:
                raise  # the core behind the handler failed (fail_stop): not this connection
            # a bug here must cost one connection, not the node
            stats.serve_errors += 1
            log.error("%s: serving a connection failed: %r", self.local_address, exc,
                      exc_info=exc)
        finally:
            if handshaking:
                self._handshaking -= 1
            if charged:
                self._release(charged)
            self._forget(conn)
            self._incoming -= 1
            # The acceptor never writes: close the socket itself (no TLS close_notify).
            await trio.aclose_forcefully(plain)

    def _deliver(self, src: Address, identity: str | None, frames: list[bytes]) -> None:
        stats = self.stats
        handler = self.handler
        with_identity = self._on_frame_from
        for f in frames:
            stats.frames_received += 1
            try:
                if with_identity is not None:
                    with_identity(src, identity, f)
                else:
                    handler.on_frame(src, f)
            except Exception as exc:
                self._handler_failed(exc, f"frame from {src}")

    # -- TCP: dialing side -----------------------------------------------

    async def _connect(self, dest: Address) -> trio.abc.Stream | None:
        try:
            host, port = split_address(dest)
        except ValueError:
            return None
        try:
            infos = await trio.socket.getaddrinfo(
                host if host != "localhost" else "127.0.0.1", port, type=stdsocket.SOCK_STREAM
            )
        except OSError:
            return None
        for family, type_, proto, _canon, sa in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                with trio.fail_after(self.connect_timeout):
                    await sock.connect(sa)
            except (OSError, trio.TooSlowError):
                sock.close()
                continue
            self._tune(sock)
            stream = trio.SocketStream(sock)  # sets TCP_NODELAY
            if self.tls is None:
                return stream
            secure = trio.SSLStream(stream, self.tls.client_context)
            try:
                with trio.fail_after(self.connect_timeout):
                    await secure.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                self.stats.tls_failures += 1
                log.info("%s: TLS handshake with %s failed: %s", self.local_address, dest,
                         exc.__cause__ or exc)
                await trio.aclose_forcefully(stream)
                continue
            return secure
        return None

    def _tune(self, sock: trio.socket.SocketType) -> None:
        """Notice a vanished peer (no FIN, e.g. a partition or a dead host): keepalive
        probes, and TCP_USER_TIMEOUT so unacknowledged data fails the connection."""
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_KEEPALIVE, 1)
            idle = max(1, int(self.user_timeout))
            sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_KEEPIDLE, idle)
            sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_KEEPINTVL, max(1, idle // 3))
            sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_KEEPCNT, 3)
            sock.setsockopt(
                stdsocket.IPPROTO_TCP, stdsocket.TCP_USER_TIMEOUT, int(self.user_timeout * 1000)
            )

    async def _peer_task(self, peer: _Peer) -> None:
        """Own the connection to one peer: connect, write queued frames, reconnect."""
        stats = self.stats
        try:
            while True:
                if not await self._wait_queued(peer):
                    return  # idle: forget the peer (send_frame starts a new task)
                if await self._connect_and_write(peer):
                    stats.idle_closed += 1
                    return
        except Exception as exc:  # a bug here must cost one peer's queue, not the node
            stats.peer_task_errors += 1
            log.error("%s: writer for %s failed: %r", self.local_address, peer.dest, exc,
                      exc_info=exc)
            peer.queue.clear()
            peer.queued_bytes = 0
        finally:
            if self._peers.get(peer.dest) is peer and not peer.queue:
                del self._peers[peer.dest]

    async def _wait_queued(self, peer: _Peer) -> bool:
        """Wait until frames are queued for ``peer``; False after ``idle_timeout``."""
        with trio.move_on_after(self.idle_timeout):
            while not peer.queue:
                peer.wake = trio.Event()
                await peer.wake.wait()
        return bool(peer.queue)

    async def _connect_and_write(self, peer: _Peer) -> bool:
        """One connection's life. True when it was closed for being idle."""
        stats = self.stats
        delay = self._backoff(peer.failures)
        if delay:
            await trio.sleep(delay)
        stream = await self._connect(peer.dest)
        if stream is None:
            stats.connect_failures += 1
            peer.failures += 1
            if peer.failures in (1, 10) or peer.failures % 100 == 0:
                log.info("%s: cannot connect to %s", self.local_address, peer.dest)
            return False
        stats.connects += 1
        peer.connected = True
        started = trio.current_time()
        peer.idle = False
        peer.last_write = started
        try:
            # Under strict exception groups an error escaping a nursery arrives
            # wrapped; so the writer catches its own errors (a peer that dies
            # mid-write, EPIPE/ECONNRESET) and ends the connection by cancelling.
            # Nothing a peer does may propagate out of this method.
            async with trio.open_nursery() as conn:
                conn.start_soon(self._watch_eof, stream, conn.cancel_scope)
                conn.start_soon(self._watch_idle, peer, conn.cancel_scope)
                try:
                    await self._write_loop(peer, stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    stats.write_errors += 1
                    conn.cancel_scope.cancel()
        finally:
            peer.connected = False
            peer.writing = False
            peer.raw = None
            peer.partial = b""  # a partly sent frame dies with its connection
            # Forcefully: a TLS close_notify could block on a peer that stopped reading.
            await trio.aclose_forcefully(stream)
        if peer.idle:
            return True
        stats.disconnects += 1
        # A connection that died young counts as a failure, so a peer that
        # accepts and drops at once is not hammered.
        if trio.current_time() - started < 1.0:
            peer.failures += 1
        else:
            peer.failures = 0
        return False

    async def _write_loop(self, peer: _Peer, stream: trio.abc.Stream) -> None:
        """Write queued frames until the connection breaks: an exception, or a
        cancellation by the EOF or idle watcher."""
        stats = self.stats
        first = self._hello
        # The direct-write fast path needs the plain socket (never under TLS).
        raw = getattr(stream.socket, "_sock", None) if isinstance(stream, trio.SocketStream) \
            else None
        while True:
            while not peer.queue and not peer.partial:
                peer.wake = trio.Event()
                await peer.wake.wait()
            queue = peer.queue
            nframes = len(queue) // 2
            if peer.partial:  # the tail of a frame send_frame began: it goes first
                queue.appendleft(peer.partial)
                peer.partial = b""
            if first:
                queue.appendleft(first)
                first = b""
            chunk = b"".join(queue)
            queue.clear()
            peer.queued_bytes = 0
            peer.writing = True
            await stream.send_all(chunk)
            peer.writing = False
            peer.raw = raw  # the hello is out: send_frame may write directly
            peer.last_write = trio.current_time()
            stats.frames_sent += nframes
            stats.bytes_sent += len(chunk)

    async def _watch_idle(self, peer: _Peer, scope: trio.CancelScope) -> None:
        """Close the connection after ``idle_timeout`` seconds without writes.

        One sleep per idle period, not a timeout per write: the hot path stays free
        of cancel scopes."""
        deadline = peer.last_write + self.idle_timeout
        while True:
            await trio.sleep_until(deadline)
            now = trio.current_time()
            if peer.queue or peer.writing or peer.partial:
                deadline = now + self.idle_timeout  # busy (a long write): look again later
            elif now >= peer.last_write + self.idle_timeout:
                peer.idle = True
                scope.cancel()
                return
            else:
                deadline = peer.last_write + self.idle_timeout

    async def _watch_eof(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        """The acceptor never writes: EOF, an error or any data means the connection is over."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.receive_some(1)
        scope.cancel()

    # -- shutdown ----------------------------------------------------------

    async def _linger(self, timeout: float) -> None:
        """Give connected writers up to ``timeout`` seconds to flush their queues."""
        with trio.move_on_after(timeout):
            while any(
                p.connected and (p.queue or p.writing or p.partial) for p in self._peers.values()
            ):
                await trio.sleep(0.002)
        self.stats.frames_dropped_closed += sum(len(p.queue) // 2 for p in self._peers.values())


# ---------------------------------------------------------------------------
# Binding.


def _is_unspecified(host: str) -> bool:
    ip = _literal(host)
    return ip is not None and ip.is_unspecified


async def _bind_pair(host: str, port: int) -> tuple[stdsocket.socket, trio.socket.SocketType]:
    """Bind UDP and TCP on the same ``host:port`` (port 0: one free for both)."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=stdsocket.SOCK_DGRAM, flags=stdsocket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve bind address {host!r}")
    family, _t, _p, _c, sa = infos[0]
    last: OSError | None = None
    for _attempt in range(50 if port == 0 else 1):
        udp = stdsocket.socket(family, stdsocket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, stdsocket.SOCK_STREAM)
        try:
            if family == stdsocket.AF_INET6:
                dual = 0 if _is_unspecified(host) else 1
                udp.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_V6ONLY, dual)
                tcp.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_V6ONLY, dual)
            udp.setblocking(False)
            udp.bind(sa)
            actual = udp.getsockname()[1]
            tcp.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
            await tcp.bind((sa[0], actual, *sa[2:]))
            tcp.listen(512)
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            last = exc
    assert last is not None
    raise last


@asynccontextmanager
async def open_transport(
    bind: str,
    advertise: str | None = None,
    max_datagram: int = DEFAULT_DATAGRAM_BUDGET,
    *,
    rng: random.Random | None = None,
    linger: float = 0.25,
    tls: TLSConfig | None = None,
    **options: Any,
) -> AsyncIterator[NetTransport]:
    """Bind UDP and TCP on ``bind`` (``host:port``; port 0 picks a free port for both)
    and run the endpoint's receive tasks until the block exits.

    ``advertise`` is the ``host:port`` peers should use (sent in the stream hello and
    exposed as ``local_address``); it defaults to the bound address, and must be
    given when binding a wildcard address. An advertised port of 0 means the bound
    port. On exit, connected writers get ``linger`` seconds to flush, then every
    task is cancelled and every socket closed. Other keyword ``options`` go to
    :class:`NetTransport` (``max_frame``, ``queue_frames``, ``queue_bytes``,
    ``connect_timeout``, ``hello_timeout``, ``backoff_base``, ``backoff_cap``,
    ``max_incoming``, ``max_handshakes``, ``max_incoming_per_peer``,
    ``max_incoming_bytes``, ``frame_timeout``, ``fail_stop``, ``on_handler_error``,
    ``node_id``).

    ``tls``: a :class:`~clusterfunk.runtime.tls.TLSConfig` for mutual TLS on every
    stream connection (see the module docstring); None keeps plain TCP.
    """
    host, port = split_address(bind)
    if advertise is None and _is_unspecified(host):
        raise ValueError(f"binding the wildcard address {bind!r} needs an advertise address")
    udp, tcp = await _bind_pair(host, port)
    actual = udp.getsockname()[1]
    if advertise is None:
        local = format_address(host, actual)
    else:
        ahost, aport = split_address(advertise)
        local = format_address(ahost, aport or actual)
    transport = NetTransport(udp, tcp, local, max_datagram=max_datagram, rng=rng, tls=tls,
                             **options)
    try:
        async with trio.open_nursery() as nursery:
            transport._nursery = nursery
            nursery.start_soon(transport._udp_loop, name="cf-udp")
            nursery.start_soon(transport._accept_loop, nursery, name="cf-accept")
            try:
                yield transport
            finally:
                transport._closing = True
                if linger > 0 and transport._peers:
                    with trio.CancelScope(shield=True):
                        await transport._linger(linger)
                nursery.cancel_scope.cancel()
    finally:
        transport._closing = True
        trio.lowlevel.notify_closing(udp)
        udp.close()
        tcp.close()


__all__ = [
    "NetTransport",
    "TransportStats",
    "canonical_address",
    "format_address",
    "open_transport",
]
