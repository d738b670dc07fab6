"""``clusterfunk cluster-node``: run one cluster node as a process.

::

    clusterfunk cluster-node --id a --data-dir /var/lib/cf/a              # bootstraps
    clusterfunk cluster-node --id b --data-dir /var/lib/cf/b --gossip-port 7947 \\
        --raft-port 8301 --coord-port 8401 --management-port 8501 --join 127.0.0.1:7946
    clusterfunk cluster-node --config node.toml --print-config

Prints one JSON line per (state, role) change on stdout (``{"t", "node", "state",
"role", "leader", "nodes", "management"}``; ``management`` is the bound ``HOST:PORT``
of the management API) until interrupted (Ctrl-C or SIGTERM leave gracefully). Logs go
to stderr through :mod:`logging` (``--log-format human|json``, ``--log-level``).

Configuration (docs/operations.md): every option can come from a TOML file
(``--config FILE`` or ``$CLUSTERFUNK_CONFIG``; keys are the long option names with
``_`` for ``-``), from ``CLUSTERFUNK_<KEY>`` environment variables, or from flags.
Flags win over the environment, which wins over the file, which wins over defaults.
``--print-config`` prints the effective configuration as TOML and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
import tomllib
from functools import partial
from typing import Any

import attrs
import trio

log = logging.getLogger("clusterfunk.node")

ENV_PREFIX = "CLUSTERFUNK_"
LOG_FORMATS = ("human", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
APPS = ("none", "demo")
FORWARD_MODES = ("moved", "forward")


# -- the configuration schema --------------------------------------------------------


@attrs.frozen
class Option:
    """One configuration key: TOML key ``name``, flag ``--name-with-dashes``,
    environment variable ``env`` (default ``CLUSTERFUNK_<NAME>``)."""

    name: str
    kind: str  # str | int | bool | list | dict | choice
    default: Any
    help: str
    env: str = ""
    choices: tuple[str, ...] = ()
    secret: bool = False
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("id", "str", None, "this node's id (required)"),
    Option("bind_host", "str", "127.0.0.1", "address to bind"),
    Option("advertise_host", "str", None, "address others reach us at (default: bind host)"),
    Option("join", "list", [], "gossip seed to join through: an address, a DNS name "
           "(resolved to all its addresses), srv:NAME (DNS SRV records) or 'mdns' "
           "(zeroconf on the LAN) (repeatable; env: comma-separated); none: bootstrap",
           metavar="HOST:PORT"),
    Option("data_dir", "str", None, "directory for the Raft SQLite database (required "
           "unless --in-memory)"),
    Option("in_memory", "bool", False, "keep the Raft log in memory only (tests, demos): "
           "a restarted node must rejoin under a new id"),
    Option("shards", "int", 10_000, "number of shards"),
    Option("voters", "int", 3, "target Raft voters"),
    Option("gossip_port", "int", 7946, "gossip port (UDP + TCP; 0 = a free port)"),
    Option("raft_port", "int", 8300, "Raft port (0 = a free port)"),
    Option("coord_port", "int", 8400, "coordination port (0 = a free port)"),
    Option("management_port", "int", 8500, "management API port (HTTP; 0 = a free port)"),
    Option("management_host", "str", None, "address the management API binds "
           "(default: bind host)"),
    Option("management_token", "str", None, "bearer token that management writes need "
           "(none: writes refused unless TLS client certificates are verified)",
           env="CLUSTERFUNK_TOKEN", secret=True),
    Option("endpoint", "dict", {}, "publish a user endpoint (repeatable; TOML: an "
           "[endpoint] table; env: comma-separated)", metavar="NAME=HOST:PORT"),
    Option("dns_server", "str", None, "DNS server for srv: seeds, HOST:PORT (default: "
           "the system's resolvers)", metavar="HOST:PORT"),
    Option("mdns", "bool", False, "announce this node by zeroconf/mDNS on the LAN "
           "(service _clusterfunk._tcp; --join mdns finds seeds that way)"),
    Option("mdns_interface", "str", None, "IPv4 address of the interface mDNS uses "
           "(default: every interface)"),
    Option("trace", "str", None, "write the JSON Lines trace here"),
    Option("log_format", "choice", "human", "log format on stderr", choices=LOG_FORMATS),
    Option("log_level", "choice", "info", "log level", choices=LOG_LEVELS),
    Option("tls_dir", "str", None, "certificate directory (clusterfunk certs): ca.pem and "
           "<id>.pem / <id>-key.pem; mutual TLS on the Raft, coordination and management "
           "ports (SIGHUP reloads the certificates)"),
    Option("insecure", "bool", False, "run without TLS (every stream port is open to anyone "
           "who can reach it): explicitly"),
    Option("keyring_file", "str", None, "gossip keyring: a file with one base64 key per line "
           "(the first is primary); every gossip packet is sealed with it"),
    Option("app", "choice", "none", "application serving this node's shards on the request "
           "port: demo = the sharded counter service (clusterfunk.demo.kv)", choices=APPS),
    Option("app_port", "int", 8600, "request port of --app (routing clients and other nodes; "
           "0 = a free port)"),
    Option("forward", "choice", "moved", "a request for a shard served elsewhere: answer "
           "'moved' (the client retries at the owner) or 'forward' it to the owner",
           choices=FORWARD_MODES),
)
BY_NAME = {o.name: o for o in OPTIONS}


class ConfigError(ValueError):
    """A bad configuration value; the message is one line for the user."""


def _parse_pairs(items: list[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, addr = item.partition("=")
        if not sep or not name.strip() or not addr.strip():
            raise ConfigError(f"{where} takes NAME=HOST:PORT, not {item!r}")
        out[name.strip()] = addr.strip()
    return out


def _check(opt: Option, value: Any, where: str) -> Any:
    """``value`` (from TOML, or already converted) checked against ``opt``'s kind."""
    if value is None:
        return None
    if opt.kind in ("str", "choice"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {opt.name} must be a string, not {value!r}")
        if opt.kind == "choice" and value not in opt.choices:
            raise ConfigError(f"{where}: {opt.name} must be one of {', '.join(opt.choices)}, "
                              f"not {value!r}")
    elif opt.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: {opt.name} must be an integer, not {value!r}")
    elif opt.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {opt.name} must be true or false, not {value!r}")
    elif opt.kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {opt.name} must be a list of strings, not {value!r}")
    elif opt.kind == "dict" and (not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )):
        raise ConfigError(f"{where}: {opt.name} must be a table of strings, not {value!r}")
    return value


