"""The simulator raises the garbage collector's first threshold while a run goes
(runner._fewer_collections) and restores it afterwards, even when the run fails."""

from __future__ import annotations

import gc

import pytest

from clusterfunk.sim import runner


def test_threshold_raised_during_a_run_and_restored_after() -> None:
    before = gc.get_threshold()
    with runner._fewer_collections():
        assert gc.get_threshold() == (runner.GC_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), runner._fewer_collections():
        raise RuntimeError("a run that fails")
    assert gc.get_threshold() == before
