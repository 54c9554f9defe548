"""gRPC health follows the dependencies: NOT_SERVING while a probe fails, SERVING once it passes again."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from services.kernel.health import watch_dependencies

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class RecordingHealth:
    def __init__(self) -> None:
        self.changes: list[tuple[str, int]] = []

    async def set(self, service: str, status: int) -> None:
        self.changes.append((service, status))


async def test_health_follows_a_probe_that_fails_times_out_or_says_no_then_recovers() -> None:
    answers: list[object] = [True, ConnectionRefusedError(), "slow", False, True, True]
    stop = asyncio.Event()

    async def probe() -> object:
        answer = answers.pop(0)
        if not answers:
            stop.set()
        if isinstance(answer, Exception):
            raise answer
        if answer == "slow":
            await asyncio.sleep(1)
        return answer

    health = RecordingHealth()
    await asyncio.wait_for(watch_dependencies(health, ["svc"], probe, stop, interval=0, probe_seconds=0.05), 5)
    assert health.changes == [("svc", NOT_SERVING), ("svc", SERVING)]
