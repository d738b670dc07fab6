"""``clusterfunk raft-node``: one Raft KV server as an OS process.

::

    clusterfunk raft-node --id n1 --bind 127.0.0.1:9001 \\
        --peers n1=127.0.0.1:9001,n2=127.0.0.1:9002,n3=127.0.0.1:9003 \\
        --data-dir /var/lib/cf/n1 --store sqlite --client-bind 127.0.0.1:9101

Raft traffic uses ``--bind`` (UDP + TCP, the shared transport); clients speak the
protocol of :mod:`clusterfunk.raft.client` on ``--client-bind`` (default: the Raft
port + 100 on the same host). Once both are listening the process prints one JSON
line to stdout: ``{"ready": true, "id", "raft", "client"}``. SIGTERM or SIGINT stop
it cleanly; SIGKILL is what the crash test uses: with ``--store sqlite`` (WAL,
synchronous=FULL) everything acknowledged survives it.

Bad client input (a bad frame length, undecodable bytes) closes that client's
connection and is counted; it never touches the node.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
from typing import Any

import trio

from clusterfunk.raft import kv
from clusterfunk.raft.api import RaftNode
from clusterfunk.raft.kv_server import BatchingStateMachine, ClientServer, parse_peers


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "raft-node",
        help="run one Raft KV server process",
        description="Run one Raft server with the replicated KV store.",
    )
    p.add_argument("--id", required=True, help="this server's id (e.g. n1)")
    p.add_argument("--bind", required=True, help="Raft address host:port (UDP + TCP)")
    p.add_argument("--advertise", help="address peers reach us at (default: --bind)")
    p.add_argument("--peers", required=True, help="initial voters: ID=HOST:PORT,... (incl. self)")
    p.add_argument("--data-dir", required=True, help="directory for the SQLite database")
    p.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    p.add_argument("--client-bind", help="client protocol host:port (default: Raft port + 100)")
    p.add_argument("--client-port", type=int, help="client protocol port on the --bind host")
    p.add_argument("--election-timeout", type=float, default=1.0, help="T in seconds (1.0)")
    p.add_argument("--heartbeat", type=float, default=None, help="seconds (default T/10)")
    p.add_argument("--trace", help="write the JSON Lines trace here")
    p.add_argument("--tls-dir", help="certificate directory (clusterfunk certs): mutual TLS on "
                   "the Raft and client ports with ca.pem and <id>.pem / <id>-key.pem")
    p.add_argument("--insecure", action="store_true",
                   help="run without TLS (the ports are open to anyone who can reach them)")
    p.add_argument(
        "--no-batch",
        dest="batch",
        action="store_false",
        help="one log entry per client command (default: the write requests read from a "
        "connection at once share one entry)",
    )
    p.set_defaults(func=handler, batch=True)


def handler(args: argparse.Namespace) -> int:
    try:
        peers = parse_peers(args.peers)
    except ValueError as exc:
        print(f"clusterfunk raft-node: error: {exc}", file=sys.stderr)
        return 2
    if bool(args.tls_dir) == bool(args.insecure):
        print("clusterfunk raft-node: error: " + (
            "--tls-dir and --insecure exclude each other" if args.tls_dir else
            "no TLS configured: give --tls-dir DIR (clusterfunk certs makes one) or run "
            "without TLS with --insecure"), file=sys.stderr)
        return 2
    tls = None
    if args.tls_dir:
        from clusterfunk.runtime.tls import TLSError, load_tls_dir

        try:
            tls = load_tls_dir(args.tls_dir, args.id)
        except (TLSError, OSError) as exc:
            print(f"clusterfunk raft-node: error: --tls-dir {args.tls_dir}: {exc}",
                  file=sys.stderr)
            return 2
    else:
        print("clusterfunk raft-node: warning: running WITHOUT TLS (--insecure): anyone who "
              "can reach the Raft and client ports can talk to them", file=sys.stderr,
              flush=True)
    args.tls = tls
    if args.id not in peers:
        print(f"clusterfunk raft-node: error: --peers must include {args.id}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args, peers)
    return 0


def _storage(args: argparse.Namespace) -> Any:
    if args.store == "memory":
        from clusterfunk.raft.storage import MemoryStorage

        return MemoryStorage()
    from clusterfunk.raft.sqlite_store import SQLiteStorage

    os.makedirs(args.data_dir, exist_ok=True)
    return SQLiteStorage(os.path.join(args.data_dir, f"raft-{args.id}.db"))


def _client_bind(args: argparse.Namespace) -> tuple[str, int]:
    if args.client_bind:
        host, _, port = args.client_bind.rpartition(":")
        return host, int(port)
    host, _, port = args.bind.rpartition(":")
    if getattr(args, "client_port", None) is not None:
        return host, args.client_port
    return host, int(port) + 100


async def serve(args: argparse.Namespace, peers: dict[str, str]) -> None:
    from clusterfunk.raft.config import RaftConfig
    from clusterfunk.trace import Tracer

    hb = args.heartbeat or args.election_timeout / 10
    # A durable store: the leader syncs its own new entries in parallel with sending
    # them (dissertation 10.2.1), one fsync less on a commit's critical path.
    config = RaftConfig(
        election_timeout=args.election_timeout,
        heartbeat_interval=hb,
        parallel_leader_write=args.store == "sqlite",
    )
    # Line-buffered: the audit trail must survive a SIGKILL up to the last event.
    trace_file = open(args.trace, "a", encoding="utf-8", buffering=1) if args.trace else None  # noqa: SIM115
    tracer = None
    if trace_file is not None:
        import time

        tracer = Tracer(time.time, trace_file)
    try:
        async with RaftNode(
            args.id,
            args.bind,
            peers=peers,
            storage=_storage(args),
            state_machine=BatchingStateMachine(kv.KVStore()),
            config=config,
            advertise=args.advertise,
            tracer=tracer,
            rng=random.Random(),
            tls=args.tls,
        ) as node:
            host, port = _client_bind(args)
            listeners: list[Any] = list(await trio.open_tcp_listeners(port, host=host))
            caddr = listeners[0].socket.getsockname()
            if args.tls is not None:  # the client port needs a client certificate too
                listeners = [trio.SSLListener(lst, args.tls.server_context) for lst in listeners]
            server = ClientServer(node, batch=args.batch)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, server.handle, listeners)
                print(
                    json.dumps(
                        {
                            "ready": True,
                            "id": args.id,
                            "raft": node.address,
                            "client": f"{caddr[0]}:{caddr[1]}",
                        }
                    ),
                    flush=True,
                )
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for _sig in sigs:
                        break
                nursery.cancel_scope.cancel()
    finally:
        if trace_file is not None:
            trace_file.close()
