"""Routing requests by shard: the node-side request server and the routing client.

The contract (types only) is :mod:`clusterfunk.routing.api`.
"""
