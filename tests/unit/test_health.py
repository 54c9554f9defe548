"""gRPC health follows the dependencies: NOT_SERVING while a probe fails, SERVING once it passes again;
the ledger worker, which serves no RPCs, answers health on a server of its own."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.kernel.config import Env
from services.kernel.grpc_server import create_probe_server
from services.kernel.health import all_reachable, watch_dependencies
from services.ledger.api.errors import WORKER_SERVICE_NAME
from services.ledger.config import LedgerSettings

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


async def test_all_reachable_passes_when_every_check_does_and_fails_with_any() -> None:
    finished: list[str] = []

    async def up(name: str, seconds: float = 0) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    async def down() -> None:
        raise ConnectionRefusedError

    await all_reachable(up("database"), up("queue"))
    assert sorted(finished) == ["database", "queue"]
    finished.clear()
    with pytest.raises(ExceptionGroup) as failed:
        await all_reachable(up("database", seconds=5), down())
    assert failed.group_contains(ConnectionRefusedError)
    assert finished == []  # the slow check was cancelled, not left running


def test_the_worker_serves_its_health_on_ledger_worker_address() -> None:
    env = {"PAYRECON_ENV": "development", "PAYRECON_DATABASE_URL": "postgresql://x/y"}
    assert LedgerSettings.from_env(Env(env)).worker_address == "127.0.0.1:50054"
    assert (
        LedgerSettings.from_env(Env({**env, "LEDGER_WORKER_ADDRESS": "0.0.0.0:6000"})).worker_address == "0.0.0.0:6000"
    )


async def test_a_probe_server_answers_health_and_reflection_only_and_without_a_token() -> None:
    server, port, health = await create_probe_server("127.0.0.1:0", service_names=[WORKER_SERVICE_NAME])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                return int((await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status)

            assert (await status(""), await status(WORKER_SERVICE_NAME)) == (SERVING, SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await status("payrecon.ledger.v1.LedgerService")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            listed = {s.name async for reply in replies for s in reply.list_services_response.service}
            assert listed == {WORKER_SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}

            # Draining: NOT_SERVING for every name, the process's own ("") included, for good.
            await health.enter_graceful_shutdown()
            await health.set(WORKER_SERVICE_NAME, SERVING)
            assert (await status(""), await status(WORKER_SERVICE_NAME)) == (NOT_SERVING, NOT_SERVING)
    finally:
        await server.stop(0)
