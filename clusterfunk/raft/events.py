"""Public events the core appends to ``Output.events`` (never dropped by the driver)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Applied:
    """Entry ``index`` of ``term`` was applied; ``result`` is the state machine's
    return value (``None`` for no-op and configuration entries). A proposer that got
    ``(index, term)`` from ``propose`` and sees a different term here lost its entry."""

    index: int
    term: int
    result: Any
    kind: int = 1


@attrs.frozen
class RoleChanged:
    role: str
    term: int
    leader_id: str | None


@attrs.frozen
class LeaderChanged:
    leader_id: str | None
    leader_address: str | None
    term: int


@attrs.frozen
class ConfigChanged:
    index: int
    voters: tuple[str, ...]
    nonvoters: tuple[str, ...]


@attrs.frozen
class ReadReady:
    """A read with context ``ctx`` may be served once ``last_applied >= index``."""

    ctx: int
    index: int


@attrs.frozen
class ReadFailed:
    ctx: int
    reason: str


@attrs.frozen
class SnapshotRestored:
    index: int
    term: int
