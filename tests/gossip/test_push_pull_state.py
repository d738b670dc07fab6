"""The push-pull state: each member's entry is reused while it is current, rebuilt as
soon as the member changes; a hostile tag map is refused with the field named."""

from __future__ import annotations

import msgpack
import pytest

from clusterfunk import wire
from clusterfunk.gossip.messages import MemberState, PushPull
from clusterfunk.gossip.state import MemberRecord


def test_a_members_entry_is_reused_until_it_changes() -> None:
    rec = MemberRecord("n2", "n2:7946", 3, "alive", {"role": "db"}, 0.0)
    first = rec.wire_state()
    assert first == MemberState("n2", "n2:7946", 3, "alive", {"role": "db"})
    assert rec.wire_state() is first
    rec.since = 5.0  # not part of the entry
    assert rec.wire_state() is first
    for change in (
        lambda r: setattr(r, "incarnation", 4),
        lambda r: setattr(r, "status", "suspect"),
        lambda r: setattr(r, "addr", "n2:7947"),
        lambda r: setattr(r, "tags", {"role": "web"}),
    ):
        before = rec.wire_state()
        change(rec)
        after = rec.wire_state()
        assert after is not before
        assert after == MemberState(rec.name, rec.addr, rec.incarnation, rec.status, rec.tags)
    assert rec == MemberRecord("n2", "n2:7947", 4, "suspect", {"role": "web"}, 5.0)


_TAG = next(t for t, cls in wire.registered_tags().items() if cls is PushPull)


def _push_pull(tags: object) -> bytes:
    return msgpack.packb(
        [wire.WIRE_VERSION, _TAG, "n1", "n1:7946", True, False,
         [["n2", "n2:7946", 1, "alive", tags]], 1, 1, 1, []],
        use_bin_type=True,
    )


def test_push_pull_tags_are_checked_inline() -> None:
    good = wire.decode(_push_pull({"role": "db"}))
    assert isinstance(good, PushPull) and good.members[0].tags == {"role": "db"}
    for bad, reason in (
        ([], "MemberState.tags: expected map"),
        ({"role": 1}, "MemberState.tags: expected map of str to str"),
        ({b"role": "db"}, "MemberState.tags: expected map of str to str"),
    ):
        with pytest.raises(wire.WireError, match=reason):
            wire.decode(_push_pull(bad))
