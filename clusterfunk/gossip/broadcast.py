"""The transmit-limited broadcast queue (memberlist's TransmitLimitedQueue).

Updates wait here, pre-encoded, and are piggybacked on every outgoing datagram.

Invariants:

* at most one queued update per key: a newer update about a member replaces
  (invalidates) the older one, whatever their transmit counts;
* packing takes the least-transmitted updates first, newest first among equals,
  and never exceeds the byte budget it is given;
* an update is sent at most ``retransmit_mult x ceil(log10(n + 1))`` times, then
  dropped.

Items live in buckets indexed by transmit count, so picking the least
transmitted is a walk from bucket 0, not a sort.
"""

from __future__ import annotations

from clusterfunk.gossip.config import retransmit_limit

#: Bytes of framing one part costs inside a Compound (msgpack bin header).
PART_OVERHEAD = 5
#: Stop packing after this many updates in a row did not fit.
_MAX_MISSES = 8


#: Once less room than this is left, nothing more will fit (the smallest update,
#: a Suspect about a one-letter name, takes about this much).
_MIN_ROOM = PART_OVERHEAD + 10


class _Item:
    __slots__ = ("cost", "data", "key", "sent_to", "transmits")

    def __init__(self, key: str, data: bytes) -> None:
        self.key = key
        self.data = data
        self.cost = len(data) + PART_OVERHEAD
        self.transmits = 0
        #: destinations it was sent to (see BroadcastQueue.get)
        self.sent_to: set[str] = set()


class BroadcastQueue:
    """Pending broadcasts, keyed (``"m:<member>"`` for membership updates)."""

    def __init__(self, retransmit_mult: int, max_items: int = 4096) -> None:
        self.retransmit_mult = retransmit_mult
        self.max_items = max_items
        self._items: dict[str, _Item] = {}
        self._buckets: list[dict[str, _Item]] = [{}]
        self.dropped = 0  # pushed out by max_items
        #: retransmit_limit for the member count of the last get
        self._limit_n = -1
        self._limit = 1

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def transmits(self, key: str) -> int | None:
        item = self._items.get(key)
        return None if item is None else item.transmits

    def queue(self, key: str, data: bytes) -> None:
        """Rule (memberlist invalidation): queue ``data`` under ``key``, replacing any
        older update with the same key; the new one starts at zero transmits."""
        old = self._items.pop(key, None)
        if old is not None:
            del self._buckets[old.transmits][key]
        item = _Item(key, data)
        self._items[key] = item
        self._buckets[0][key] = item
        if len(self._items) > self.max_items:
            self._drop_one()

    def _drop_one(self) -> None:
        """Drop the oldest of the most transmitted updates (the least useful)."""
        for bucket in reversed(self._buckets):
            if bucket:
                key = next(iter(bucket))
                del bucket[key]
                del self._items[key]
                self.dropped += 1
                return

    def get(
        self, budget: int, n_members: int, dest: str | None = None, peers: int = 0
    ) -> list[bytes]:
        """Rule (memberlist GetBroadcasts): pack the least-transmitted updates first
        (newest first among equals) into ``budget`` bytes, counting PART_OVERHEAD per
        update; bump their transmit counts and drop those that reached the limit of
        retransmit_mult x ceil(log10(n + 1)).

        With ``dest`` given, an update already sent to that destination is skipped
        (left for others) as long as it has reached fewer than min(limit, peers)
        distinct destinations, ``peers`` being how many members could receive it:
        the few transmissions then reach different members (this matters in small
        clusters, where the limit is 2-4), yet with a single peer every
        transmission still goes to it (repetition is what beats packet loss)."""
        if not self._items or budget <= PART_OVERHEAD:
            return []
        if n_members != self._limit_n:
            self._limit_n = n_members
            self._limit = max(1, retransmit_limit(self.retransmit_mult, n_members))
        limit = self._limit
        spread = min(limit, peers)
        # Picked items by the bucket they came from, in walk order; they move up a
        # bucket only after the walk, so none is picked twice.
        picked: list[tuple[int, list[_Item]]] = []
        room = budget
        misses = 0
        buckets = self._buckets
        for t in range(len(buckets)):
            bucket = buckets[t]
            if not bucket:
                continue
            if t >= limit:  # the limit shrank (members left): these are spent
                for key in bucket:
                    del self._items[key]
                bucket.clear()
                continue
            group: list[_Item] = []
            for item in reversed(bucket.values()):
                sent_to = item.sent_to
                if dest in sent_to and len(sent_to) < spread:
                    continue
                cost = item.cost
                if cost > room:
                    misses += 1
                    if misses >= _MAX_MISSES or room < _MIN_ROOM:
                        break
                    continue
                room -= cost
                group.append(item)
            if group:
                picked.append((t, group))
            if misses >= _MAX_MISSES or room < _MIN_ROOM:
                break
        out: list[bytes] = []
        items = self._items
        for t, group in picked:
            out += [item.data for item in group]
            if dest is not None:
                for item in group:
                    item.sent_to.add(dest)
            src = buckets[t]
            t += 1
            if t >= limit:  # sent for the last time
                for item in group:
                    del src[item.key]
                    del items[item.key]
                continue
            if t == len(buckets):
                buckets.append({})
            dst = buckets[t]
            for item in group:
                key = item.key
                del src[key]
                item.transmits = t
                dst[key] = item
        return out

    def clear(self) -> None:
        self._items.clear()
        self._buckets = [{}]
