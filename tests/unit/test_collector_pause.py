"""The cyclic collector's pause (kernel.runtime.cyclic_collector_paused): counted across overlapping
blocks, restored as it was."""

from __future__ import annotations

import gc

from services.kernel.runtime import cyclic_collector_paused


def test_the_collector_comes_back_when_the_last_overlapping_pause_ends() -> None:
    assert gc.isenabled()
    first, second = cyclic_collector_paused(), cyclic_collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second pause is still in progress
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with cyclic_collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
