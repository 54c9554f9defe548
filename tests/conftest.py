"""Shared fixtures: real PostgreSQL and Redis (from PAYRECON_DATABASE_URL / PAYRECON_REDIS_URL, else
embedded), a real SQS server, and — for e2e — `start_stack`: the whole stack behind a real Envoy (the
stacks e2e modules share are in tests/e2e/conftest.py)."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.stack import Stack, StackOptions, create_database, default_state_dir, drop_database

READ_ONLY_TOKEN = "read-only-test-token"
# Granted `*`: every public scope, never an internal one.
PUBLIC_SCOPES_TOKEN = "public-scopes-test-token"
# A service-to-service token: the ledger's internal scope only.
INTERNAL_TOKEN = "ledger-internal-test-token"


@pytest.fixture(scope="session")
def state_dir() -> Path:
    path = default_state_dir() / "tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def server_database_url(state_dir: Path) -> Iterator[str]:
    url = os.environ.get("PAYRECON_DATABASE_URL")
    if url:
        yield url
        return
    from services.devstack.postgres import EmbeddedPostgres

    postgres = EmbeddedPostgres.start(state_dir)
    try:
        yield postgres.url
    finally:
        postgres.stop()


@pytest.fixture(scope="session")
def redis_url(state_dir: Path) -> Iterator[str]:
    url = os.environ.get("PAYRECON_REDIS_URL")
    if url:
        yield url
        return
    from services.devstack.redis_server import EmbeddedRedis

    redis = EmbeddedRedis.start(state_dir)
    try:
        yield redis.url
    finally:
        redis.stop()


@pytest.fixture(scope="session")
def database_url(server_database_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    name = f"payrecon_it_{secrets.token_hex(4)}"
    url = create_database(server_database_url, name)
    try:
        yield url
    finally:
        drop_database(server_database_url, name)


@pytest.fixture(scope="session")
def sqs_endpoint(state_dir: Path) -> Iterator[str]:
    from services.devstack.sqs_server import SqsServer

    server = SqsServer.start(state_dir)
    try:
        yield server.url
    finally:
        server.stop()


class StackStops:
    """Stacks stopped in the background: a stack's processes take up to a long poll (5 s) to finish,
    and the next module's stack starts meanwhile. The session waits for every stop before it ends,
    and fails with what a stop raised."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def stop(self, stack: Stack) -> None:
        def run() -> None:
            try:
                stack.stop()
            except BaseException as error:
                self._errors.append(error)

        thread = threading.Thread(target=run, name=f"stop stack {stack.base_url}")
        thread.start()
        self._threads.append(thread)

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]


@pytest.fixture(scope="session")
def stack_stops(server_database_url: str, redis_url: str, sqs_endpoint: str) -> Iterator[StackStops]:
    """Waits for the stops at the end, before what the stacks use (the server's PostgreSQL, Redis, the
    shared SQS server) is torn down: it depends on them, so it goes first."""
    stops = StackStops()
    try:
        yield stops
    finally:
        stops.wait()


def start_stack(
    server_database_url: str,
    redis_url: str,
    state_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    ingest_processes: int | None = 1,
    sqs_url: str | None = None,
) -> Stack:
    """The whole system: services, worker and Envoy, on free ports, with its own database and queues.
    One ingest process unless asked (None: INGEST_PROCESSES, else one per two cores, as `make run`). Its
    queues live on `sqs_url` (the session's server: `sqs_endpoint`) unless the test takes SQS away,
    then on a server of its own (None)."""
    from services.devstack.processes import free_port
    from services.kernel.config import hash_token

    # Besides the development demo token: tokens to check scopes (403), public and internal.
    tokens = ";".join(
        (
            f"reader:{hash_token(READ_ONLY_TOKEN)}:transactions:read,accounts:read",
            f"public:{hash_token(PUBLIC_SCOPES_TOKEN)}:*",
            f"ledger-client:{hash_token(INTERNAL_TOKEN)}:ledger:internal",
        )
    )
    return Stack(
        StackOptions(
            http_port=free_port(),
            database_url=server_database_url,
            redis_url=redis_url,
            state_dir=state_dir,
            isolated=True,
            extra_env={"PAYRECON_API_TOKENS": tokens, **(extra_env or {})},
            ingest_processes=ingest_processes,
            sqs_url=sqs_url,
        )
    ).start()
