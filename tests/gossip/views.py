"""Random member views and a core built from one, shared by the push-pull property
tests (delta answers, settle digest, membership events off)."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.state import MemberRecord

STATUSES = ("alive", "suspect", "dead", "left")
# A view: member -> (incarnation, status), or absent.
view = st.dictionaries(
    st.sampled_from([f"m{i}" for i in range(12)] + ["a", "b"]),
    st.tuples(st.integers(0, 3), st.sampled_from(STATUSES)),
    max_size=14,
)


def core(name: str, members: dict[str, tuple[int, str]], seed: int) -> GossipCore:
    """A started core named ``name`` holding ``members`` (itself skipped), drained."""
    c = GossipCore(name, f"{name}:7946", random.Random(seed))
    c.start(0.0)
    for m, (inc, status) in sorted(members.items()):
        if m == name:
            continue
        rec = MemberRecord(m, f"{m}:7946", inc, "alive", {}, 0.0)
        c.table.add(rec)
        c.table.set_status(rec, status, 0.0)
    c.drain()
    return c
