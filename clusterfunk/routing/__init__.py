"""Routing requests by shard: the node-side request server and the routing client.

The contract (types only) is :mod:`clusterfunk.routing.api`; the node side
:mod:`clusterfunk.routing.server` (run by ``Cluster(service=...)``); the client
core :mod:`clusterfunk.routing.client` and its Trio wrapper
:func:`clusterfunk.routing.trio_client.open_client`; docs/routing.md.
"""
