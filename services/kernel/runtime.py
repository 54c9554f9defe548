"""Running a service process: wait for SIGINT/SIGTERM, then stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager

log = logging.getLogger(__name__)

Running = Callable[[asyncio.Event], AbstractAsyncContextManager[object]]


async def serve_until_signalled(running: Running) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return_large_blocks_to_the_system()
    async with running(stop):
        settle_garbage_collector()
        await stop.wait()
        log.info("stopping")
    log.info("stopped")


def settle_garbage_collector() -> None:
    """Once a service has started: what it loaded (modules, descriptors, pools) moves out of the cyclic
    collector's sight, and the youngest generation is collected less often. A posting batch allocates
    tens of thousands of short-lived objects; with the defaults each of them pays for rescanning the
    whole heap every few hundred allocations. Reference counting still frees them at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# glibc's mallopt parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 1 << 20


def return_large_blocks_to_the_system() -> None:
    """Blocks of LARGE_BLOCK_BYTES and more (a column of a large reconcile, a statement being parsed) are
    mapped on their own and given back to the system when freed.

    glibc's default raises its mmap threshold each time such a block is freed, after which the next
    ones come from the heap and stay in the process once freed: a reconcile of a million lines then
    held 700 MiB where its live memory peaked at 340 MiB. A fixed threshold keeps the process's size
    near what it uses (measured: 486 MiB, same CPU). No effect where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)


_pause_lock = threading.Lock()
_pauses = 0
_collector_was_enabled = False


@contextlib.contextmanager
def cyclic_collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, back as it was when the last block in progress
    (in any thread or task) ends.

    Work that makes a million objects, none of them in a reference cycle (a statement's lines, a
    reconcile's breaks), still counts each towards the collector's thresholds: collection after
    collection walks every object made so far (a quarter of a large parse, a fifth of a large
    reconcile). Reference counting still frees everything as usual; only cycles wait for the end."""
    global _pauses, _collector_was_enabled
    with _pause_lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()


@contextlib.asynccontextmanager
async def background(*coroutines: object, grace_seconds: float = 0.0) -> AsyncIterator[list[asyncio.Task[object]]]:
    """Runs coroutines as tasks for the block's duration; a task that dies is logged. The block's
    exit gives the tasks up to `grace_seconds` to return (set their stop event before leaving the
    block), then cancels what is still running."""
    tasks: list[asyncio.Task[object]] = [asyncio.create_task(c) for c in coroutines]  # type: ignore[arg-type]

    def report(task: asyncio.Task[object]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task died", exc_info=task.exception())

    for task in tasks:
        task.add_done_callback(report)
    try:
        yield tasks
    finally:
        if grace_seconds > 0:
            await asyncio.wait(tasks, timeout=grace_seconds)
        unfinished = [task for task in tasks if not task.done()]
        if unfinished:
            # A drain that overran: what those tasks had in hand is abandoned (left for redelivery).
            log.warning(
                "background tasks cancelled: still running after the grace period",
                extra={"fields": {"tasks": len(unfinished), "grace_seconds": grace_seconds}},
            )
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleeps `seconds`, or less when `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def run_periodically(
    job: Callable[[], Awaitable[object]], stop: asyncio.Event, seconds: float, *, what: str
) -> None:
    """Runs `job` every `seconds` until `stop` is set; a failure is logged and retried next time."""
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("%s failed; will retry", what)
        await sleep_or_stop(stop, seconds)
