"""The ``raft`` simulation workload: a Raft KV cluster, clients, and the checkers.

``clusterfunk simulate --protocol raft --nodes 5 --nemesis all`` builds nodes
``n1 .. nN``, each a :class:`~clusterfunk.raft.core.RaftCore` on port 8300 with the
simulator store (over ``host.disk``, so a crash loses un-synced writes) and the KV
state machine, bootstrapped with all nodes as voters.

Simulated clients ``c1 .. cK`` are callbacks scheduled on the simulator (not trio
tasks: the run stays deterministic). Each client runs one operation at a time:

1. it draws an operation (get / put / delete / cas on one of ``--keys`` keys; put
   and cas values are unique strings ``"<client>.<seq>"``) and traces ``kv.call``;
2. it sends the request to the node it believes is the leader (a random node at
   first); the request and its reply each take one network latency, and a request
   to a crashed, paused or partitioned-from-the-client node is lost;
3. ``NotLeader`` (refused: certainly not applied) redirects it to the named leader,
   or to another node, and it retries the *same* operation; so does a request that
   was lost before any node accepted it (the client cannot tell a lost request from
   a slow one, so it retries after ``attempt_timeout`` -- still safe, because the
   simulator knows nothing was proposed; see :class:`SimClient` for why that does
   not cheat the history);
4. once a node has accepted the proposal, the client waits for the outcome: ``ok``
   with the result when that node applies the entry at the proposal's ``(index,
   term)``; ``fail`` when it applies a different term at that index (the entry was
   overwritten, so it can never commit); ``unknown`` after ``--op-timeout`` (the
   node crashed, or it is cut off). Every operation ends with one ``kv.return``.

Reads (``get``) go through the log, or -- with ``--read-index`` probability --
through ReadIndex on the node (``read_index`` then the local KV after
``last_applied`` reaches the read index); a failed read is retried, since a read
has no effect.

Checking: the :class:`~clusterfunk.sim.checkers.raft.SafetyChecker` listens to the
trace online and inspects the logs every ``--check-every`` seconds; at the end the
KV history is checked for linearizability (by key). Violations of either fail the
run. ``node`` of ``kv.call`` / ``kv.return`` records is the client id (``c1``..).
"""

from __future__ import annotations

import argparse
from typing import Any

from clusterfunk.raft import kv
from clusterfunk.raft.assembly import RaftServer
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.errors import NotLeader, RaftError
from clusterfunk.raft.roles import Role
from clusterfunk.sim.checkers.linearizability import HistoryBuilder, check_history
from clusterfunk.sim.checkers.raft import SafetyChecker
from clusterfunk.sim.raft_storage import SimPersister, SimStorage
from clusterfunk.sim.simulation import SimHost, Simulation

PORT = 8300
PORT_NAME = "raft"  # SimHost.PORT_NUMBERS["raft"] == PORT


class CoreLogView:
    """:class:`~clusterfunk.sim.checkers.raft.LogView` over a live core's log."""

    __slots__ = ("core", "log")

    def __init__(self, core: Any) -> None:
        self.core = core
        self.log = core.log

    @property
    def first_index(self) -> int:
        return self.log.base_index + 1

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def commit_index(self) -> int:
        return self.core.commit_index

    def term_at(self, index: int) -> int:
        return self.log.term_at(index)

    def content_at(self, index: int) -> Any:
        return self.log.entry(index)

    @property
    def voters(self) -> list[str]:
        """The voters of the core's latest configuration (for the Commit Majority check)."""
        return list(self.core.configuration.voters)


class RaftApp:
    """One incarnation of a simulated Raft node: the Raft server assembly that ships
    (:class:`~clusterfunk.raft.assembly.RaftServer`: core, driver, request waiters)
    on the simulated host, plus its KV store and simulated store."""

    def __init__(self, server: RaftServer, store: Any, sm: kv.KVStore) -> None:
        self.server = server
        self.host = server.host
        self.core = server.core
        self.driver = server.driver
        self.store = store
        self.kv = sm


