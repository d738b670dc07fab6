"""Planted bugs ("mutants"): known protocol bugs that a simulation can switch on.

A mutant is a name that a core looks for in the ``mutants`` frozenset of its
configuration object (:class:`~clusterfunk.raft.config.RaftConfig`,
:class:`~clusterfunk.gossip.config.GossipConfig`,
:class:`~clusterfunk.cluster.coordinator.CoordinatorConfig`); each one is a single
``if "name" in config.mutants:`` branch at the function of the rule it breaks.
They exist to teach (watch a checker catch a known bug) and to show that the
checkers can fail at all. All are off by default; only ``clusterfunk simulate`` and
``clusterfunk sweep`` / ``shrink`` can switch one on, never a real-process command.

This module is a pure registry (no simulator, no protocol import). See
``docs/mutants.md`` for how fast a sweep finds each one.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen
class Mutant:
    """One planted bug: ``name``, the rule it breaks, where the rule is written down,
    which core carries the branch, and which ``--protocol`` workloads run that core."""

    name: str
    rule: str
    section: str
    core: str
    protocols: tuple[str, ...]


_RAFT = ("raft", "cluster")
_GOSSIP = ("gossip", "cluster")

MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "raft-commit-old-term",
            "a leader commits an entry of an earlier term as soon as a majority holds it, "
            "instead of only entries of its own term by counting replicas",
            "Raft paper 5.4.2, Figure 8",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-commit-minority",
            "a leader counts half of the voters (rounded down, itself included) as enough "
            "replicas to commit, instead of a majority",
            "Raft paper 5.3, Figure 2 (rules for leaders: a majority of matchIndex[i] >= N)",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-vote-without-log-check",
            "a server grants a vote (and a pre-vote) without checking that the candidate's "
            "log is at least as up-to-date as its own",
            "Raft paper 5.4.1 (election restriction)",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-vote-not-persisted",
            "a server answers RequestVote without making votedFor durable first (a crash "
            "forgets the vote, so it can vote twice in one term)",
            "Raft paper 5.2, Figure 2 (persistent state on all servers)",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-stale-append",
            "a server accepts an AppendEntries whose term is lower than its own instead of "
            "rejecting it",
            "Raft paper 5.1, Figure 2 (AppendEntries receiver rule 1)",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-append-keeps-conflicts",
            "a follower keeps its entries that conflict with the leader's (same index, "
            "other term) and appends only past the end of its log, instead of deleting the "
            "conflicting entry and all that follow it",
            "Raft paper 5.3, Figure 2 (AppendEntries receiver rule 3)",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-apply-before-commit",
            "a server applies entries to its state machine up to the end of its log instead "
            "of up to commitIndex",
            "Raft paper 5.3, Figure 2 (rules for all servers: apply up to commitIndex)",
            "raft",
            _RAFT,
        ),
        Mutant(
            "raft-read-without-quorum",
            "a leader answers a ReadIndex read at its commit index at once, without the "
            "heartbeat round that confirms it is still the leader",
            "Raft dissertation 6.4 (ReadIndex step 3); paper section 8",
            "raft",
            _RAFT,
        ),
        Mutant(
            "swim-never-refute",
            "a member that hears it is suspected (or declared dead) never refutes with a "
            "higher incarnation",
            "SWIM paper 4.2 (suspicion mechanism: refutation by incarnation number)",
            "gossip",
            _GOSSIP,
        ),
        Mutant(
            "gossip-dead-without-suspicion",
            "a member accepts a suspicion as a death at once, without the suspicion period "
            "in which the accused could refute",
            "SWIM paper 4.2 (suspect before confirm); Lifeguard 3.2 (suspicion timeout)",
            "gossip",
            _GOSSIP,
        ),
        Mutant(
            "shard-commit-before-acks",
            "the leader commits a shard map once a majority of its nodes acked the "
            "proposal, not every node of it",
            "docs/cluster.md, 'Resharding: propose, ack, commit' step 3",
            "coordinator",
            ("cluster",),
        ),
    )
}


class UnknownMutant(ValueError):
    """A mutant name that is not in :data:`MUTANTS`, or not run by the protocol."""


def names() -> list[str]:
    """Every mutant name, in registry order."""
    return list(MUTANTS)


def parse(text: str | Iterable[str] | None, protocol: str | None = None) -> frozenset[str]:
    """``"a,b"`` (or a list of names) -> ``frozenset({"a", "b"})``, validated: every name
    must exist and, with ``protocol``, be carried by a core that protocol runs."""
    if not text:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    out = set()
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        m = MUTANTS.get(name)
        if m is None:
            raise UnknownMutant(
                f"unknown mutant {name!r}; `clusterfunk simulate --list-mutants` lists them"
            )
        if protocol is not None and protocol not in m.protocols:
            raise UnknownMutant(
                f"mutant {name!r} lives in the {m.core} core, which --protocol {protocol} "
                f"does not run (use {' or '.join(m.protocols)})"
            )
        out.add(name)
    return frozenset(out)


def describe(m: Mutant) -> str:
    """One line: the name first, then core, section and rule (``--list-mutants``)."""
    return f"{m.name}\t[{m.core}; {'/'.join(m.protocols)}]\t{m.section}: {m.rule}"
