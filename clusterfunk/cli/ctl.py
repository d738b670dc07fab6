"""``clusterfunk ctl``: inspect and operate a running cluster through a node's
management API (docs/operations.md).

::

    clusterfunk ctl --node 127.0.0.1:8500 status
    clusterfunk ctl nodes --json                       # node from CLUSTERFUNK_NODE
    CLUSTERFUNK_TOKEN=... clusterfunk ctl step-down    # writes need the token

The node is ``--node HOST:PORT``, else ``$CLUSTERFUNK_NODE``, else (with
``--discover``) one announced by zeroconf/mDNS, else ``127.0.0.1:8500``.
Tables on a terminal (rich), ``--json`` for scripts. Exit status: 0 done; 1 the node
answered with an error (the message is printed); 2 usage error or no node answers.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import textwrap
from collections.abc import Callable
from typing import Any

DEFAULT_NODE = "127.0.0.1:8500"
ENV_NODE = "CLUSTERFUNK_NODE"
ENV_TOKEN = "CLUSTERFUNK_TOKEN"
DISCOVER_WAIT = 3.0


class CtlError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- the commands ------------------------------------------------------------------

#: command -> (help, HTTP method, path)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "status": ("this node: state, role, leader, term, indexes, map nodes", "GET", "/v1/status"),
    "nodes": ("nodes of the committed shard map with worker ids, shards and weights",
              "GET", "/v1/nodes"),
    "members": ("the gossip member list: status, incarnation, RTT estimate, tags",
                "GET", "/v1/members"),
    "endpoints": ("endpoints published by live members (ep.* tags)", "GET", "/v1/endpoints"),
    "shards": ("shard count and share per node", "GET", "/v1/shards"),
    "raft": ("Raft configuration: voters, non-voters, replication progress (on the leader)",
             "GET", "/v1/raft"),
    "diag": ("consistency report: gossip view vs Raft configuration vs committed map",
             "GET", "/v1/diag"),
    "step-down": ("make the Raft leader hand leadership to another voter (write)",
                  "POST", "/v1/step-down"),
    "remove": ("remove node ID from Raft and from the shard map (write)", "POST", "/v1/remove"),
    "voters": ("set the target number of Raft voters to N (write)", "POST", "/v1/voters"),
}


#: command -> the rest of its --help description (after the one-line summary)
DETAILS: dict[str, str] = {
    "status": "Fields: node, state, role, leader, term, commit_index, applied_index, "
    "map_index (Raft index of the committed shard map), created (cluster creation time), "
    "uptime, version, nodes (the committed map's nodes); join_error while the node "
    "cannot join.",
    "nodes": "One row per node of the committed map: node, worker id, shards, weight and "
    "share of the total weight. --json: a list of {node, worker_id, shards, weight, share}.",
    "members": "Every member this node's gossip knows, dead and left ones included: "
    "address, status (alive, suspect, dead, left), incarnation, Vivaldi RTT estimate "
    "from this node, and its tags.",
    "endpoints": "The ep.NAME tags of live (alive or suspect) members: every node "
    "publishes raft, serf, clusterfunk.coord and clusterfunk.management (its management "
    "API); applications add their own.",
    "shards": "The committed map: shard count, total weight, map index, and per node its "
    "shard count, weight and share.",
    "raft": "This node's Raft view: role, term, leader, commit and applied index, the "
    "voters and non-voters with their Raft addresses; on the leader the match and next "
    "index and replication state of each follower.",
    "diag": "Compares this node's gossip view, Raft configuration and committed map; lists "
    "each difference as a problem (Raft members not alive, live members not in Raft, "
    "quarantined or unresponsive nodes, ...) and the last reshard with why. Exit status 0 "
    "even with problems: read 'ok' in --json.",
    "step-down": "The leader transfers leadership to the most up-to-date voter and answers "
    "with the new leader; the new leader recommits the shard map. Any node will do: the "
    "write is forwarded to the leader. Needs the token or a client certificate.",
    "remove": "For a dead or killed node: the leader removes ID from the Raft "
    "configuration and the shard map at once, and keeps it out while gossip still "
    "reports it alive. The leader itself cannot be removed (step-down first). Any node "
    "will do: the write is forwarded to the leader. Needs the token or a client "
    "certificate.",
    "voters": "The leader promotes caught-up non-voters or demotes voters, one at a time, "
    "until N members vote (or all, if fewer). The target is stored in the Raft log, so "
    "every later leader keeps it (it overrides cluster-node --voters). Any node will do: "
    "the write is forwarded to the leader. Needs the token or a client certificate.",
}

EXAMPLES = """examples:
  clusterfunk ctl --node 10.0.0.5:8500 status
  clusterfunk ctl nodes --json                 # node from $CLUSTERFUNK_NODE
  clusterfunk ctl endpoints --name clusterfunk.management
  CLUSTERFUNK_TOKEN=... clusterfunk ctl remove c
  clusterfunk ctl --tls-dir certs/ voters 5    # mutual TLS instead of a token
