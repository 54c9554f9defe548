"""Ingest's promises through Envoy, checked in the database behind it: one transfer per key under
concurrency and a Redis flush, and bad input refused with nothing stored anywhere."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
        yield c


def fetch(stack: Stack, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.env["PAYRECON_DATABASE_URL"])
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def ledger_rows_for(stack: Stack, transfer_id: str) -> tuple[int, int]:
    """(transfers, entries) the ledger holds for `transfer_id`."""
    row = fetch(
        stack,
        "SELECT (SELECT count(*) FROM ledger.transfers WHERE id = $1) AS transfers,"
        " (SELECT count(*) FROM ledger.entries WHERE transfer_id = $1) AS entries",
        transfer_id,
    )[0]
    return row["transfers"], row["entries"]


def test_fifty_concurrent_requests_with_one_key_move_money_once(stack: Stack, client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    key, source = f"burst-{run}", f"burst-src-{run}"
    body = seed_body(key, source, f"burst-dst-{run}", "12.34")

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30, limits=limits) as c:
            return await asyncio.gather(*(c.post("/api/v1/transactions", json=body) for _ in range(50)))

    responses = asyncio.run(burst())
    accepted = [r.json() for r in responses if r.status_code == 202]
    assert all(r.status_code in (202, 409) for r in responses), [r.text for r in responses if r.status_code != 202]
    assert accepted, "no caller was accepted"
    assert len({a["messageId"] for a in accepted}) == 1
    assert sum(1 for a in accepted if not a["replayed"]) == 1  # one original, the rest are replays

    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    assert ledger_rows_for(stack, key) == (1, 2)
    assert client.get(f"/api/v1/accounts/{source}/balance").json()["balance"] == "-12.34"
    assert fetch(stack, "SELECT count(*) AS n FROM ingest.outbox WHERE idempotency_key = $1", key)[0]["n"] == 1


def test_a_redis_flush_between_two_identical_requests_still_moves_money_once(
    stack: Stack, client: httpx.Client
) -> None:
    run = uuid.uuid4().hex[:8]
    key, source = f"flush-{run}", f"flush-src-{run}"
    body = seed_body(key, source, f"flush-dst-{run}", 7)
    first = client.post("/api/v1/transactions", json=body)
    assert first.status_code == 202

    prefix = stack.env["INGEST_CACHE_PREFIX"]
    cache = redis.Redis.from_url(stack.env["PAYRECON_REDIS_URL"])
    try:
        assert cache.exists(prefix + key) == 1  # the fast path was really in use
        flushed = [k for k in cache.scan_iter(match=prefix + "*")]
        cache.delete(*flushed)
        assert cache.exists(prefix + key) == 0
    finally:
        cache.close()

    second = client.post("/api/v1/transactions", json=body)
    assert second.status_code == 202
    assert second.json()["messageId"] == first.json()["messageId"]
    assert second.json()["replayed"] is True
    conflict = client.post("/api/v1/transactions", json=seed_body(key, source, f"flush-dst-{run}", 8))
    assert conflict.status_code == 409  # PostgreSQL, not Redis, is the truth
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    assert ledger_rows_for(stack, key) == (1, 2)
    assert client.get(f"/api/v1/accounts/{source}/balance").json()["balance"] == "-7.00"


def transfer(key: str, source: str, destination: str, amount: Any = 1, **extra: Any) -> bytes:
    return json.dumps(
        {
            "transaction": {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": amount,
                **extra,
            },
            "idempotencyKey": key,
        }
    ).encode()


def transfer_with_number(key: str, source: str, destination: str, literal: str) -> bytes:
    """A transfer whose amount is the JSON number `literal` exactly as written (json.dumps would
    write the shortest repr of Python's double instead)."""
    return transfer(key, source, destination, "AMOUNT").replace(b'"AMOUNT"', literal.encode())


# (case, payload built from a unique key K and account prefix A, expected code). Every case is a 400.
BAD_INPUT: list[tuple[str, Any, str]] = [
    ("malformed JSON", lambda k, a: b'{"transaction": ', "INVALID_REQUEST"),
    (
        "wrongly typed field",
        lambda k, a: json.dumps(
            {
                "transaction": {"source_account_id": 5, "destination_account_id": f"{a}-d", "amount": 1},
                "idempotencyKey": k,
            }
        ).encode(),
        "INVALID_REQUEST",
    ),
    ("no transaction", lambda k, a: json.dumps({"idempotencyKey": k}).encode(), "MISSING_FIELD"),
    (
        "no key",
        lambda k, a: json.dumps(
            {"transaction": {"source_account_id": f"{a}-s", "destination_account_id": f"{a}-d", "amount": 1}}
        ).encode(),
        "MISSING_FIELD",
    ),
    (
        "no amount",
        lambda k, a: json.dumps(
            {"transaction": {"source_account_id": f"{a}-s", "destination_account_id": f"{a}-d"}, "idempotencyKey": k}
        ).encode(),
        "MISSING_FIELD",
    ),
    (
        "no source",
        lambda k, a: json.dumps(
            {"transaction": {"destination_account_id": f"{a}-d", "amount": 1}, "idempotencyKey": k}
        ).encode(),
        "MISSING_FIELD",
    ),
    ("zero amount", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", 0), "INVALID_AMOUNT"),
    ("negative amount", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", -5), "INVALID_AMOUNT"),
    ("negative string amount", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", "-0.01"), "INVALID_AMOUNT"),
    ("not a number", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", "ten"), "INVALID_AMOUNT"),
    ("boolean amount", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", True), "INVALID_AMOUNT"),
    ("three decimals", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", 1.001), "AMOUNT_PRECISION"),
    ("three decimals as text", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", "1.001"), "AMOUNT_PRECISION"),
    ("decimals on yen", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", 1.5, currency="JPY"), "AMOUNT_PRECISION"),
    (
        "beyond int64 minor units",
        lambda k, a: transfer(k, f"{a}-s", f"{a}-d", "92233720368547758.08"),
        "AMOUNT_OUT_OF_RANGE",
    ),
    ("huge number", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", 1e20), "AMOUNT_OUT_OF_RANGE"),
    (
        "number a double cannot carry",
        lambda k, a: transfer_with_number(k, f"{a}-s", f"{a}-d", "90071992547409.93"),
        "AMOUNT_NOT_EXACT",
    ),
    ("unknown currency", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", currency="XYZ"), "UNKNOWN_CURRENCY"),
    ("malformed currency", lambda k, a: transfer(k, f"{a}-s", f"{a}-d", currency="US$"), "INVALID_CURRENCY"),
    ("same account", lambda k, a: transfer(k, f"{a}-s", f"{a}-s"), "SAME_ACCOUNT"),
    ("key too long", lambda k, a: transfer(k + "x" * 256, f"{a}-s", f"{a}-d"), "INVALID_IDEMPOTENCY_KEY"),
    ("key with spaces", lambda k, a: transfer(k + " two", f"{a}-s", f"{a}-d"), "INVALID_IDEMPOTENCY_KEY"),
    ("account id too long", lambda k, a: transfer(k, f"{a}-s" + "x" * 128, f"{a}-d"), "INVALID_ACCOUNT_ID"),
    ("account id with a slash", lambda k, a: transfer(k, f"{a}/s", f"{a}-d"), "INVALID_ACCOUNT_ID"),
    (
        "too much metadata",
        lambda k, a: transfer(k, f"{a}-s", f"{a}-d", metadata={f"m{i}": "v" for i in range(33)}),
        "INVALID_METADATA",
    ),
    (
        "NUL in metadata",
        lambda k, a: transfer(k, f"{a}-s", f"{a}-d", metadata={"note": "a\u0000b"}),
        "INVALID_METADATA",
    ),
]


@pytest.mark.parametrize(("case", "build", "code"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_400_with_a_stable_code_and_nothing_is_stored(
    stack: Stack, client: httpx.Client, case: str, build: Any, code: str
) -> None:
    run = uuid.uuid4().hex[:8]
    key, prefix = f"bad-{run}", f"bad-acct-{run}"
    requests_before = fetch(stack, "SELECT count(*) AS n FROM ingest.requests")[0]["n"]
    response = client.post(
        "/api/v1/transactions", content=build(key, prefix), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["message"]
    if code not in ("INVALID_REQUEST",):
        field = body["details"][0]["metadata"]["field"]
        assert field.split(".")[-1] in body["message"], body  # the message names the field

    assert fetch(stack, "SELECT count(*) AS n FROM ingest.requests")[0]["n"] == requests_before
    stored = fetch(
        stack,
        "SELECT (SELECT count(*) FROM ingest.requests WHERE idempotency_key LIKE $1)"
        " + (SELECT count(*) FROM ingest.outbox WHERE idempotency_key LIKE $1)"
        " + (SELECT count(*) FROM ledger.transfers WHERE id LIKE $1)"
        " + (SELECT count(*) FROM ledger.accounts WHERE id LIKE $2)"
        " + (SELECT count(*) FROM reconciliation.ledger_entries WHERE account_id LIKE $2) AS n",
        f"{key}%",
        f"{prefix}%",
    )
    assert stored[0]["n"] == 0
    assert client.get(f"/api/v1/transactions/status/{key}").status_code == 404


def test_an_amount_a_double_cannot_carry_is_exact_as_a_decimal_string(stack: Stack, client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"exact-{run}"
    response = client.post(
        "/api/v1/transactions", json=seed_body(key, f"exact-s-{run}", f"exact-d-{run}", "90071992547409.93")
    )
    assert response.status_code == 202, response.text
    stored = fetch(stack, "SELECT amount_minor FROM ingest.requests WHERE idempotency_key = $1", key)
    assert [row["amount_minor"] for row in stored] == [9007199254740993]
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    assert client.get(f"/api/v1/accounts/exact-d-{run}/balance").json()["balance"] == "90071992547409.93"


def test_status_of_a_malformed_key_is_a_400(client: httpx.Client) -> None:
    response = client.get("/api/v1/transactions/status/" + "k" * 300)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_IDEMPOTENCY_KEY"
