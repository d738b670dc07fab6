"""Operating a node: the management HTTP API, its Prometheus metrics, and the
adapter that exposes a :class:`clusterfunk.node.Cluster` to them.

* :mod:`.api` -- the :class:`~.api.ManagedNode` protocol and its JSON views;
* :mod:`.server` -- :func:`~.server.open_management_server` (Hypercorn on Trio);
* :mod:`.metrics` -- the scrape-time Prometheus collector;
* :mod:`.adapter` -- :class:`~.adapter.ClusterManaged` over ``Cluster``.

Routes, metrics and the ``clusterfunk ctl`` command: docs/operations.md.
"""