class SimClient:
    """A KV client driven by simulator callbacks.

    Retrying the same operation is only done when no node can have accepted it
    (a refusal, or a request the simulator dropped before any node saw it); once a
    node accepted the proposal the operation's outcome is whatever that proposal's
    fate is. A real client could not tell a dropped request from a slow one: it
    would report ``unknown`` and start a new operation, which gives a history with
    less information, never a different verdict.
    """

    def __init__(self, wl: RaftWorkload, sim: Simulation, name: str) -> None:
        self.wl = wl
        self.sim = sim
        self.name = name
        self.rng = sim.rng(f"client/{name}")
        self.leader: str | None = None
        self.seq = 0
        self.op: dict[str, Any] | None = None
        self.attempt = 0  # bumped on every send: late replies to old attempts are ignored
        self.first_attempt = 1  # the attempt that started the current operation
        self.ok = self.failed = self.unknown = 0

    # -- operation lifecycle -------------------------------------------------------

    def start(self, at: float) -> None:
        self.sim.at(at, self._next)

    def _next(self) -> None:
        if self.sim.now >= self.wl.stop_at:
            return
        self.seq += 1
        wl = self.wl
        key = f"k{self.rng.randrange(wl.keys)}"
        r = self.rng.random()
        fields: dict[str, Any] = {"client": self.name}
        if r < 0.4:
            op, cmd = "get", kv.encode_get(key)
            fields.update(op=op, key=key)
        elif r < 0.7:
            value = f"{self.name}.{self.seq}"
            op, cmd = "put", kv.encode_put(key, value)
            fields.update(op=op, key=key, value=value)
        elif r < 0.8:
            op, cmd = "delete", kv.encode_delete(key)
            fields.update(op=op, key=key)
        else:
            value = f"{self.name}.{self.seq}"
            expected = self._guess(key)
            op, cmd = "cas", kv.encode_cas(key, expected, value)
            fields.update(op=op, key=key, expected=expected, value=value)
        via_read_index = op == "get" and self.rng.random() < wl.read_index
        self.op = {
            "seq": self.seq,
            "op": op,
            "key": key,
            "cmd": cmd,
            "ri": via_read_index,
            "accepted": False,
        }
        self.sim.tracer.emit(self.name, "kv.call", fields)
        self.sim.after(wl.op_timeout, self._deadline, self.seq)
        self.first_attempt = self.attempt + 1
        self._send()

    def _guess(self, key: str) -> str | None:
        """A plausible expected value for cas: the last value this client saw, or absent."""
        return self.wl.last_seen.get(key)

    def _finish(self, outcome: str, result: Any = None) -> None:
        op = self.op
        assert op is not None
        self.op = None
        self.attempt += 1
        fields: dict[str, Any] = {"client": self.name, "outcome": outcome}
        if outcome == "ok":
            fields["result"] = result
            self.ok += 1
            if op["op"] == "get" and isinstance(result, str):
                self.wl.last_seen[op["key"]] = result
        elif outcome == "fail":
            self.failed += 1
        else:
            self.unknown += 1
        self.sim.tracer.emit(self.name, "kv.return", fields)
        self.sim.after(self.rng.expovariate(self.wl.op_rate), self._next)

    def _deadline(self, seq: int) -> None:
        if self.op is not None and self.op["seq"] == seq:
            # Never accepted by any node: certainly not applied.
            self._finish("unknown" if self.op["accepted"] else "fail")

    # -- one attempt -----------------------------------------------------------------

    def _target(self) -> str:
        names = self.wl.names
        if self.wl.client_routing == "any" and self.attempt == self.first_attempt:
            return names[self.rng.randrange(len(names))]  # a new operation: any node
        if self.leader in names:
            return self.leader  # type: ignore[return-value]
        return names[self.rng.randrange(len(names))]

    def _latency(self) -> float:
        return self.wl.client_latency * (1.0 + self.rng.random())

    def _send(self) -> None:
        self.attempt += 1
        attempt = self.attempt
        target = self._target()
        self.sim.after(self._latency(), self._deliver, target, attempt)
        self.sim.after(self.wl.attempt_timeout, self._attempt_timeout, attempt)

    def _attempt_timeout(self, attempt: int) -> None:
        op = self.op
        if op is None or attempt != self.attempt or op["accepted"]:
            return
        self.leader = None  # try someone else
        self._send()

    def _reply(self, attempt: int, fn: Any, *args: Any) -> None:
        def arrive() -> None:
            if self.op is not None and attempt == self.attempt:
                fn(*args)

        self.sim.after(self._latency(), arrive)

    def _deliver(self, target: str, attempt: int) -> None:
        op = self.op
        if op is None or attempt != self.attempt:
            return
        sim = self.sim
        host = sim.hosts[target]
        app: RaftApp | None = sim.app(target)
        if app is None or host.paused or not app.driver.running:
            return  # lost; the attempt timeout retries
        if op["ri"]:
            self._read_index(app, target, attempt)
            return
        cmd = op["cmd"]
        where: list[tuple[int, int]] = []

        def placed(index: int, term: int) -> None:
            where.append((index, term))
            op["accepted"] = True

        def applied(result: Any, error: BaseException | None) -> None:
            if error is None:
                if op["op"] != "get":
                    self.wl.acked.append(where[0])
                self._reply(attempt, self._finish, "ok", result)
            else:  # overwritten at that index: it can never commit
                self._reply(attempt, self._finish, "fail", None)

        try:
            app.server.propose(cmd, applied, placed)
        except NotLeader as exc:
            self._reply(attempt, self._redirect, target, exc.leader_id)
        except RaftError as exc:
            self._reply(attempt, self._finish, "fail", None)
            self.wl.refusals.append(f"{target}: {exc}")

    def _read_index(self, app: RaftApp, target: str, attempt: int) -> None:
        op = self.op
        assert op is not None
        self.wl.read_ctx += 1
        ctx = self.wl.read_ctx
        key = op["key"]

        def done(_index: Any, error: BaseException | None) -> None:
            if error is None:
                self._reply(attempt, self._finish, "ok", app.kv.get(key))
            else:
                self._reply(attempt, self._redirect, target, None)

        try:
            app.server.read_index(ctx, done)
        except NotLeader as exc:
            self._reply(attempt, self._redirect, target, exc.leader_id)
        except RaftError:
            self._reply(attempt, self._redirect, target, None)

    def _redirect(self, target: str, leader: str | None) -> None:
        self.leader = leader if leader != target else None
        delay = 0.0 if self.leader is not None else self.wl.retry_backoff
        attempt = self.attempt

        def again() -> None:
            if self.op is not None and attempt == self.attempt:
                self._send()

        self.sim.after(delay, again)


