"""The stand-in workload: nodes that ping each other.

A tiny sans-I/O core used to exercise the runtime, the real transport and the
simulator before (and beside) the real protocols. Every ``interval`` seconds a
node pings one peer chosen by its injected RNG (a datagram); the peer answers
with a pong. Every ``stream_every``-th round it also sends a ``Hello`` frame on
the stream channel, which the peer echoes back.
"""

from __future__ import annotations

import math
import random

import attrs

from clusterfunk import wire
from clusterfunk.runtime.api import Outbox, Output


@wire.message(1)
@attrs.frozen
class Ping:
    seq: int
    sent: float
    pad: bytes = b""


@wire.message(2)
@attrs.frozen
class Pong:
    seq: int
    sent: float


@wire.message(3)
@attrs.frozen
class Hello:
    seq: int
    body: bytes


@wire.message(4)
@attrs.frozen
class HelloBack:
    seq: int
    size: int


class PingCore(Outbox):
    """Pings random peers; records round-trip times (in local clock seconds)."""

    def __init__(
        self,
        me: str,
        peers: list[str],
        rng: random.Random,
        *,
        interval: float = 1.0,
        stream_every: int = 5,
        frame_bytes: int = 256,
    ) -> None:
        self.me = me
        self.peers = [p for p in peers if p != me]
        self.rng = rng
        self.interval = interval
        self.stream_every = stream_every
        self.frame_bytes = frame_bytes
        self.seq = 0
        self.next_at = math.inf
        self.outstanding: dict[int, str] = {}
        self.rtts: list[float] = []
        self.pongs = 0
        self.unexpected_pongs = 0
        self.hellos_back = 0
        self._out = Output()

    def start(self, now: float) -> None:
        # Spread first pings over one interval so nodes do not beat in lockstep.
        self.next_at = now + self.rng.random() * self.interval

    def on_tick(self, now: float) -> None:
        if now < self.next_at:
            return
        self.next_at = now + self.interval * (0.5 + self.rng.random())
        if not self.peers:
            return
        self.seq += 1
        peer = self.rng.choice(self.peers)
        self.outstanding[self.seq] = peer
        if len(self.outstanding) > 1024:  # forget the oldest unanswered pings
            del self.outstanding[min(self.outstanding)]
        self._out.send(peer, Ping(self.seq, now))
        self._out.emit("ping.send", peer=peer, seq=self.seq)
        if self.stream_every and self.seq % self.stream_every == 0:
            self._out.send(peer, Hello(self.seq, bytes(self.frame_bytes)), stream=True)

    def on_message(self, now: float, src: str, msg: object, stream: bool) -> None:
        if isinstance(msg, Ping):
            self._out.send(src, Pong(msg.seq, msg.sent))
        elif isinstance(msg, Pong):
            if self.outstanding.get(msg.seq) != src:
                self.unexpected_pongs += 1  # duplicates and strays
                return
            del self.outstanding[msg.seq]
            self.pongs += 1
            rtt = now - msg.sent
            self.rtts.append(rtt)
            self._out.emit("ping.rtt", peer=src, seq=msg.seq, rtt=round(rtt, 6))
        elif isinstance(msg, Hello):
            self._out.send(src, HelloBack(msg.seq, len(msg.body)), stream=True)
        elif isinstance(msg, HelloBack):
            self.hellos_back += 1

    def next_deadline(self) -> float:
        return self.next_at

