"""One gossip member, assembled once for every host.

:class:`GossipMember` wires a :class:`~clusterfunk.gossip.core.GossipCore` (its
address is the host's bound, advertised one: no re-addressing after start), the
keyring's sealing codec and key-rotation queries when a keyring is given, and its
driver. The Trio API (:class:`clusterfunk.gossip.api.GossipNode`) builds it on a
:class:`~clusterfunk.runtime.trio_host.TrioHost`; the ``gossip`` simulation
workload builds the very same object on a :class:`~clusterfunk.sim.simulation.SimHost`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from clusterfunk.gossip.config import GossipConfig
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.keyring import Keyring, NonceSource, SecureCodec, register_key_queries
from clusterfunk.runtime.host import GOSSIP, Host


class GossipMember:
    """A gossip member's parts on ``host`` (see the module docstring).

    ``nonce`` is the keyring's nonce source (random bytes in production; the
    simulator passes a seeded one so runs stay deterministic). ``seeds``: joined
    once the drivers run, outside any driver step.
    """

    def __init__(
        self,
        host: Host,
        *,
        rng: random.Random,
        config: GossipConfig,
        tags: dict[str, str] | None = None,
        keyring: Keyring | None = None,
        encrypt: bool = True,
        nonce: NonceSource = os.urandom,
        seeds: Sequence[str] = (),
        port: str = GOSSIP,
    ) -> None:
        self.host = host
        addr = host.address(port)
        self.core = GossipCore(host.name, addr, rng, config, tags)
        self.codec: SecureCodec | None = None
        if keyring is not None:
            self.codec = SecureCodec(keyring, encrypt=encrypt, nonce=nonce)
            register_key_queries(self.core, keyring)
            self.driver = host.driver(
                self.core, port, encode=self.codec.encode, decode=self.codec.decode
            )
        else:
            self.driver = host.driver(self.core, port)
        others = [s for s in seeds if s != addr]
        if others:
            host.defer(lambda: self.join(others))

    def join(self, seeds: Sequence[str]) -> None:
        """Start joining through ``seeds`` (gossip ``host:port`` addresses)."""
        if self.driver.running:
            self.driver.call(lambda core, now: core.join(now, list(seeds)))
