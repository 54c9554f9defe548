"""How a service process keeps its memory in check (kernel.runtime): the cyclic collector's pause,
counted across overlapping blocks and restored as it was; large blocks given back to the system."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

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


# Frees 40 blocks of 1 MiB made between small live ones, after an 8 MiB block (whose freeing raises
# glibc's dynamic mmap threshold): prints how many MiB the process still holds.
_AFTER_LARGE_FREES = textwrap.dedent(
    """
    import sys
    import numpy as np
    def rss():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) // 1024
    if sys.argv[1:] == ["tuned"]:
        from services.kernel.runtime import return_large_blocks_to_the_system
        return_large_blocks_to_the_system()
    base = rss()
    first = np.ones(1 << 20); del first
    blocks, small = [], []
    for _ in range(40):
        blocks.append(np.ones(1 << 17)); small.append(np.ones(4096))
    del blocks
    print(rss() - base)
    """
)


def test_freed_large_blocks_go_back_to_the_system() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _AFTER_LARGE_FREES, "tuned"], capture_output=True, text=True, check=True
    )
    # Without the tuning the same frees leave about 40 MiB held (glibc, seen here).
    assert int(run.stdout) < 8, run.stdout