class RaftWorkload:
    """``--protocol raft``: see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.nodes: int = args.nodes
        self.duration: float = getattr(args, "duration", 60.0)
        self.clients: int = getattr(args, "clients", None) or 3
        self.keys: int = getattr(args, "keys", None) or 4
        self.op_rate: float = getattr(args, "op_rate", None) or 10.0
        read_index = getattr(args, "read_index", None)
        self.read_index: float = 0.5 if read_index is None else float(read_index)
        self.check_every: float = getattr(args, "check_every", None) or 0.5
        self.op_timeout: float = getattr(args, "op_timeout", None) or 3.0
        self.attempt_timeout = 0.3
        self.retry_backoff = 0.05
        self.client_latency = 0.0005
        self.stop_at = self.duration - self.op_timeout
        self.client_routing: str = getattr(args, "client_routing", None) or "leader"
        election = getattr(args, "election_timeout", None) or 1.0
        batch = getattr(args, "max_entries_per_msg", None) or 512  # RaftConfig default
        # As the SQLite raft-node runs: the leader syncs its own entries after sending
        # them (10.2.1); the simulated disk loses un-synced writes at a crash.
        self.config = RaftConfig(
            election_timeout=election, heartbeat_interval=election / 10, parallel_leader_write=True,
            max_entries_per_msg=batch, pre_vote=getattr(args, "pre_vote", None) != "off",
            mutants=getattr(args, "mutants", frozenset()),  # planted bugs (simulate --mutant)
        )
        self.names: list[str] = [f"n{i}" for i in range(1, self.nodes + 1)]
        self.addresses = {n: f"{n}:{PORT}" for n in self.names}
        self.history = HistoryBuilder()
        self.checker = SafetyChecker(self.names, self._read_log, apply_committed=True)
        self.sim: Simulation | None = None
        self.client_list: list[SimClient] = []
        self.last_seen: dict[str, str] = {}
        self.read_ctx = 0
        self.refusals: list[str] = []
        #: (index, term) of every write a node applied for a client (acknowledged
        #: once the reply arrives; a superset of what clients saw as ok)
        self.acked: list[tuple[int, int]] = []

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--clients", type=int, help="simulated KV clients (raft, default 3)")
        parser.add_argument("--keys", type=int, help="distinct keys (raft, default 4)")
        parser.add_argument(
            "--op-rate", type=float, help="mean operations/s per client, between ops (raft, 10)"
        )
        parser.add_argument(
            "--read-index", type=float, help="share of gets served by ReadIndex (raft, 0.5)"
        )
        parser.add_argument(
            "--election-timeout", type=float, help="Raft election timeout T in s (raft, 1.0)"
        )
        parser.add_argument(
            "--op-timeout", type=float, help="client gives up (unknown) after s (raft, 3.0)"
        )
        parser.add_argument(
            "--check-every", type=float, help="log safety check period in s (raft, 0.5)"
        )
        parser.add_argument(
            "--client-routing", choices=("leader", "any"),
            help="where a client sends a new operation (raft): 'leader' (default) the node "
            "it believes leads; 'any' a random node (a client behind a load balancer), "
            "following redirects from there",
        )
        parser.add_argument(
            "--pre-vote", choices=("on", "off"),
            help="Raft Pre-Vote (dissertation 9.6; raft, default on; off as etcd's "
            "PreVote=false)",
        )
        parser.add_argument(
            "--max-entries-per-msg", type=int, metavar="N",
            help="Raft batching limit: entries per AppendEntries (raft, default 512)",
        )

    def fault_targets(self, sim: Simulation) -> list[str]:
        return list(self.names)

    def primary(self) -> str | None:
        """The live node that leads the highest term, if any (the nemesis's
        ``--nemesis-focus`` target)."""
        sim = self.sim
        if sim is None:
            return None
        best: tuple[int, str] | None = None
        for n in self.names:
            app = sim.app(n)
            if app is not None and app.core.role == Role.LEADER \
                    and (best is None or app.core.term > best[0]):
                best = (app.core.term, n)
        return best[1] if best else None

    def _read_log(self, name: str) -> CoreLogView | None:
        assert self.sim is not None
        app = self.sim.app(name)
        return CoreLogView(app.core) if app is not None else None

    def factory(self, host: SimHost) -> RaftApp:
        store = SimStorage(host.disk)
        sm = kv.KVStore()
        # A simulated client waits for its entry's fate (applied or overwritten)
        # rather than giving up when the leader steps down: a fuller history.
        server = RaftServer(
            host, storage=store, state_machine=sm, rng=host.rng, config=self.config,
            bootstrap=self.addresses, port=PORT_NAME, fail_on_step_down=False,
            persister=SimPersister.for_host(host, store),
        )
        return RaftApp(server, store, sm)

    def setup(self, sim: Simulation) -> None:
        self.sim = sim
        sim.tracer.listeners.append(self.checker)
        sim.tracer.listeners.append(self.history)
        for n in self.names:
            sim.add_node(n, self.factory)
        for i in range(1, self.clients + 1):
            c = SimClient(self, sim, f"c{i}")
            self.client_list.append(c)
            c.start(0.5 + 0.1 * i)
        self._schedule_check(sim)

    def live_violations(self) -> list[str]:
        """What the in-run checkers found so far (``simulate --stop-at-violation``)."""
        return list(self.checker.violations)

    def _schedule_check(self, sim: Simulation) -> None:
        def check() -> None:
            self.checker.check_logs(sim.now)
            sim.after(self.check_every, check)

        sim.at(self.check_every, check)

    def check(self) -> dict[str, Any]:
        """Run the final checks; returns the summary (as ``finish``)."""
        assert self.sim is not None
        self.checker.check_logs(self.sim.now)
        lin = check_history(self.history.history())
        violations = list(self.checker.violations)
        violations += [f"linearizability: {p}" for p in lin.problems]
        violations += [f"history: {e}" for e in self.history.errors]
        ops = {"ok": 0, "fail": 0, "unknown": 0}
        for c in self.client_list:
            ops["ok"] += c.ok
            ops["fail"] += c.failed
            ops["unknown"] += c.unknown
        return {
            "ops": ops,
            "leader_elections": self.checker.elections,
            "terms": max(self.checker.leaders, default=0),
            "safety": self.checker.summary(),
            "linearizable": lin.ok,
            "linearizability_keys": lin.keys,
            "linearizability_undecided_keys": lin.undecided_keys,
            "violations": violations,
        }

    def finish(self, sim: Simulation) -> dict[str, Any]:
        return self.check()

    # -- helpers for tests: liveness and durability after healing ----------------------

    def leader(self) -> str | None:
        """The leader, if exactly one live, unpaused node leads the highest term and
        a majority of the voters follow it; else None."""
        assert self.sim is not None
        sim = self.sim
        live = [n for n in self.names if sim.app(n) is not None and not sim.hosts[n].paused]
        leaders = [n for n in live if sim.app(n).core.role == Role.LEADER]
        if not leaders:
            return None
        top = max(leaders, key=lambda n: sim.app(n).core.term)
        term = sim.app(top).core.term
        followers = [
            n for n in live if sim.app(n).core.leader_id == top and sim.app(n).core.term == term
        ]
        voters = sim.app(top).core.configuration.voters
        return top if len(followers) > len(voters) // 2 else None

    def lost_acknowledged(self, leader: str) -> list[tuple[int, int]]:
        """Acknowledged writes ``(index, term)`` missing from ``leader``'s log (an
        entry compacted into its snapshot counts as present)."""
        assert self.sim is not None
        log = self.sim.app(leader).core.log
        return [(i, t) for i, t in self.acked if i > log.base_index and log.term_at(i) != t]

    def final_reads(self, leader: str) -> list[Any]:
        """Reads of every key from ``leader``'s state machine, as history operations
        at the current instant (call once the leader has applied its commit index)."""
        from clusterfunk.sim.checkers.linearizability import Op

        assert self.sim is not None
        app = self.sim.app(leader)
        now = self.sim.now
        return [
            Op("final", "get", f"k{i}", now, now, result=app.kv.get(f"k{i}"))
            for i in range(self.keys)
        ]

    def heal_and_check(self, timeouts: int = 10) -> list[str]:
        """Heal every fault, then check liveness and durability; returns problems.

        Within ``timeouts`` election timeouts a leader that a majority follows must
        exist and commit an entry of its term; every acknowledged write must be in
        its log; the clients' history plus a final read of every key must be
        linearizable; the safety checker must stay clean.
        """
        from clusterfunk.sim.netmodel import LinkConfig

        sim = self.sim
        assert sim is not None
        sim.heal()
        sim.set_default_link(LinkConfig())
        for n in sim.names:
            if not sim.alive(n):
                sim.restart(n)
            sim.resume(n)
            sim.set_skew(n, 0.0, 0.0)
        T = self.config.election_timeout
        sim.run_until(sim.now + timeouts * T, stop=lambda: self.leader() is not None)
        leader = self.leader()
        if leader is None:
            return [f"liveness: no leader within {timeouts} election timeouts after healing"]

        def settled() -> bool:
            app = sim.app(leader)
            if app is None:
                return True
            c = app.core
            return c.last_applied == c.commit_index and c.log.term_at(c.commit_index) == c.term

        sim.run_for(timeouts * T, stop=settled)
        app = sim.app(leader)
        problems: list[str] = []
        if app is None or app.core.role != Role.LEADER:
            return [f"liveness: {leader} lost leadership while settling"]
        c = app.core
        if c.log.term_at(c.commit_index) != c.term:
            problems.append(f"liveness: {leader} committed nothing of term {c.term}")
        self.checker.check_logs(sim.now)
        problems += self.checker.violations
        lost = self.lost_acknowledged(leader)
        if lost:
            problems.append(f"durability: acknowledged writes missing on {leader}: {lost[:5]}")
        lin = check_history(self.history.history() + self.final_reads(leader))
        problems += [f"linearizability: {p}" for p in lin.problems]
        return problems
