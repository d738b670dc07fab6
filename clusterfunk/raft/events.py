"""Public events the core appends to ``Output.events`` (never dropped by the driver)."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from clusterfunk.raft.roles import Role


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
    role: Role
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


class ReadFailure(enum.StrEnum):
    """Why a ReadIndex read failed (the ``reason`` of :class:`ReadFailed`)."""

    #: the server stopped being leader before the read's heartbeat round confirmed
    #: it: the read may be retried at the new leader
    LEADERSHIP_LOST = "leadership lost"


@attrs.frozen
class ReadFailed:
    """The read with context ``ctx`` cannot be served here; ``reason`` is a
    :class:`ReadFailure` (a string naming one is converted, unknown ones raise
    ``ValueError``)."""

    ctx: int
    reason: ReadFailure = attrs.field(converter=ReadFailure)


@attrs.frozen
class SnapshotRestored:
    index: int
    term: int
