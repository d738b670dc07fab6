"""The routing contract: what an application implements and what a request returns.

This module is the seam between the routing layer (``clusterfunk.routing``: the
node-side request server, the routing client) and the applications and tools on
top of it (the demo service, the simulator's ``--app``, the management console).
It holds types only; the rules live where they are enforced:

* ``routing/server.py`` (node side): serve, answer ``moved``, forward, queue during
  a handoff, hand state over at a release;
* ``routing/client.py`` (client side): learn the committed map and the endpoints,
  send each request to its shard's owner, retry on ``moved``/``busy`` until the
  request's deadline.

Rules of the contract:

1. A :class:`ShardService` is synchronous and deterministic given its inputs: the
   same object runs in a real process and, unchanged, in the simulator.
2. ``handle`` is called only while the node serves ``shard``
   (``Cluster.serves(shard)`` true at the call); it raises :class:`ServiceError`
   for an application-level failure (outcome ``error``), never for routing.
3. ``release`` is called when the node stops serving shards, *before* it acks the
   proposal that takes them away (also when its lease runs out or it stops); it
   returns the state to hand over, one blob per shard (a shard missing from the
   result has no state). ``acquire`` is called when the node starts serving
   shards at a commit, with the state handed over by the previous owners (a
   shard with no state received -- new, or its owner crashed, or its handoff did
   not arrive within the bound -- is absent).
4. Every answer to a request carries one :class:`Outcome`; a client request ends
   ``ok``, or with a clear error (``RequestFailed``) once its deadline passed --
   never silently.
5. Delivery is at-least-once: a client retries with the same request id, and
   servers do not deduplicate, so ``handle`` may see one request more than once
   (docs/routing.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

#: Named port of the request server (``runtime.host`` names; default number 8600).
APP = "app"
#: Gossip tag under which a member publishes its request server's address.
TAG_REQUESTS = "ep.clusterfunk.requests"


class Outcome(enum.StrEnum):
    """The answer a node gives to one request (the ``outcome`` of ``app.request``)."""

    OK = "ok"  # handled by the shard's owner; the reply carries the service's result
    MOVED = "moved"  # not served here: the shard's owner at a map index is named
    BUSY = "busy"  # the shard is in a handoff (or the queue is full): retry later
    ERROR = "error"  # the service raised ServiceError, or the request was malformed


class ForwardMode(enum.StrEnum):
    """What a node does with a request for a shard it does not serve."""

    MOVED = "moved"  # answer ``moved`` (the client refreshes its map and retries)
    FORWARD = "forward"  # forward it to the owner and relay the owner's answer


class ServiceError(Exception):
    """Raised by :meth:`ShardService.handle` for an application-level failure."""


class RequestFailed(Exception):
    """A client request did not end ``ok`` before its deadline (the message says why:
    the last outcome seen, or that no node answered)."""


class ShardService(Protocol):
    """Application code serving shards (rules 1-3 of the module docstring)."""

    def handle(self, shard: int, key: int, payload: bytes) -> bytes:
        """Serve one request for ``key`` (in ``shard``); return the reply payload."""
        ...

    def release(self, shards: frozenset[int]) -> Mapping[int, bytes]:
        """Stop serving ``shards``; return the state to hand over, per shard."""
        ...

    def acquire(self, shards: frozenset[int], state: Mapping[int, bytes]) -> None:
        """Start serving ``shards``, with the state handed over by their previous owners."""
        ...
