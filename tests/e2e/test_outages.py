"""Outages through the gateway, with a ledger of its own on a PostgreSQL this test stops: while the
database is away the ledger answers 503 SERVICE_UNAVAILABLE (never 500), changes nothing, and its
gRPC health says NOT_SERVING; once the database is back it says SERVING and serves again. On
shutdown it says NOT_SERVING before it stops."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack.envoy import REPO_ROOT, Envoy
from services.devstack.postgres import EmbeddedPostgres
from services.devstack.processes import Child, free_port, port_open, spawn, wait_until
from services.devstack.stack import Stack
from services.provisioning import migrate_all
from tests.e2e.test_rest_flow import AUTH

pytestmark = pytest.mark.e2e

LEDGER = "payrecon.ledger.v1.LedgerService"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class PrivateLedger:
    postgres: EmbeddedPostgres
    root: Path
    address: str
    child: Child
    envoy: Envoy

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy.http_port}"

    def health(self, service: str) -> int:
        with grpc.insecure_channel(self.address) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)

    def wait_for_health(self, service: str, status: int, seconds: float = 15) -> None:
        wait_until(lambda: self.health(service) == status, timeout=seconds, what=f"{service or 'server'} → {status}")


@pytest.fixture(scope="module")
def private_ledger(stack: Stack, state_dir: Path) -> Iterator[PrivateLedger]:
    """The stack's ledger service run again on an embedded PostgreSQL of its own (run as an
    unprivileged user when root), behind an Envoy of its own that sends ledger routes to it."""
    root = state_dir / f"outage-{secrets.token_hex(3)}"
    postgres = EmbeddedPostgres.start(root)
    started: list[Child | Envoy] = []
    try:
        address = f"127.0.0.1:{free_port()}"
        env = {**stack.env, "PAYRECON_DATABASE_URL": postgres.url, "PAYRECON_LEDGER_ADDRESS": address}
        asyncio.run(migrate_all(env))
        child = spawn(
            "ledger", [sys.executable, "-m", "services.cli", "serve", "ledger"], log_dir=root, env=env, cwd=REPO_ROOT
        )
        started.append(child)
        port = int(address.rsplit(":", 1)[1])
        wait_until(lambda: port_open(port), timeout=60, what="ledger", process=child.process, log=child.log)
        envoy = Envoy.start(
            root,
            http_port=free_port(),
            ingest=stack.addresses["ingest"],
            ledger=address,
            reconciliation=stack.addresses["reconciliation"],
        )
        started.append(envoy)
        yield PrivateLedger(postgres, root, address, child, envoy)
    finally:
        for process in reversed(started):
            process.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_database_outage_is_a_503_and_not_serving_until_it_is_back(private_ledger: PrivateLedger) -> None:
    ledger = private_ledger
    account = {"id": f"outage-{secrets.token_hex(3)}", "currency": "USD", "type": "ASSET"}
    with httpx.Client(base_url=ledger.base_url, headers=AUTH, timeout=15) as client:
        assert client.get(f"/api/v1/accounts/{account['id']}").status_code == 404
        assert (ledger.health(LEDGER), ledger.health("")) == (SERVING, SERVING)

        ledger.postgres.stop()
        started = time.monotonic()
        for response in (
            client.get(f"/api/v1/accounts/{account['id']}"),  # a pooled connection, now broken
            client.post("/api/v1/accounts", json=account),  # a new connection, refused
            client.get("/api/v1/accounts"),
        ):
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["code"] == "SERVICE_UNAVAILABLE" and "retry" in body["message"], body
            assert response.headers.get("retry-after") == "1"
        ledger.wait_for_health(LEDGER, NOT_SERVING, seconds=10)
        assert ledger.health("") == SERVING  # the process is alive: no reason to restart it

        EmbeddedPostgres.start(ledger.root, port=ledger.postgres.port)
        ledger.wait_for_health(LEDGER, SERVING, seconds=10)
        assert client.get(f"/api/v1/accounts/{account['id']}").status_code == 404  # the refused write left nothing
        assert client.post("/api/v1/accounts", json=account).status_code == 201
        assert time.monotonic() - started < 45


def test_a_draining_server_says_not_serving_before_it_stops(private_ledger: PrivateLedger) -> None:
    """Last in this module: it stops the private ledger."""
    with grpc.insecure_channel(private_ledger.address) as channel:
        updates = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=LEDGER), timeout=20)
        assert next(updates).status == SERVING
        os.kill(private_ledger.child.process.pid, signal.SIGTERM)
        assert next(updates).status == NOT_SERVING
        updates.cancel()
    private_ledger.child.process.wait(15)
