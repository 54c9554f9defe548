"""`payrecon health`, the containers' health check, asks a real gRPC server over grpc.health.v1."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.cli import main
from services.devstack.processes import free_port


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, servicer
    finally:
        server.stop(None)


def test_exit_status_follows_the_served_status(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("payrecon.ledger.v1.LedgerWorker", health_pb2.HealthCheckResponse.NOT_SERVING)

    assert main(["health", address]) == 0
    assert main(["health", address, "--service", "payrecon.ledger.v1.LedgerWorker"]) == 1
    assert "NOT_SERVING" in capsys.readouterr().out

    servicer.set("payrecon.ledger.v1.LedgerWorker", health_pb2.HealthCheckResponse.SERVING)
    assert main(["health", address, "--service", "payrecon.ledger.v1.LedgerWorker"]) == 0
    # A name the server does not know is not healthy.
    assert main(["health", address, "--service", "payrecon.nothing.v1.Nothing"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_nothing_listening_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", f"127.0.0.1:{free_port()}", "--timeout", "0.5"]) == 1
    error = capsys.readouterr().err
    assert "UNAVAILABLE" in error or "DEADLINE_EXCEEDED" in error, error