def _from_env(opt: Option, raw: str) -> Any:
    where = f"${opt.env_name}"
    if opt.kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, not {raw!r}") from None
    if opt.kind == "bool":
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, not {raw!r}")
    if opt.kind == "list":
        return [s.strip() for s in raw.split(",") if s.strip()]
    if opt.kind == "dict":
        return _parse_pairs([s for s in raw.split(",") if s.strip()], where)
    return _check(opt, raw, where)


def load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        opt = BY_NAME.get(key.replace("-", "_"))
        if opt is None:
            raise ConfigError(f"config file {path}: unknown key {key!r} (known: "
                              f"{', '.join(sorted(BY_NAME))})")
        out[opt.name] = _check(opt, value, f"config file {path}")
    return out


def resolve(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> tuple[
        dict[str, Any], dict[str, str]]:
    """The effective configuration and where each value came from (``default``,
    ``file``, ``env`` or ``flag``). Flags > environment > file > defaults."""
    cfg: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    source = dict.fromkeys(cfg, "default")
    path = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        for k, v in load_file(path).items():
            cfg[k], source[k] = v, "file"
    for o in OPTIONS:
        raw = environ.get(o.env_name)
        if raw is not None and raw != "":
            cfg[o.name], source[o.name] = _from_env(o, raw), "env"
    for o in OPTIONS:
        v = getattr(args, o.name, None)
        if v is None:
            continue
        if o.kind == "dict":
            v = _parse_pairs(v, o.flag)
        cfg[o.name], source[o.name] = v, "flag"
    if not cfg["id"]:
        raise ConfigError("the node id is required: --id, $CLUSTERFUNK_ID or id in the "
                          "config file")
    if cfg["dns_server"]:
        from clusterfunk.runtime.api import split_address

        try:
            host, _port = split_address(cfg["dns_server"])
        except ValueError as exc:
            raise ConfigError(f"dns_server: {exc}") from None
        if not _is_ip(host):
            raise ConfigError(f"dns_server must be an IP address and port, not "
                              f"{cfg['dns_server']!r}")
    if cfg["data_dir"] and cfg["in_memory"]:
        raise ConfigError("--data-dir and --in-memory exclude each other")
    if not cfg["data_dir"] and not cfg["in_memory"]:
        raise ConfigError("a member node needs --data-dir (a voter that restarts with an "
                          "empty log under the same id can break Raft's guarantees); "
                          "--in-memory runs without one, explicitly")
    if cfg["tls_dir"] and cfg["insecure"]:
        raise ConfigError("--tls-dir and --insecure exclude each other")
    if not cfg["tls_dir"] and not cfg["insecure"]:
        raise ConfigError("no TLS configured: give --tls-dir DIR (clusterfunk certs makes one) "
                          "or run without TLS with --insecure")
    for name in ("gossip_port", "raft_port", "coord_port", "management_port"):
        if not 0 <= cfg[name] <= 65535:
            raise ConfigError(f"{name} must be 0..65535, not {cfg[name]}")
    return cfg, source


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def format_config(cfg: dict[str, Any], source: dict[str, str]) -> str:
    """The configuration as TOML (loadable with ``--config``), each line commented with
    its source; a secret is shown as ``"<set>"``; unset values as comments."""
    lines = ["# clusterfunk cluster-node: effective configuration"]
    tables = []
    for o in OPTIONS:
        v, src = cfg[o.name], source[o.name]
        if o.kind == "dict":
            tables.append((o, v, src))
            continue
        if v is None:
            lines.append(f"# {o.name} = (unset)  # {src}")
        elif o.secret:
            lines.append(f'{o.name} = "<set>"  # {src}; not printed')
        else:
            lines.append(f"{o.name} = {_toml_value(v)}  # {src}")
    for o, v, src in tables:
        lines.append(f"\n[{o.name}]  # {src}")
        lines += [f"{json.dumps(k)} = {json.dumps(a)}" for k, a in sorted(v.items())]
    return "\n".join(lines) + "\n"


# -- logging -------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``t`` (Unix seconds), ``level``, ``logger``, ``msg``,
    plus ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"t": round(record.created, 6), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(fmt: str, level: str, stream: Any = None) -> logging.Handler:
    """Route the ``clusterfunk`` loggers to ``stream`` (stderr) in ``fmt``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler


# -- the command ---------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cluster-node",
        help="run one cluster node (gossip + Raft + shard map + management API)",
        description="Run one clusterfunk cluster node; prints state changes as JSON lines "
        "on stdout and serves the management API (docs/operations.md). Every option can "
        "also be set in a TOML file (--config) or a CLUSTERFUNK_<OPTION> environment "
        "variable; flags win over the environment, which wins over the file.",
    )
    p.add_argument("--config", metavar="FILE",
                   help="TOML configuration file (default: $CLUSTERFUNK_CONFIG)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (TOML) and exit")
    for o in OPTIONS:
        env = f"${o.env_name}"
        default = "" if o.default in (None, [], {}) or o.default is False else \
            f"; default {o.default}"
        helptext = f"{o.help} ({env}{default})"
        if o.kind == "list" or o.kind == "dict":
            p.add_argument(o.flag, action="append", default=None, metavar=o.metavar,
                           help=helptext)
        elif o.kind == "int":
            p.add_argument(o.flag, type=int, default=None, help=helptext)
        elif o.kind == "bool":
            p.add_argument(o.flag, action="store_const", const=True, default=None,
                           help=helptext)
        elif o.kind == "choice":
            p.add_argument(o.flag, choices=o.choices, default=None, help=helptext)
        else:
            p.add_argument(o.flag, default=None, help=helptext)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    try:
        cfg, source = resolve(args, os.environ)
    except ConfigError as exc:
        print(f"clusterfunk cluster-node: error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(format_config(cfg, source))
        return 0
    setup_logging(cfg["log_format"], cfg["log_level"])
    if cfg["insecure"]:
        print("clusterfunk cluster-node: warning: running WITHOUT TLS (--insecure): anyone "
              "who can reach the Raft, coordination and management ports can talk to them",
              file=sys.stderr, flush=True)
    interrupted = False
    errors: list[BaseException] = []
    try:
        trio.run(serve, cfg)
    except* KeyboardInterrupt:  # a Ctrl-C before the signal handler is installed
        interrupted = True
    except* StartError as group:
        errors.extend(group.exceptions)
    for err in errors:
        print(f"clusterfunk cluster-node: error: {err}", file=sys.stderr)
    if errors:
        return 2
    return 130 if interrupted else 0


class StartError(Exception):
    """The node cannot start (a port in use, ...): one line for the user."""


def _load_tls(cfg: dict[str, Any]) -> Any:
    """The node's :class:`~clusterfunk.runtime.tls.TLSConfig` from ``--tls-dir`` (None
    with ``--insecure``), loaded once per process."""
    if not cfg["tls_dir"]:
        return None
    cached = cfg.get("_tls")
    if cached is None:
        from clusterfunk.runtime.tls import TLSError, load_tls_dir

        try:
            cached = load_tls_dir(cfg["tls_dir"], cfg["id"])
        except (TLSError, OSError) as exc:
            raise StartError(f"--tls-dir {cfg['tls_dir']}: {exc}") from None
        cfg["_tls"] = cached
    return cached


def _management_tls(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """The management server's TLS contexts: (server, client for forwarding writes),
    from ``--tls-dir`` -- the server context requires client certificates of the
    cluster CA, so every request is authenticated by the handshake; ``(None, None)``
    (plain HTTP) with ``--insecure``."""
    tls = _load_tls(cfg)
    if tls is None:
        return None, None
    return tls.server_context, tls.client_context


def _load_keyring(cfg: dict[str, Any]) -> Any:
    if not cfg["keyring_file"]:
        return None
    from clusterfunk.gossip.keyring import Keyring, KeyringError, decode_key

    try:
        with open(cfg["keyring_file"], encoding="ascii") as f:
            keys = [decode_key(line.strip()) for line in f if line.strip()]
        return Keyring(keys)
    except (OSError, ValueError, KeyringError) as exc:
        raise StartError(f"--keyring-file {cfg['keyring_file']}: {exc}") from None


#: a node not yet in the map logs a warning after this long, then at doubling intervals
JOIN_WARN_AFTER = 10.0
JOIN_WARN_MAX = 300.0
#: seed name resolution: first retry after this many seconds, doubling up to the max
RESOLVE_RETRY = 0.5
RESOLVE_RETRY_MAX = 30.0


async def _resolve_one(seed: str) -> list[str]:
    """``HOST:PORT`` -> the addresses of HOST (A and AAAA), IP literals as they are."""
    from clusterfunk.runtime.api import split_address
    from clusterfunk.runtime.net import format_address

    host, port = split_address(seed)
    if _is_ip(host):
        return [format_address(host, port)]
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = format_address(str(sockaddr[0]), port)
        if addr not in out:
            out.append(addr)
    return out


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _srv_lookup(name: str, server: str | None) -> list[str]:
    """SRV records of ``name`` -> ``host:port`` seeds, by priority then weight (higher
    first); targets resolved to their A/AAAA addresses. Blocking (run in a thread)."""
    import dns.exception
    import dns.resolver

    from clusterfunk.runtime.api import split_address
    from clusterfunk.runtime.net import format_address

    resolver = dns.resolver.Resolver(configure=server is None)
    if server is not None:
        host, port = split_address(server)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = 5.0
    try:
        answer = resolver.resolve(name, "SRV")
    except dns.exception.DNSException as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
    records = sorted(answer, key=lambda r: (r.priority, -r.weight, str(r.target)))
    out: list[str] = []
    for r in records:
        target = str(r.target).rstrip(".")
        addrs: list[str] = []
        if _is_ip(target):
            addrs = [target]
        else:
            for rdtype in ("A", "AAAA"):
                try:
                    addrs += sorted(str(a) for a in resolver.resolve(target, rdtype))
                except dns.exception.DNSException:
                    continue
        out += [format_address(a, int(r.port)) for a in addrs]
    return out


async def _mdns_seeds(self_id: str | None, interfaces: list[str] | None) -> list[str]:
    from clusterfunk.management.discovery import browse

    found = await trio.to_thread.run_sync(browse, 2.0, interfaces)
    return [p["gossip"] for p in found if p["node"] != self_id and p.get("gossip")]


async def resolve_seeds(seeds: list[str], self_id: str | None = None,
                        mdns_interfaces: list[str] | None = None,
                        dns_server: str | None = None) -> list[str]:
    """The seed addresses to join through: DNS names (A/AAAA, e.g. from /etc/hosts)
    resolved to every address they have. A seed that does not resolve is logged and
    skipped; while none resolves, resolution is retried with exponential backoff
    (0.5 s doubling to 30 s), logging each failure: a node given seeds never falls
    back to bootstrapping a cluster of its own. The seed ``mdns`` stands for the gossip
    addresses of the other nodes announced by zeroconf; ``srv:NAME`` for the targets
    of NAME's SRV records (asked of ``dns_server``, default the system's resolvers).
    A malformed seed raises StartError."""
    delay = RESOLVE_RETRY
    while True:
        out: list[str] = []
        for seed in seeds:
            try:
                if seed == "mdns":
                    addrs = await _mdns_seeds(self_id, mdns_interfaces)
                    if not addrs:
                        log.warning("no other node announced by mDNS yet")
                        continue
                elif seed.startswith("srv:"):
                    if not seed[4:]:
                        raise ValueError("srv: needs a name (srv:_gossip._udp.example.org)")
                    addrs = await trio.to_thread.run_sync(_srv_lookup, seed[4:], dns_server)
                    if not addrs:
                        log.warning("seed %s: no SRV target resolves", seed)
                        continue
                else:
                    addrs = await _resolve_one(seed)
            except ValueError as exc:
                raise StartError(f"--join {seed!r}: {exc}") from None
            except OSError as exc:
                log.warning("seed %s does not resolve: %s", seed, exc.strerror or exc)
                continue
            out += [a for a in addrs if a not in out]
        if out or not seeds:
            if out != seeds:
                log.info("seeds %s resolved to %s", ", ".join(seeds), ", ".join(out))
            return out
        log.warning("no seed resolves; retrying in %.1f s", delay)
        await trio.sleep(delay)
        delay = min(delay * 2, RESOLVE_RETRY_MAX)


def _app(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``Cluster`` arguments of ``--app`` (none: no request server)."""
    if cfg["app"] == "none":
        return {}
    from clusterfunk.demo.kv import CounterService
    from clusterfunk.routing.api import ForwardMode

    return {"service": CounterService(), "app_port": cfg["app_port"],
            "forward": ForwardMode(cfg["forward"])}


