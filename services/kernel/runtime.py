"""Running a service process: wait for SIGINT/SIGTERM, then stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

log = logging.getLogger(__name__)

Running = Callable[[asyncio.Event], AbstractAsyncContextManager[object]]


async def serve_until_signalled(running: Running) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
