"""The simulated network's model: per-link latency, jitter, loss, duplication,
reordering, and partitions (one-way too).

All randomness comes from one ``random.Random`` owned by the simulation, drawn in
event order, so a seed fixes every delay and every drop.
"""

from __future__ import annotations

import attrs


@attrs.define
class LinkConfig:
    """Behaviour of datagrams on a directed link (``src host -> dst host``).

    * ``latency``: base one-way delay, seconds.
    * ``jitter``: mean of an exponentially distributed extra delay, seconds.
    * ``loss``: probability a datagram is dropped.
    * ``duplicate``: probability a datagram is delivered twice (second copy
      delayed independently).
    * ``reorder``: probability a datagram is held back by an extra uniform delay
      in ``[0, reorder_window)`` so that later datagrams can overtake it.

    * ``stream_reset``: probability that sending a stream frame breaks its
      connection (as a TCP connection that times out on a lossy path): that frame
      and every frame still in flight on the connection are lost; later frames go
      on a new connection.

    Stream frames otherwise use ``latency`` and ``jitter`` only: streams are
    reliable and ordered, never duplicated or reordered, but a partition or a crash
    breaks them too (the frame and those behind it in flight are dropped).
    """

    latency: float = 0.001
    jitter: float = 0.0002
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_window: float = 0.01
    stream_reset: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "stream_reset"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        for name in ("latency", "jitter", "reorder_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


class Partitions:
    """The set of blocked directed host pairs.

    ``partition(groups)`` blocks both directions between hosts of different groups;
    hosts named in no group form one more group together. ``block(src, dst)``
    blocks one direction only. ``heal()`` clears everything.
    """

    def __init__(self) -> None:
        #: the blocked ``(src host, dst host)`` pairs (one set object for the lifetime
        #: of the instance: the simulator's hot paths test membership in it directly)
        self.pairs: set[tuple[str, str]] = set()

    def blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self.pairs

    @property
    def active(self) -> bool:
        return bool(self.pairs)

    def partition(self, groups: list[list[str]], hosts: list[str]) -> list[list[str]]:
        """Block traffic between groups; returns the normalised (sorted) groups."""
        seen: dict[str, int] = {}
        norm: list[list[str]] = []
        for g in groups:
            members = sorted(set(g))
            for h in members:
                if h in seen:
                    raise ValueError(f"host {h} appears in two partition groups")
                if h not in hosts:
                    raise ValueError(f"unknown host {h!r} in partition")
                seen[h] = len(norm)
            if members:
                norm.append(members)
        rest = [h for h in hosts if h not in seen]
        if rest:
            for h in rest:
                seen[h] = len(norm)
            norm.append(rest)
        for a in hosts:
            for b in hosts:
                if seen[a] != seen[b]:
                    self.pairs.add((a, b))
        return norm

    def block(self, src: list[str], dst: list[str]) -> None:
        """Block one direction: nothing from any host in ``src`` reaches ``dst``."""
        for a in src:
            for b in dst:
                if a != b:
                    self.pairs.add((a, b))

    def heal(self) -> None:
        self.pairs.clear()