async def serve(cfg: dict[str, Any]) -> None:
    from clusterfunk.management.adapter import ClusterManaged
    from clusterfunk.management.server import open_management_server
    from clusterfunk.node import Cluster, ClusterError
    from clusterfunk.trace import Tracer

    mhost = cfg["management_host"] or cfg["bind_host"]
    port = cfg["management_port"]
    bind = f"[{mhost}]:{port}" if ":" in mhost else f"{mhost}:{port}"
    with contextlib.ExitStack() as files:
        tracer = None
        if cfg["trace"]:
            out = files.enter_context(open(cfg["trace"], "w", encoding="utf-8", newline="\n"))
            tracer = Tracer(time.time, out)
        mdns_if = [cfg["mdns_interface"]] if cfg["mdns_interface"] else None
        seeds = await resolve_seeds(cfg["join"], cfg["id"], mdns_if, cfg["dns_server"])
        async with contextlib.AsyncExitStack() as stack:
            try:
                cluster = await stack.enter_async_context(Cluster(
                    cfg["id"], bind_host=cfg["bind_host"],
                    advertise_host=cfg["advertise_host"], seeds=seeds,
                    data_dir=cfg["data_dir"], shards=cfg["shards"], voters=cfg["voters"],
                    gossip_port=cfg["gossip_port"], raft_port=cfg["raft_port"],
                    coord_port=cfg["coord_port"], tracer=tracer,
                    # a join round that fails resolves the names again before retrying
                    resolve_seeds=partial(resolve_seeds, cfg["join"], cfg["id"], mdns_if,
                                          cfg["dns_server"]) if cfg["join"] else None,
                    tls=_load_tls(cfg), keyring=_load_keyring(cfg),
                    **_app(cfg),
                ))
            except (ValueError, OSError, ClusterError) as exc:
                raise StartError(f"cannot start the node: {exc}") from None
            managed = ClusterManaged(cluster)
            server_ctx, forward_ctx = _management_tls(cfg)
            try:
                server = await stack.enter_async_context(open_management_server(
                    managed, bind, token=cfg["management_token"],
                    ssl_context=server_ctx, forward_ssl_context=forward_ctx))
            except OSError as exc:
                raise StartError(f"cannot serve the management API on {bind}: "
                                 f"{exc.strerror or exc}") from None
            await _run(cluster, cfg, managed, server.address)


