"""gRPC health (grpc.health.v1) that tells the truth.

The server's overall status ("") says the process is alive. Each service's own name says it can
serve now: NOT_SERVING while a dependency it needs (database, queue) is down, SERVING again once it
is back. Both are NOT_SERVING from the moment the process starts draining on shutdown. Kubernetes' readiness probe asks
for the service's name and its liveness probe for "" (deploy/k8s): an outage takes instances out of
rotation without restarting them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from services.kernel.runtime import sleep_or_stop

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 1.0
# Once draining, calls in flight get this long to finish (a group commit, a posting) before they are
# cancelled; the whole shutdown stays well within a supervisor's 10 s (Kubernetes allows 30 s).
RPC_GRACE_SECONDS = 5.0
# Then one last outbox poll gets this long.
OUTBOX_FLUSH_SECONDS = 2.0


async def watch_dependencies(
    health: Any,
    service_names: Sequence[str],
    probe: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    interval: float = CHECK_INTERVAL_SECONDS,
    probe_seconds: float = 2.0,
) -> None:
    """Every `interval` seconds until `stop`, sets `service_names` SERVING when `probe` succeeds and
    NOT_SERVING when it raises, returns False or takes longer than `probe_seconds`."""
    serving = True
    while not stop.is_set():
        try:
            up = await asyncio.wait_for(probe(), probe_seconds) is not False
        except Exception:
            up = False
        if up != serving:
            serving = up
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in service_names:
                await health.set(name, status)
            log.warning(
                "dependencies %s",
                "back: serving" if up else "down: not serving",
                extra={"fields": {"services": list(service_names)}},
            )
        await sleep_or_stop(stop, interval)


async def all_reachable(*checks: Coroutine[Any, Any, object]) -> None:
    """Runs the checks (one per dependency) at once; raises when any fails, cancelling the rest."""
    async with asyncio.TaskGroup() as group:
        for check in checks:
            group.create_task(check)


async def drain(server: grpc.aio.Server, health: Any, grace: float) -> None:
    """Announces NOT_SERVING for every service, for good, then stops the server, letting calls in
    flight finish within `grace` seconds."""
    await health.enter_graceful_shutdown()
    await server.stop(grace)
