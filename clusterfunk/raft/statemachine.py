"""The application's replicated state machine interface.

Applied in log order on every server; must be deterministic: the same commands in
the same order give the same results and the same snapshot bytes everywhere.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs


class StateMachine(Protocol):
    def apply(self, index: int, command: bytes) -> Any:
        """Apply a committed command; the return value goes to the proposer."""
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state (deterministically)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot; raise ValueError on malformed data."""


@attrs.frozen
class ApplyError:
    """Result of a command whose ``apply`` raised: the exception, as text. The core
    never crashes because of an application error; every server records the same."""

    error: str