"""


def add_parser(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    # defaults are SUPPRESS here so that an option given before the command is not
    # overwritten by the subcommand's default (both spellings work)
    common.add_argument("--node", metavar="HOST:PORT", default=argparse.SUPPRESS,
                        help=f"management address of a node (default: ${ENV_NODE}, "
                        f"else {DEFAULT_NODE})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON (for scripts) instead of tables")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help=f"bearer token for writes (default: ${ENV_TOKEN})")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for the answer (default 10; 35 for writes)")
    common.add_argument("--discover", action="store_true", default=argparse.SUPPRESS,
                        help="without --node or $CLUSTERFUNK_NODE: find a node announced by "
                        "zeroconf/mDNS on the LAN (cluster-node --mdns)")
    common.add_argument("--mdns-interface", metavar="IP", default=argparse.SUPPRESS,
                        help="IPv4 address of the interface --discover uses (default: all)")
    common.add_argument("--tls-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="use HTTPS with DIR/ca.pem and the client certificate "
                        "DIR/client.pem, DIR/client-key.pem")
    p = subparsers.add_parser(
        "ctl", parents=[common],
        help="inspect and operate a running cluster (management API client)",
        description=textwrap.fill(
            "Inspect and operate a running cluster through one node's management "
        f"API. The node is --node, else ${ENV_NODE}, else one found by --discover "
        f"(mDNS), else {DEFAULT_NODE}. Writes "
        f"(step-down, remove, voters) need the token (--token or ${ENV_TOKEN}) or a TLS "
        "client certificate, and are forwarded to the leader by the node. Exit status: 0 "
        "done, 1 the node answered with an error, 2 usage error or no node answers.", 79),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    for name, (doc, _method, _path) in COMMANDS.items():
        sp = sub.add_parser(name, parents=[common], help=doc,
                            description=doc[0].upper() + doc[1:] + ". " + DETAILS[name])
        if name == "endpoints":
            sp.add_argument("--name", help="only endpoints with this name (e.g. web)")
        elif name == "remove":
            sp.add_argument("id", metavar="ID", help="node id to remove")
        elif name == "voters":
            sp.add_argument("n", metavar="N", type=int, help="target number of voters (>= 1)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except CtlError as exc:
        print(f"clusterfunk ctl: error: {exc}", file=sys.stderr)
        return exc.code


def _ssl_context(tls_dir: str) -> ssl.SSLContext:
    files = {n: os.path.join(tls_dir, n) for n in ("ca.pem", "client.pem", "client-key.pem")}
    for path in files.values():
        if not os.path.isfile(path):
            raise CtlError(f"--tls-dir: {path} does not exist", 2)
    ctx = ssl.create_default_context(cafile=files["ca.pem"])
    # node certificates name node ids, not hosts: the cluster CA is what is checked
    ctx.check_hostname = False
    ctx.load_cert_chain(files["client.pem"], files["client-key.pem"])
    return ctx


def _discover(interface: str | None) -> str:
    from clusterfunk.management.discovery import browse

    found = browse(DISCOVER_WAIT, [interface] if interface else None)
    if not found:
        raise CtlError(f"no node announced by mDNS within {DISCOVER_WAIT:g} s "
                       "(start nodes with --mdns, or give --node HOST:PORT)", 2)
    return found[0]["management"]


def request(args: argparse.Namespace) -> Any:
    """Send the command's request; return the decoded JSON answer (raises CtlError)."""
    import httpx

    command = args.ctl_command
    _doc, method, path = COMMANDS[command]
    node = getattr(args, "node", None) or os.environ.get(ENV_NODE)
    if not node and getattr(args, "discover", False):
        node = _discover(getattr(args, "mdns_interface", None))
    node = node or DEFAULT_NODE
    tls_dir = getattr(args, "tls_dir", None)
    scheme = "https" if tls_dir else "http"
    verify: ssl.SSLContext | bool = _ssl_context(tls_dir) if tls_dir else False  # http
    timeout = getattr(args, "timeout", None) or (35.0 if method == "POST" else 10.0)
    token = getattr(args, "token", None) or os.environ.get(ENV_TOKEN)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    params: dict[str, str] = {}
    body: dict[str, Any] = {}
    if command == "endpoints" and args.name:
        params["name"] = args.name
    elif command == "remove":
        body = {"node": args.id}
    elif command == "voters":
        body = {"voters": args.n}
    url = f"{scheme}://{node}{path}"
    try:
        with httpx.Client(verify=verify, timeout=timeout) as client:
            if method == "GET":
                r = client.get(url, params=params, headers=headers)
            else:
                r = client.post(url, json=body, headers=headers)
    except httpx.InvalidURL as exc:
        raise CtlError(f"bad node address {node!r}: {exc}", 2) from None
    except httpx.TimeoutException:
        raise CtlError(f"no answer from {node} within {timeout:g} s", 2) from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise CtlError(f"no node answers at {node} ({reason}); give one with --node "
                       f"HOST:PORT or ${ENV_NODE}", 2) from None
    try:
        answer = r.json()
    except ValueError:
        raise CtlError(f"{node} answered {r.status_code} with a body that is not JSON", 1) \
            from None
    if r.status_code >= 400:
        msg = answer.get("error") if isinstance(answer, dict) else None
        raise CtlError(f"{node} answered {r.status_code}: {msg or answer}", 1)
    return answer