async def _run(cluster: Any, cfg: dict[str, Any], managed: Any, management: str) -> None:
    port = management.rpartition(":")[2]
    ahost = cfg["advertise_host"] or cfg["management_host"] or cfg["bind_host"]
    advertised = f"[{ahost}]:{port}" if ":" in ahost else f"{ahost}:{port}"
    managed.publish_management(advertised)
    for name, addr in cfg["endpoint"].items():
        cluster.set_endpoint(name, addr)
    log.info("node %s: gossip %s, raft %s, coord %s, management %s, requests %s",
             cluster.node_id, cluster.addresses.get("gossip"), cluster.addresses.get("raft"),
             cluster.addresses.get("coord"), management, cluster.addresses.get("app"))
    if not cfg["management_token"] and _management_tls(cfg)[0] is None:
        log.warning("management writes are disabled: no management token "
                    "(--management-token or $CLUSTERFUNK_TOKEN)")
    async with contextlib.AsyncExitStack() as stack:
        if cfg["mdns"]:
            await _announce(stack, cluster, cfg, advertised)
        await _serve_events(cluster, management)


async def _announce(stack: contextlib.AsyncExitStack, cluster: Any, cfg: dict[str, Any],
                    management: str) -> None:
    """Announce this node by mDNS until ``stack`` closes (blocking calls in a thread)."""
    from clusterfunk.management.discovery import Announcer

    host = management.rpartition(":")[0]
    if not _is_ip(host) or ":" in host:
        raise StartError(f"--mdns needs an IPv4 advertise address, not {host!r}")
    ann = Announcer(cluster.node_id, host, management, cluster.addresses["gossip"],
                    interfaces=[cfg["mdns_interface"]] if cfg["mdns_interface"] else None)
    await trio.to_thread.run_sync(ann.__enter__)

    async def unannounce() -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(ann.__exit__, None, None, None)

    stack.push_async_callback(unannounce)
    log.info("announced by mDNS as %s", ann.info.name)


