"""A tiny hand-driven network for Raft core tests (no simulator, no trio).

``Net`` holds RaftCores with in-memory storage and KV state machines, a FIFO queue
of messages (each encoded and decoded with the wire codec, so the codec is exercised),
and a transcript of what happened, for scripted scenario tests.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from clusterfunk import wire
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.kv import KVStore
from clusterfunk.raft.persist import apply_records
from clusterfunk.raft.storage import MemoryStorage

PORT = 8300
FAST = RaftConfig(election_timeout=1.0, heartbeat_interval=0.1)


def addr(sid: str) -> str:
    return f"{sid}:{PORT}"


class Net:
    def __init__(self, ids: list[str], config: RaftConfig = FAST, seed: int = 0,
                 bootstrap: bool = True, storage_factory: Any = MemoryStorage) -> None:
        self.config = config
        self.seed = seed
        self.now = 0.0
        self.cores: dict[str, RaftCore] = {}
        self.storages: dict[str, Any] = {}
        self.sms: dict[str, KVStore] = {}
        self.queue: list[tuple[str, str, Any]] = []  # (dest id, src address, msg)
        self.blocked: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.events: dict[str, list[Any]] = {}
        self.trace: list[tuple[str, str, dict[str, Any]]] = []
        self.lines: list[str] = []
        self.dropped_msgs: list[tuple[str, str, Any]] = []
        self.delivered: list[tuple[str, str, Any]] = []
        self.storage_factory = storage_factory
        self.durable: dict[str, int] = {}  # persist token reported durable, per node
        self.acked: dict[str, int] = {}  # ... and told to the core
        #: nodes whose persister completes only when the test calls complete()
        self.manual: set[str] = set()
        self.inflight: dict[str, list[int]] = {}  # tokens handed over, not yet durable
        self.held: dict[str, list[tuple[int, list[Any]]]] = {}  # sends waiting (FIFO)
        boot = {i: addr(i) for i in ids} if bootstrap else None
        for i in ids:
            self.add(i, boot)

    # -- nodes --------------------------------------------------------------

    def add(self, sid: str, bootstrap: dict[str, str] | None = None,
            start: bool = True) -> RaftCore:
        st = self.storages.get(sid)
        if st is None:
            st = self.storages[sid] = self.storage_factory()
        sm = self.sms[sid] = KVStore()
        core = RaftCore(sid, st, sm, random.Random(f"{self.seed}/{sid}/{len(self.events)}"),
                        self.config, bootstrap)
        self.cores[sid] = core
        self.durable[sid] = self.acked[sid] = 0
        self.inflight[sid] = []
        self.held[sid] = []
        self.events.setdefault(sid, [])
        self.down.discard(sid)
        if start:
            core.start(self.now)
            self._flush(sid)
        return core

    def preload(self, sid: str, members: list[str], terms: list[int], term: int,
                vote: str | None = None, commit: int = 0) -> RaftCore:
        """Start ``sid`` from a prepared log: entry 1 is the configuration (term
        ``terms[0]``), entries 2.. are commands ``b"<index>/<term>"``."""
        from clusterfunk.raft.config import Configuration
        from clusterfunk.raft.messages import ENTRY_COMMAND, ENTRY_CONFIG, Entry
        from clusterfunk.raft.storage import HardState

        st = MemoryStorage()
        cfg = Configuration.make({m: addr(m) for m in members})
        st.entries = [Entry(terms[0], ENTRY_CONFIG, cfg.encode())] + [
            Entry(t, ENTRY_COMMAND, f"{i}/{t}".encode()) for i, t in enumerate(terms[1:], 2)
        ]
        st.hard_state = HardState(term, vote, commit)
        self.storages[sid] = st
        return self.add(sid)

    def crash(self, sid: str) -> None:
        self.down.add(sid)
        self.queue = [q for q in self.queue if q[0] != sid]
        self.held[sid] = []
        self.inflight[sid] = []

    def complete(self, sid: str, count: int | None = None) -> None:
        """The manual persister of ``sid`` reports its oldest ``count`` (default:
        all) outstanding batches durable: sync, release held sends, tell the core."""
        tokens = self.inflight[sid]
        n = len(tokens) if count is None else count
        if n == 0:
            return
        done, self.inflight[sid] = tokens[:n], tokens[n:]
        self.storages[sid].sync()
        self.durable[sid] = done[-1]
        self._flush(sid)

    def restart(self, sid: str) -> RaftCore:
        return self.add(sid, None)

    def __getitem__(self, sid: str) -> RaftCore:
        return self.cores[sid]

    # -- network -----------------------------------------------------------

    def isolate(self, sid: str) -> None:
        for o in self.cores:
            if o != sid:
                self.blocked.add((sid, o))
                self.blocked.add((o, sid))

    def partition(self, *groups: list[str]) -> None:
        self.blocked.clear()
        for g in groups:
            for h in groups:
                if g is not h:
                    for a in g:
                        for b in h:
                            self.blocked.add((a, b))

    def heal(self) -> None:
        self.blocked.clear()

    def _flush(self, sid: str) -> None:
        core = self.cores[sid]
        out = core.drain()
        while True:
            if out is not None:
                self._handle(sid, out)
            if self.acked.get(sid, 0) >= self.durable.get(sid, 0):
                break
            self.acked[sid] = self.durable[sid]
            self._release(sid)
            core.on_persisted(self.now, self.durable[sid])
            out = core.drain()

    def _release(self, sid: str) -> None:
        held = self.held[sid]
        while held and held[0][0] <= self.durable[sid]:
            self._queue_sends(sid, held.pop(0)[1])

    def take(self, sid: str) -> Any:
        """The node's pending Output, persisted (synchronously) as the driver would,
        with its sends returned to the test instead of queued."""
        out = self.cores[sid].drain()
        if out is not None:
            self._persist(sid, out)
            self._flush(sid)  # the core learns the batch is durable
        return out

    def _persist(self, sid: str, out: Any) -> None:
        if out.persist:
            apply_records(self.storages[sid], out.persist)
            if out.persist_token:
                if sid in self.manual:
                    self.inflight[sid].append(out.persist_token)
                else:
                    self.storages[sid].sync()
                    self.durable[sid] = out.persist_token
        if sid not in self.manual:
            # a synchronous persister: whatever the sends wait for is durable now
            assert out.wait_token <= self.durable.get(sid, 0)

    def _handle(self, sid: str, out: Any) -> None:
        """What the driver does with one Output: write the records (sync them at
        once, unless ``sid`` is manual), then send, or hold the sends in order while
        they wait for a batch that is not durable yet."""
        self._persist(sid, out)
        if self.held[sid] or out.wait_token > self.durable[sid]:
            self.held[sid].append((out.wait_token, out.sends))
        else:
            self._queue_sends(sid, out.sends)
        self._publish(sid, out)

    def _queue_sends(self, sid: str, sends: list[Any]) -> None:
        for s in sends:
            msg = wire.decode(wire.encode(s.msg))
            assert msg == s.msg
            dest = s.dest.partition(":")[0]
            self.queue.append((dest, addr(sid), msg))

    def _publish(self, sid: str, out: Any) -> None:
        self.events[sid].extend(out.events)
        for ev, fields in out.trace:
            self.trace.append((sid, ev, fields))
            self.lines.append(f"{sid} {ev} " + " ".join(f"{k}={v}" for k, v in fields.items()))

    def deliver_one(self) -> bool:
        if not self.queue:
            return False
        dest, src, msg = self.queue.pop(0)
        s = src.partition(":")[0]
        if dest in self.down or s in self.down or (s, dest) in self.blocked \
                or dest not in self.cores:
            self.dropped_msgs.append((dest, src, msg))
            return True
        self.delivered.append((dest, src, msg))
        self.cores[dest].on_message(self.now, src, msg, True)
        self._flush(dest)
        return True

    def deliver_all(self, limit: int = 100000) -> int:
        n = 0
        while self.queue and n < limit:
            self.deliver_one()
            n += 1
        assert not self.queue, "message storm"
        return n

    # -- time ----------------------------------------------------------------

    def tick(self, sid: str, now: float | None = None) -> None:
        if now is not None:
            self.now = max(self.now, now)
        self.cores[sid].on_tick(self.now)
        self._flush(sid)

    def advance(self, dt: float, step: float = 0.05) -> None:
        """Move time forward, ticking every live node whose deadline passed and
        delivering messages after each step."""
        end = self.now + dt
        while self.now < end - 1e-12:
            self.now = min(end, self.now + step)
            for sid in sorted(self.cores):
                if sid not in self.down and self.cores[sid].next_deadline() <= self.now:
                    self.tick(sid)
            self.deliver_all()

    def timeout(self, sid: str) -> None:
        """Fire ``sid``'s election timer now (moving time to its deadline)."""
        self.now = max(self.now, self.cores[sid].next_deadline())
        self.tick(sid)

    def call(self, sid: str, fn: Any) -> Any:
        result = fn(self.cores[sid], self.now)
        self._flush(sid)
        return result

    def elect(self, sid: str) -> None:
        self.timeout(sid)
        self.deliver_all()
        assert self.cores[sid].role == "leader", self.cores[sid].role

    def propose(self, sid: str, command: bytes) -> tuple[int, int]:
        return self.call(sid, lambda c, now: c.propose(now, command))

    def leaders(self) -> list[str]:
        return [s for s, c in self.cores.items() if c.role == "leader" and s not in self.down]

    def applied(self, sid: str) -> list[tuple[int, int, Any]]:
        from clusterfunk.raft.events import Applied

        return [(e.index, e.term, e.result) for e in self.events[sid] if isinstance(e, Applied)]

    def log_terms(self, sid: str) -> list[int]:
        c = self.cores[sid]
        return [c.log.term_at(i) for i in range(c.log.base_index + 1, c.log.last_index + 1)]


@pytest.fixture(scope="session")
def make_net():
    """The ``Net`` class (stateless, so shared by the session and Hypothesis inputs)."""
    return Net
