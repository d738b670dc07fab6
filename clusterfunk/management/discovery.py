"""Zeroconf (mDNS / DNS-SD) discovery for a LAN, behind an option.

A ``cluster-node --mdns`` announces the service ``_clusterfunk._tcp.local.`` with
instance name ``<node>`` and TXT properties ``node``, ``gossip`` (the gossip
address to join through), ``management`` (the management API) and ``cluster`` (the
service name). ``cluster-node --join mdns`` finds its seeds that way, and
``ctl --discover`` finds a node's management API.

python-zeroconf runs its own I/O thread; the blocking calls here are meant for
``trio.to_thread.run_sync`` (cluster-node) or a plain script (ctl). Nothing is sent
unless one of these options is given. ``interfaces``: the addresses to use (e.g.
``["127.0.0.1"]``), default every interface.
"""

from __future__ import annotations

import socket
import time
from typing import Any

SERVICE = "_clusterfunk._tcp.local."


def _zeroconf(interfaces: list[str] | None) -> Any:
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    return Zeroconf(interfaces=interfaces or InterfaceChoice.All,
                    ip_version=IPVersion.V4Only)


class Announcer:
    """Announces one node while open (``with Announcer(...):``); blocking calls."""

    def __init__(self, node: str, host: str, management: str, gossip: str,
                 cluster: str = "clusterfunk", interfaces: list[str] | None = None) -> None:
        from zeroconf import ServiceInfo

        port = int(management.rpartition(":")[2])
        self.info = ServiceInfo(
            SERVICE, f"{node}.{SERVICE}", port=port,
            addresses=[socket.inet_aton(host)],
            properties={"node": node, "gossip": gossip, "management": management,
                        "cluster": cluster},
        )
        self.interfaces = interfaces
        self.zc: Any = None

    def __enter__(self) -> Announcer:
        self.zc = _zeroconf(self.interfaces)
        try:
            self.zc.register_service(self.info)
        except BaseException:
            self.zc.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.zc.unregister_service(self.info)
        finally:
            self.zc.close()


def browse(wait: float, interfaces: list[str] | None = None,
           cluster: str | None = None) -> list[dict[str, str]]:
    """Nodes announced on the LAN, found within ``wait`` seconds (blocking): a list of
    ``{"node", "gossip", "management", "cluster"}`` sorted by node; ``cluster``
    filters by service name."""
    from zeroconf import ServiceBrowser, ServiceListener

    names: list[str] = []

    class _Listener(ServiceListener):
        def add_service(self, zc: Any, type_: str, name: str) -> None:
            names.append(name)

        def update_service(self, zc: Any, type_: str, name: str) -> None:
            pass

        def remove_service(self, zc: Any, type_: str, name: str) -> None:
            pass

    zc = _zeroconf(interfaces)
    try:
        browser = ServiceBrowser(zc, SERVICE, _Listener())
        deadline = time.monotonic() + wait
        found: dict[str, dict[str, str]] = {}
        try:
            while time.monotonic() < deadline:
                for name in list(names):
                    if name in found:
                        continue
                    left = max(0.1, deadline - time.monotonic())
                    info = zc.get_service_info(SERVICE, name, timeout=int(left * 1000))
                    if info is None:
                        continue
                    props = {k.decode(): (v or b"").decode() for k, v in
                             info.properties.items() if isinstance(k, bytes)}
                    if props.get("node") and props.get("management"):
                        found[name] = props
                if found:
                    break
                time.sleep(0.05)
        finally:
            browser.cancel()
    finally:
        zc.close()
    out = [p for p in found.values() if cluster is None or p.get("cluster") == cluster]
    return sorted(out, key=lambda p: p["node"])