async def _serve_events(cluster: Any, management: str) -> None:
    events = cluster.events()
    _print(cluster, cluster.state(), cluster.role(), management)
    last = (cluster.state(), cluster.role(), cluster.leader())
    # SIGINT / SIGTERM end the loop below; leaving the ``async with`` then leaves the
    # cluster gracefully (a KeyboardInterrupt could land anywhere).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for sig in signals:
                    if sig == signal.SIGHUP:  # reload the certificates for new connections
                        tls = getattr(cluster, "tls", None)
                        if tls is not None:
                            try:
                                tls.reload()
                            except Exception as exc:  # bad files: keep the old ones
                                log.error("SIGHUP: certificates not reloaded: %s", exc)
                            else:
                                log.info("SIGHUP: certificates reloaded")
                        continue
                    log.info("signal %s: leaving the cluster", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            started = trio.current_time()
            warn_after = JOIN_WARN_AFTER
            while True:
                # a node that is not in the map yet says so in the log now and then
                waiting = cluster.state() in ("starting", "joining")
                with trio.move_on_after(warn_after if waiting else math.inf) as scope:
                    try:
                        state, role = await events.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        break
                if scope.cancelled_caught:
                    log.warning("not in the cluster's shard map after %.0f s (state %s, "
                                "leader %s); still trying", trio.current_time() - started,
                                cluster.state(), cluster.leader())
                    warn_after = min(2 * warn_after, JOIN_WARN_MAX)
                    continue
                _print(cluster, state, role, management)
                now = (state, role, cluster.leader())
                if now != last:
                    log.info("state %s, role %s, leader %s, map nodes %d", state, role,
                             now[2], len(cluster.nodes()))
                    last = now
    log.info("node %s stopped", cluster.node_id)


def _print(cluster: Any, state: str, role: str, management: str) -> None:
    line = {"t": round(time.time(), 6), "node": cluster.node_id, "state": state, "role": role,
            "leader": cluster.leader(), "nodes": cluster.nodes(), "management": management}
    print(json.dumps(line), flush=True)
