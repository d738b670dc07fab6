"""Offline trace audit: ``clusterfunk audit TRACE`` (see ``docs/audit.md``).

Reads traces by the documented schema alone (``docs/trace.md``); it imports
nothing of the simulator, Raft, gossip or cluster packages (the linearizability
search is the pure module :mod:`clusterfunk.sim.checkers.linearizability`). One
module per property family: :mod:`.raft`, :mod:`.kv`, :mod:`.shards`,
:mod:`.gossip`.
"""

from __future__ import annotations

from clusterfunk.audit.base import Verdict, Violation
from clusterfunk.audit.reader import MalformedTrace, read
from clusterfunk.audit.runner import Auditor, Options, Report, audit

__all__ = [
    "Auditor", "MalformedTrace", "Options", "Report", "Verdict", "Violation", "audit", "read",
]
