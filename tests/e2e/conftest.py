"""Stacks several e2e modules share, so that fewer whole stacks start: each lives until the last e2e
test is done (package scope: not through the integration and unit tests that follow). A test that
stops a shared stack is marked `stops_shared_stack` and runs after every other e2e test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.stack import Stack
from tests.conftest import StackStops, start_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Moves the tests marked `stops_shared_stack` after the last other e2e test (order kept otherwise),
    still inside this package, so the shared stack they stop is not needed again."""
    here = Path(__file__).parent
    stopping = [item for item in items if item.get_closest_marker("stops_shared_stack")]
    if not stopping:
        return
    rest = [item for item in items if not item.get_closest_marker("stops_shared_stack")]
    last_e2e = max((i for i, item in enumerate(rest) if item.path.is_relative_to(here)), default=len(rest) - 1)
    items[:] = rest[: last_e2e + 1] + stopping + rest[last_e2e + 1 :]


@pytest.fixture(scope="package")
def stack(
    server_database_url: str, redis_url: str, state_dir: Path, sqs_endpoint: str, stack_stops: StackStops
) -> Iterator[Stack]:
    """The stack most e2e modules drive: one ingest process, default settings."""
    running = start_stack(server_database_url, redis_url, state_dir, sqs_url=sqs_endpoint)
    try:
        yield running
    finally:
        stack_stops.stop(running)


@pytest.fixture(scope="package")
def two_ingest_stack(
    server_database_url: str, redis_url: str, state_dir: Path, sqs_endpoint: str, stack_stops: StackStops
) -> Iterator[Stack]:
    """Two ingest processes behind Envoy, as INGEST_PROCESSES=2 asks: two outbox relays share one
    outbox, and one ingest process keeps serving while the other drains. No redrive (an hour): no
    safety net re-publishes what a drain might drop, so a drain alone must lose nothing.

    Shared by test_ingest_processes, test_order_per_account and test_sigterm_drain (which starts
    again every process it stops); test_ingest_processes' last test stops it."""
    running = start_stack(
        server_database_url,
        redis_url,
        state_dir,
        {"INGEST_PROCESSES": "2", "INGEST_REDRIVE_AFTER_SECONDS": "3600"},
        ingest_processes=None,
        sqs_url=sqs_endpoint,
    )
    try:
        yield running
    finally:
        stack_stops.stop(running)


@pytest.fixture(scope="module")
def schema_stack(
    server_database_url: str, redis_url: str, state_dir: Path, sqs_endpoint: str, stack_stops: StackStops
) -> Iterator[Stack]:
    """A stack, and so a database, for each module that asks for it: a schema applied holds for its
    whole database. Ingest learns a newly applied schema within 100 ms, which keeps the tests quick."""
    running = start_stack(
        server_database_url, redis_url, state_dir, {"INGEST_SCHEMA_REFRESH_MS": "100"}, sqs_url=sqs_endpoint
    )
    try:
        yield running
    finally:
        stack_stops.stop(running)
