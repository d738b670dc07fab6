"""open_driver: a core over the real network, bad input, handler errors, clean exit."""

from __future__ import annotations

import math
import random
import socket
from collections.abc import Iterator

import pytest
import trio

from clusterfunk import wire
from clusterfunk.demo.ping import Hello, Ping, PingCore
from clusterfunk.runtime.api import Output
from clusterfunk.runtime.framing import encode_frames, encode_hello
from clusterfunk.runtime.trio_host import open_driver
from clusterfunk.trace import Tracer
from tests.runtime.helpers import wait_for

LOOP = "127.0.0.1:0"


def _living_tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return sum(1 for _ in _walk(root))


def _walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _walk(child)


async def test_two_ping_cores_talk_over_udp_and_tcp() -> None:
    tracer = Tracer(trio.current_time, keep=True)
    before = _living_tasks()
    c1 = PingCore("", [], random.Random(1), interval=0.02)
    async with open_driver("n1", c1, LOOP, tracer=tracer) as d1:
        a1 = d1.transport.local_address
        c2 = PingCore("", [a1], random.Random(2), interval=0.01, stream_every=2)
        async with open_driver("n2", c2, LOOP, tracer=tracer) as d2:
            await wait_for(lambda: c2.pongs >= 10 and c2.hellos_back >= 5, timeout=10)
            assert c2.unexpected_pongs == 0
            assert d1.stats.frames_in >= 5 and d2.stats.frames_in >= 5
            assert all(0 < r < 1 for r in c2.rtts)
    assert _living_tasks() == before, "open_driver must not leave tasks behind"
    assert not d1.running and not d2.running
    rtt = tracer.of("ping.rtt")
    assert rtt and all(r["node"] == "n2" and r["peer"] == a1 for r in rtt)


async def test_malformed_input_is_counted_by_the_driver() -> None:
    core = PingCore("", [], random.Random(1), interval=math.inf)
    tracer = Tracer(trio.current_time, keep=True)
    async with open_driver("n1", core, LOOP, tracer=tracer) as d:
        host, port = d.transport.local_address.rsplit(":", 1)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            await s.bind(("127.0.0.1", 0))
            await s.sendto(b"\xc1garbage", (host, int(port)))
            await s.sendto(wire.encode(Ping(1, 0.0))[:-1], (host, int(port)))
            await s.sendto(wire.encode(Ping(7, 0.0)), (host, int(port)))  # good: answered
            with trio.fail_after(5):
                pong = wire.decode(await s.recv(2000))
        assert pong.seq == 7
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            encode_hello("127.0.0.1:1") + encode_frames([b"\x93\x01", wire.encode(Hello(1, b""))])
        )
        await wait_for(lambda: d.stats.malformed == 3 and d.stats.frames_in == 2)
        await stream.aclose()
        assert d.stats.datagrams_in == 3
        assert len(tracer.of("net.malformed")) == 3


class Exploding:
    """A core that raises on any message (a bug), to test fail-stop."""

    def __init__(self) -> None:
        self._out = Output()

    def start(self, now: float) -> None:
        pass

    def on_message(self, now: float, src: str, msg: object, stream: bool) -> None:
        raise RuntimeError("core bug")

    def on_tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float:
        return math.inf

    def drain(self) -> Output | None:
        return None


async def test_core_exception_fails_the_node_loudly() -> None:
    drivers = []
    with pytest.RaisesGroup(
        pytest.RaisesExc(RuntimeError, match="core bug"), flatten_subgroups=True
    ):
        async with open_driver("n1", Exploding(), LOOP) as d:
            drivers.append(d)
            host, port = d.transport.local_address.rsplit(":", 1)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(wire.encode(Ping(1, 0.0)), (host, int(port)))
            await trio.sleep(5)
            pytest.fail("the node should have stopped")
    assert drivers[0].stats.handler_errors == 1
    assert drivers[0].transport.stats.handler_errors == 1


async def test_advertise_is_the_local_address() -> None:
    core = PingCore("", [], random.Random(1), interval=math.inf)
    async with open_driver("n1", core, "0.0.0.0:0", advertise="127.0.0.1:0") as d:
        assert d.transport.local_address.startswith("127.0.0.1:")
        assert not d.transport.local_address.endswith(":0")


async def test_a_core_factory_is_built_with_the_bound_address() -> None:
    seen: list[str] = []

    def factory(address: str) -> PingCore:
        seen.append(address)
        return PingCore(address, [], random.Random(1), interval=math.inf)

    async with open_driver("n1", factory, LOOP) as d:
        assert seen == [d.transport.local_address]
        assert not d.transport.local_address.endswith(":0")
        assert d.core.me == d.transport.local_address
