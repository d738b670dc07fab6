"""Reading trace files for the audit: one pass, every line validated.

A trace is JSON Lines (``docs/trace.md``). Several files (one per real process,
for example) are merged by ``t``: records of equal ``t`` keep the order of the
files as given, and within a file the file's own order, so a single simulation
trace is read exactly in its causal order.

Anything that does not follow the schema stops the audit with
:class:`MalformedTrace`, whose message is one line naming the file and line.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from typing import Any

from clusterfunk.audit.schema import problem

Record = dict[str, Any]


class MalformedTrace(Exception):
    """The trace is not a valid trace: not JSON, or a required field is missing."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def parse_line(line: str, where: str) -> Record:
    """Decode and validate one line; raise :class:`MalformedTrace` if it is not valid."""
    try:
        rec = _decode(line)
    except ValueError as exc:
        snippet = line.strip()
        if len(snippet) > 60:
            snippet = snippet[:57] + "..."
        raise MalformedTrace(where, f"not JSON ({exc}): {snippet!r}") from None
    what = problem(rec)
    if what is not None:
        raise MalformedTrace(where, what)
    return rec


def read_file(path: str) -> Iterator[tuple[Record, str]]:
    """The records of one file with their location (``path:line``), validated.

    Blank lines are skipped; ``t`` must not decrease (the schema's guarantee)."""
    last = -float("inf")
    with open(path, encoding="utf-8", newline="\n") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            rec = parse_line(line, where)
            t = rec["t"]
            if t < last:
                raise MalformedTrace(where, f"t={t} is earlier than the line before (t={last})")
            last = t
            yield rec, where


def read(paths: Iterable[str]) -> Iterator[tuple[Record, str]]:
    """Records of every file, merged by ``t`` (stable: file order, then line order)."""
    files = [read_file(p) for p in paths]
    if len(files) == 1:
        yield from files[0]
        return
    keyed = [_keyed(i, f) for i, f in enumerate(files)]
    for _, _, _, rec, where in heapq.merge(*keyed):
        yield rec, where


def _keyed(
    i: int, f: Iterator[tuple[Record, str]]
) -> Iterator[tuple[float, int, int, Record, str]]:
    for seq, (rec, where) in enumerate(f):
        yield rec["t"], i, seq, rec, where
