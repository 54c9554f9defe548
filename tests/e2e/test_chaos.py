"""The short version of `make chaos`: a few hundred transfers and holds through Envoy, with
duplicates and concurrent same-key requests, while the ledger worker is SIGKILLed, Redis is flushed
and the SQS server is restarted empty; then nothing accepted is lost, posted twice or stuck, and the
ledger adds up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.stack import Stack
from tests.chaos.run import ChaosConfig, chaos_stack_options, run_chaos
from tests.conftest import StackStops

pytestmark = pytest.mark.e2e
CONFIG = ChaosConfig.short()


@pytest.fixture(scope="module")
def chaos_stack(server_database_url: str, state_dir: Path, stack_stops: StackStops) -> Iterator[Stack]:
    """Its own Redis (flushed here) and SQS server; the session's PostgreSQL, never restarted here."""
    stack = Stack(chaos_stack_options(state_dir, CONFIG, server_database_url)).start()
    try:
        yield stack
    finally:
        stack_stops.stop(stack)


def test_nothing_accepted_is_lost_or_applied_twice_through_crashes_flushes_and_restarts(chaos_stack: Stack) -> None:
    verdict = asyncio.run(run_chaos(chaos_stack, CONFIG))
    assert verdict.ok, verdict.table()
    assert verdict.accepted >= 100, verdict.table()
    assert sorted(f.name for f in verdict.faults) == ["flush-redis", "kill-worker", "restart-sqs"], verdict.table()
