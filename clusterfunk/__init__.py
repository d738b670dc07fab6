"""clusterfunk: Raft consensus, SWIM gossip and weighted sharding for Python.

Protocol cores are pure state machines (no I/O, injected clock and RNG); one Trio
runtime drives them over real sockets, and the deterministic simulator drives the
very same runtime over an in-memory network in virtual time.
"""

__version__ = "0.1.0"
