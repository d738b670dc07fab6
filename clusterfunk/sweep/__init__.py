"""Seed sweeps and shrinking of failing simulations (``clusterfunk sweep``, ``shrink``)."""
