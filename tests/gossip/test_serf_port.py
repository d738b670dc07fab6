"""Serf talks to the SWIM core only through :class:`SwimPort` (issue 8, item 3).

Two kinds of proof: Serf runs against a small fake port, without any GossipCore
(what it asks of the port is exactly what it needs); and neither class reaches
into the other's private attributes (read from the source)."""

from __future__ import annotations

import ast
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

import clusterfunk.gossip.core as core_mod
import clusterfunk.gossip.serf as serf_mod
from clusterfunk.gossip import events as ev
from clusterfunk.gossip.config import LAN, GossipConfig, query_timeout
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.messages import QueryMsg, QueryResponseMsg, UserEventMsg
from clusterfunk.gossip.serf import Serf, SwimPort


class FakePort:
    """A SwimPort that records what Serf asks of it."""

    def __init__(self, name: str = "a", config: GossipConfig = LAN) -> None:
        self.name = name
        self.addr = f"{name}:7946"
        self.config = config
        self.rng = random.Random(1)
        self.members = [(name, self.addr), ("b", "b:7946"), ("c", "c:7946")]
        self.tags: dict[str, str] = {"role": "web"}
        self.timers: list[tuple[float, tuple[Any, ...]]] = []
        self.sends: list[tuple[str, Any, bool]] = []
        self.broadcasts: dict[str, bytes] = {}
        self.trace: list[tuple[str, dict[str, Any]]] = []
        self.events: list[Any] = []

    def num_members(self, live: bool = True) -> int:
        return len(self.members)

    def alive_members(self) -> list[tuple[str, str]]:
        return list(self.members)

    def local_tags(self) -> Mapping[str, str]:
        return self.tags

    def schedule(self, at: float, what: tuple[Any, ...]) -> None:
        self.timers.append((at, what))

    def send(self, dest: str, msg: Any, stream: bool = False) -> None:
        self.sends.append((dest, msg, stream))

    def broadcast(self, key: str, data: bytes) -> None:
        self.broadcasts[key] = data

    def emit(self, ev: str, **fields: Any) -> None:
        self.trace.append((ev, fields))

    def event(self, obj: Any) -> None:
        self.events.append(obj)


def _serf(port: SwimPort) -> Serf:  # typed: FakePort and GossipCore both satisfy the port
    return Serf(port)


def test_user_events_go_out_through_the_port_only() -> None:
    port = FakePort(config=attrs.evolve(LAN, user_coalesce_period=0.5))
    serf = _serf(port)
    lt = serf.user_event(1.0, "deploy", b"v1", coalesce=False)
    assert [type(e) for e in port.events] == [ev.UserEvent]
    assert port.trace == [("gossip.event", {"name": "deploy", "ltime": lt})]
    assert len(port.broadcasts) == 1  # disseminated
    # A coalesced event waits for a timer the port schedules, then is delivered.
    serf.user_event(2.0, "cfg", b"x", coalesce=True)
    serf.user_event(2.1, "cfg", b"y", coalesce=True)
    assert port.timers == [(2.5, ("coalesce",))]
    serf.on_timer(2.5, ("coalesce",))
    assert [e.payload for e in port.events if type(e) is ev.UserEvent] == [b"v1", b"y"]
    # A duplicate from the network is dropped, nothing more goes out.
    before = (len(port.events), len(port.broadcasts))
    serf.on_user_event(3.0, "b:7946", UserEventMsg(lt, "deploy", b"v1", False), None, False)
    assert (len(port.events), len(port.broadcasts)) == before


def test_a_query_runs_on_the_port_timers_and_sends() -> None:
    port = FakePort()
    serf = _serf(port)
    qid = serf.query(10.0, "status", b"?", want_ack=True)
    timeout = query_timeout(LAN, 3)
    # Its timers (re-send, done; and, as we process it too, the expiry) go to the port.
    assert set(port.timers) == {
        (10.0 + timeout / 2, ("resend", qid)),
        (10.0 + timeout, ("done", qid)),
        (10.0 + timeout, ("expire", (0, qid))),
    }
    assert any(k.startswith("q:") for k in port.broadcasts)
    # We pass our own filters: acked and published to the application.
    q = next(e for e in port.events if type(e) is ev.Query)
    # b acks; at the re-send, only c (alive, not acked, not us) gets it directly.
    serf.on_query_response(
        11.0, "b:7946", QueryResponseMsg(q.ltime, qid, "b", True, b""), None, False
    )
    port.sends.clear()
    serf.on_timer(10.0 + timeout / 2, ("resend", qid))
    assert [(d, type(m), s) for d, m, s in port.sends] == [("c:7946", QueryMsg, False)]
    # A big response to a remote querier travels on the stream channel.
    port2 = FakePort("b")
    serf2 = _serf(port2)
    serf2.on_query(10.5, "a:7946", q_msg := port.sends[0][1], None, False)
    q2 = next(e for e in port2.events if type(e) is ev.Query)
    assert q2.id == q_msg.id
    port2.sends.clear()
    assert serf2.respond(10.6, q2, b"r" * 900)
    assert [(d, s) for d, _m, s in port2.sends] == [("a:7946", True)]
    # Done: the querier reports what it collected.
    serf.on_timer(10.0 + timeout, ("done", qid))
    done = [e for e in port.events if type(e) is ev.QueryDone]
    assert len(done) == 1 and done[0].acks == ("a", "b")
    assert port.trace[-1][0] == "gossip.query_done"


def test_tag_filters_read_our_tags_through_the_port() -> None:
    port = FakePort()
    serf = _serf(port)
    msg = QueryMsg(1, 7, "who", b"", "x", "x:7946", (), {"role": "db|cache"}, False, 5.0)
    serf.on_query(1.0, "x:7946", msg, None, False)
    assert serf.stats["queries_filtered"] == 1 and not port.events
    port.tags = {"role": "cache"}
    serf.on_query(1.0, "x:7946", attrs.evolve(msg, ltime=2), None, False)
    assert [type(e) for e in port.events] == [ev.Query]


def test_gossip_core_implements_the_port() -> None:
    core = GossipCore("a", "a:7946", random.Random(3), LAN, tags={"role": "web"})
    port: SwimPort = core
    assert port.local_tags() == {"role": "web"}
    assert port.alive_members() == [("a", "a:7946")]
    port.schedule(5.0, ("coalesce",))
    assert core.next_deadline() == 5.0


def _private_reach(path: Path, other: str) -> list[str]:
    """``other._x`` or ``self.other._x`` attribute accesses in a module's source."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__"):
            continue
        base = node.value
        name = (
            base.id
            if isinstance(base, ast.Name)
            else base.attr
            if isinstance(base, ast.Attribute)
            else None
        )
        if name == other:
            found.append(f"{path.name}:{node.lineno} {name}.{node.attr}")
    return found


def test_no_private_attribute_access_across_serf_and_the_core() -> None:
    serf_src = Path(serf_mod.__file__)
    core_src = Path(core_mod.__file__)
    assert _private_reach(serf_src, "core") == []
    assert _private_reach(core_src, "serf") == []
    # And no hand-copied timer constant: the core schedules Serf's timers itself.
    assert "_SERF_TIMER" not in serf_src.read_text()
