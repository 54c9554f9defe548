"""`payrecon migrate --wait`, the initContainer of every Kubernetes pod: it waits while any schema lacks
a migration (or the database does not answer) and lets the pod start once the migrations Job is done."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from services.cli import wait_for_migrations
from services.devstack.stack import create_database, drop_database
from services.provisioning import migrate_all, pending_migrations

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database_url(server_database_url: str) -> Iterator[str]:
    name = f"payrecon_wait_{secrets.token_hex(4)}"
    url = create_database(server_database_url, name)
    try:
        yield url
    finally:
        drop_database(server_database_url, name)


async def test_waits_until_every_schema_is_migrated(empty_database_url: str) -> None:
    environ = {"PAYRECON_DATABASE_URL": empty_database_url}
    before = await pending_migrations(environ)
    assert set(before) == {"ingest", "ledger", "reconciliation"} and all(before.values())
    assert await wait_for_migrations(0.2, environ, interval=0.05) == 1  # gives up: nothing applied yet

    await migrate_all({**environ, "PAYRECON_ENV": "development"})

    assert await pending_migrations(environ) == {}
    assert await wait_for_migrations(5, environ, interval=0.05) == 0


async def test_a_database_that_does_not_answer_is_waited_for_not_an_error() -> None:
    environ = {"PAYRECON_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    assert await wait_for_migrations(0.2, environ, interval=0.05) == 1
