"""JSON Lines traces: the audit trail of a run (schema in ``docs/trace.md``).

Every line is one JSON object whose first three keys are ``t`` (seconds: virtual
time in simulation, Unix time in production, rounded to microseconds), ``node``
(a node id, or ``"sim"`` for the simulator itself) and ``ev`` (the event name);
the event's own fields follow in a fixed order chosen by the emitting code.
Output is byte-for-byte deterministic for a deterministic run: no set or dict
iteration of unordered data, no wall-clock time, no object ids.

A :class:`Tracer` can write to a file, keep records in memory, and feed online
checkers (``listeners``) with the same dicts that are written.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import IO, Any

Record = dict[str, Any]

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=False
)
#: The C encoder ``_ENCODER.encode`` makes for every call (JSONEncoder.iterencode),
#: made once, from the same settings: the same text. (No circular-reference check:
#: a record is a fresh dict of plain values.)
_make_c = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_C = None if _make_c is None or _ENCODER.indent is not None else _make_c(
    None, _ENCODER.default,
    json.encoder.encode_basestring_ascii if _ENCODER.ensure_ascii
    else json.encoder.encode_basestring,
    _ENCODER.indent, _ENCODER.key_separator, _ENCODER.item_separator,
    _ENCODER.sort_keys, _ENCODER.skipkeys, _ENCODER.allow_nan,
)


def _dumps(rec: Record) -> str:
    """One record as JSON text, as ``_ENCODER.encode(rec)`` writes it."""
    if _ENCODE_C is None:  # (no C accelerator)
        return _ENCODER.encode(rec)
    return "".join(_ENCODE_C(rec, 0))


class Tracer:
    """Collects trace records.

    ``now`` gives the timestamp (the simulator passes its virtual clock).
    ``net`` enables the verbose network events (``net.send``, ``net.deliver``,
    ``net.drop``). ``keep`` keeps every record in :attr:`records`.
    """

    def __init__(
        self,
        now: Callable[[], float],
        out: IO[str] | None = None,
        *,
        net: bool = False,
        keep: bool = False,
    ) -> None:
        self.now = now
        self.out = out
        self.net = net
        self.keep = keep
        self.records: list[Record] = []
        self.listeners: list[Callable[[Record], None]] = []
        self.counts: dict[str, int] = {}
        #: the last time read and its rounded form (records of one instant come in
        #: runs, a mass join's by the thousand: rounded once)
        self._now: object = None
        self._t = 0.0

    @property
    def wants_net(self) -> bool:
        return self.net

    @property
    def active(self) -> bool:
        return self.out is not None or self.keep or bool(self.listeners)

    def emit(self, node: str, ev: str, fields: dict[str, Any]) -> None:
        counts = self.counts
        counts[ev] = counts.get(ev, 0) + 1
        out = self.out
        if out is None and not self.keep and not self.listeners:
            return
        now = self.now()
        if now is not self._now:  # (the very float object read last: the same time)
            self._now = now
            self._t = round(now, 6)
        rec: Record = {"t": self._t, "node": node, "ev": ev, **fields}
        if out is not None:
            out.write(_dumps(rec) + "\n")
        if self.keep:
            self.records.append(rec)
        for listener in self.listeners:
            listener(rec)

    def of(self, ev: str) -> list[Record]:
        """Kept records of one event type (requires ``keep=True``)."""
        return [r for r in self.records if r["ev"] == ev]


def read_trace(path: str) -> list[Record]:
    """Read a JSON Lines trace file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
