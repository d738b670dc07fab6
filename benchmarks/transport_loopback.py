"""Real transport over loopback: round-trip latency and message throughput.

Two drivers in one trio process (one CPU for both ends, so figures are a lower
bound for two processes), each running a tiny core:

* ``rtt``: one ping outstanding at a time, over TCP frames and over UDP
  datagrams; median and p99 round trip (driver + codec + transport, both ways);
* ``throughput``: a window of pings outstanding over TCP frames; messages per
  second counts both pings and pongs (each is one message handled by a core).

``--tls`` adds the frame cases over mutual TLS (certificates from
``clusterfunk certs`` in a temporary directory), to compare with plain TCP.

    python benchmarks/transport_loopback.py [--json] [--count N] [--window W] [--tls]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from clusterfunk.demo.ping import Ping, Pong
from clusterfunk.runtime.api import Core, Outbox, Output
from clusterfunk.runtime.driver import Driver
from clusterfunk.runtime.net import open_transport
from clusterfunk.runtime.tls import TLSConfig, load_tls_dir
from clusterfunk.runtime.trio_host import TrioClock
from clusterfunk.security.certs import write_certs


class Echo(Outbox):
    def __init__(self) -> None:
        self._out = Output()

    def start(self, now: float) -> None:
        pass

    def on_message(self, now: float, src: str, msg: object, stream: bool) -> None:
        if isinstance(msg, Ping):
            self._out.send(src, Pong(msg.seq, msg.sent), stream=stream)

    def on_tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float:
        return math.inf


class Client(Echo):
    """Keeps ``window`` pings in flight until ``count`` pongs came back."""

    def __init__(self, dest: str, count: int, window: int, stream: bool) -> None:
        super().__init__()
        self.dest, self.count, self.window, self.stream = dest, count, window, stream
        self.sent = 0
        self.rtts: list[float] = []
        self.done = trio.Event()

    def go(self, now: float) -> None:
        for _ in range(min(self.window, self.count)):
            self._send(now)

    def _send(self, now: float) -> None:
        self.sent += 1
        self._out.send(self.dest, Ping(self.sent, now), stream=self.stream)

    def on_message(self, now: float, src: str, msg: object, stream: bool) -> None:
        if isinstance(msg, Pong):
            self.rtts.append(now - msg.sent)
            if self.sent < self.count:
                self._send(now)
            elif len(self.rtts) >= self.count:
                self.done.set()


@asynccontextmanager
async def serve(node: str, core: Core, tls: TLSConfig | None) -> AsyncIterator[Driver]:
    """A driver on loopback (plain TCP, or mutual TLS with ``tls``)."""
    async with open_transport("127.0.0.1:0", rng=random.Random(), tls=tls) as transport, \
            trio.open_nursery() as nursery:
        driver = Driver(node, core, transport, TrioClock(nursery))
        driver.start()
        try:
            yield driver
        finally:
            driver.stop()
            nursery.cancel_scope.cancel()


async def run_case(count: int, window: int, stream: bool,
                   tls_dir: Path | None = None) -> dict[str, float]:
    tls_s = load_tls_dir(tls_dir, "echo") if tls_dir else None
    tls_c = load_tls_dir(tls_dir, "client-node") if tls_dir else None
    async with serve("echo", Echo(), tls_s) as server:
        client = Client(server.transport.local_address, count, window, stream)
        async with serve("client-node", client, tls_c) as drv:
            t0 = time.perf_counter()
            drv.call(lambda core, now: core.go(now))
            with trio.fail_after(120):
                await client.done.wait()
            elapsed = time.perf_counter() - t0
    rtts = sorted(client.rtts)
    return {
        "messages": 2 * count,
        "seconds": round(elapsed, 4),
        "msgs_per_s": round(2 * count / elapsed),
        "rtt_median_us": round(statistics.median(rtts) * 1e6, 1),
        "rtt_p99_us": round(rtts[int(0.99 * (len(rtts) - 1))] * 1e6, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {
        "rtt_tcp_frames": await run_case(args.rtt_count, 1, True),
        "rtt_udp_datagrams": await run_case(args.rtt_count, 1, False),
        "throughput_tcp_frames": await run_case(args.count, args.window, True),
    }
    if args.tls:
        with tempfile.TemporaryDirectory() as d:
            write_certs(Path(d), ["echo", "client-node"])
            results["rtt_tls_frames"] = await run_case(args.rtt_count, 1, True, Path(d))
            results["throughput_tls_frames"] = await run_case(args.count, args.window, True,
                                                              Path(d))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--count", type=int, default=100_000, help="pings in the throughput case")
    p.add_argument("--rtt-count", type=int, default=5_000, help="pings in the latency cases")
    p.add_argument("--window", type=int, default=512, help="pings in flight (throughput)")
    p.add_argument("--tls", action="store_true", help="also run the frame cases over mutual TLS")
    args = p.parse_args()
    results = trio.run(main_async, args)
    if args.json:
        print(json.dumps(results))
        return
    for name, r in results.items():
        print(
            f"{name:24s} {r['msgs_per_s']:>9,} msgs/s   rtt median {r['rtt_median_us']:>8.1f} us"
            f"   p99 {r['rtt_p99_us']:>8.1f} us   ({r['messages']:,} msgs in {r['seconds']} s)"
        )


if __name__ == "__main__":
    main()
