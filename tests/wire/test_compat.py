"""Wire compatibility across versions (docs/wire.md): a message class may gain fields
only at its end, each with a default; a decoder fills an older sender's missing
trailing fields with their defaults and ignores a newer sender's extra ones.

``fields.json`` next to this file records every protocol message's fields as
released. The contract test fails when a field is removed, renamed or reordered,
when a new field has no default, or when a message is missing from the record.
After adding a field (at the end, with a default) or a message, record it::

    python -m tests.wire.test_compat --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs
import msgpack

from clusterfunk import wire
from tests.wire.shapes import minimal_field, protocol_messages

RECORD = Path(__file__).with_name("fields.json")
def _required(cls: type) -> int:
    """How many leading fields have no default (an older sender always sends them)."""
    fields = attrs.fields(cls)
    k = len(fields)
    while k and fields[k - 1].default is not attrs.NOTHING:
        k -= 1
    return k


def _describe(cls: type) -> dict[str, Any]:
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "fields": [f.name for f in attrs.fields(cls)], "required": _required(cls)}


def current() -> dict[str, dict[str, Any]]:
    """Messages by tag, then nested classes as ``struct:<module>.<name>``."""
    out = {str(t): _describe(c) for t, c in sorted(protocol_messages().items())}
    for c in wire.registered_structs():
        if c.__module__.startswith("clusterfunk."):
            out[f"struct:{c.__module__}.{c.__qualname__}"] = _describe(c)
    return out


def test_the_released_fields_are_kept_in_order_and_new_ones_have_defaults() -> None:
    record: dict[str, dict[str, Any]] = json.loads(RECORD.read_text())
    now = current()
    problems = []
    for tag, was in record.items():
        cur = now.get(tag)
        if cur is None:
            problems.append(f"{tag} ({was['class']}) is gone: a message's tag is "
                            "retired in docs/wire.md and never reused")
            continue
        n = len(was["fields"])
        if cur["fields"][:n] != was["fields"]:
            problems.append(f"tag {tag}: released fields {was['fields']} became "
                            f"{cur['fields']} (append only)")
        if cur["required"] > was["required"]:
            problems.append(f"tag {tag}: {cur['required']} required fields, released "
                            f"with {was['required']} (a new field needs a default)")
    for tag in now.keys() - record.keys():
        problems.append(f"tag {tag} ({now[tag]['class']}) is not recorded: "
                        "python -m tests.wire.test_compat --update")
    assert not problems, "\n".join(problems)


def test_the_record_is_up_to_date() -> None:
    """Appended fields are recorded too, so the next change is checked against them."""
    assert json.loads(RECORD.read_text()) == current(), (
        "python -m tests.wire.test_compat --update")


def test_every_message_decodes_from_older_and_newer_senders() -> None:
    checked = 0
    for tag, cls in protocol_messages().items():
        fields = attrs.fields(cls)
        raw = [minimal_field(f) for f in fields]
        try:
            msg = wire.decode(msgpack.packb([wire.WIRE_VERSION, tag, *raw]))
        except wire.WireError:
            continue  # its validators refuse the minimal form (test_int_ranges)
        checked += 1
        # a newer sender: two more trailing fields of any shape are ignored
        sent = msgpack.unpackb(wire.encode(msg), raw=False)
        newer = [*sent, 7, ["x", {"y": b"z"}]]
        assert wire.decode(msgpack.packb(newer, use_bin_type=True)) == msg, cls
        # an older sender: each shorter prefix down to the required fields decodes,
        # with the defaults for what it lacks
        need = _required(cls)
        for k in range(need, len(fields)):
            older = wire.decode(msgpack.packb([wire.WIRE_VERSION, tag, *raw[:k]]))
            expect = attrs.evolve(msg, **{
                f.name.lstrip("_"): (f.default.factory() if isinstance(f.default, attrs.Factory)
                                     else f.default) for f in fields[k:]})
            assert older == expect, (cls, k)
        if need:  # fewer than the required fields: refused with a clear error
            try:
                wire.decode(msgpack.packb([wire.WIRE_VERSION, tag, *raw[:need - 1]]))
            except wire.WireError as exc:
                assert "fields" in str(exc), (cls, exc)
            else:
                raise AssertionError(f"{cls.__name__}: {need - 1} fields decoded")
    assert checked >= 30


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        rows = [f"{json.dumps(tag)}: {json.dumps(desc)}" for tag, desc in current().items()]
        RECORD.write_text("{\n" + ",\n".join(rows) + "\n}\n")
        print(f"wrote {RECORD}")
    else:
        print(__doc__)