def run(args: argparse.Namespace) -> int:
    answer = request(args)
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=False)
    RENDER[args.ctl_command](console, answer, args)
    return 0


# -- tables ------------------------------------------------------------------------


def _table(*columns: str) -> Any:
    from rich.table import Table

    t = Table()
    for c in columns:
        t.add_column(c, justify="right" if c in _NUMERIC else "left")
    return t


_NUMERIC = {"worker id", "shards", "weight", "share", "incarnation", "RTT ms", "match", "next"}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _status(console: Any, st: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"node {st.get('node')}")
    t = _table("field", "value")
    for key in ("node", "state", "role", "leader", "term", "commit_index", "applied_index",
                "map_index", "created", "uptime", "version"):
        v = st.get(key)
        if key == "uptime" and isinstance(v, float):
            v = f"{v:.1f} s"
        t.add_row(key, "-" if v is None else str(v))
    t.add_row("nodes", f"{len(st.get('nodes', []))}: " + ", ".join(st.get("nodes", [])))
    if st.get("join_error"):
        t.add_row("join", str(st["join_error"]))
    console.print(t)


def _nodes(console: Any, nodes: list[dict[str, Any]], args: argparse.Namespace) -> None:
    console.print(f"{len(nodes)} nodes in the committed map")
    t = _table("node", "worker id", "shards", "weight", "share")
    for n in nodes:
        t.add_row(n["node"], str(n["worker_id"]), str(n["shards"]), f"{n['weight']:g}",
                  _pct(n["share"]))
    console.print(t)


def _members(console: Any, members: list[dict[str, Any]], args: argparse.Namespace) -> None:
    console.print(f"{len(members)} gossip members")
    t = _table("node", "address", "status", "incarnation", "RTT ms", "tags")
    for m in members:
        rtt = "-" if m.get("rtt") is None else f"{1000 * m['rtt']:.2f}"
        tags = " ".join(f"{k}={v}" for k, v in sorted(m.get("tags", {}).items()))
        t.add_row(m["node"], m["address"], m["status"], str(m["incarnation"]), rtt, tags)
    console.print(t)


def _endpoints(console: Any, eps: list[dict[str, Any]], args: argparse.Namespace) -> None:
    console.print(f"{len(eps)} endpoints")
    t = _table("node", "name", "address")
    for e in eps:
        t.add_row(e["node"], e["name"], e["address"])
    console.print(t)


def _shards(console: Any, sh: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"{sh['shards']} shards, total weight {sh['total_weight']:g}, "
                  f"map index {sh['map_index']}")
    t = _table("node", "shards", "weight", "share")
    for n in sh["nodes"]:
        t.add_row(n["node"], str(n["shards"]), f"{n['weight']:g}", _pct(n["share"]))
    console.print(t)


def _raft(console: Any, r: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"node {r['node']}: {r['role']}, term {r['term']}, leader "
                  f"{r['leader'] or '-'}, commit {r['commit_index']}, applied "
                  f"{r['applied_index']}")
    progress = {p["node"]: p for p in r.get("progress", [])}
    t = _table("server", "suffrage", "address", "match", "next", "replication")
    for kind, servers in (("voter", r["voters"]), ("nonvoter", r["nonvoters"])):
        for sid, addr in servers.items():
            p = progress.get(sid)
            label = f"{kind} (leader)" if sid == r["leader"] else kind
            t.add_row(sid, label, addr, str(p["match"]) if p else "-",
                      str(p["next"]) if p else "-", p["state"] if p else "-")
    console.print(t)


def _diag(console: Any, d: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"node {d['node']}: " + ("consistent" if d["ok"] else
                                           f"{len(d['problems'])} problem(s)"))
    for line in d["problems"]:
        console.print(f"  - {line}")
    last = d.get("last_reshard")
    if last:
        console.print(f"last reshard: map index {last['index']} (term {last['term']}, "
                      f"leader {last['leader']}), {len(last['nodes'])} nodes, "
                      f"{last['moved']} shards moved"
                      + (f"; why: {last['why']}" if last.get("why") else ""))
    else:
        console.print("last reshard: none (no committed map yet)")


def _step_down(console: Any, a: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"{a['node']} stepped down; leader now {a.get('leader') or 'unknown yet'}")


def _remove(console: Any, a: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"removed {a['removed']} (by leader {a['node']})")


def _voters(console: Any, a: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"target voters set to {a['voters']} (by leader {a['node']})")


RENDER: dict[str, Callable[[Any, Any, argparse.Namespace], None]] = {
    "status": _status, "nodes": _nodes, "members": _members, "endpoints": _endpoints,
    "shards": _shards, "raft": _raft, "diag": _diag, "step-down": _step_down,
    "remove": _remove, "voters": _voters,
}
