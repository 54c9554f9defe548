"""The ledger's REST surface through Envoy: accounts, holds (post, void, expiry, races), reversals,
history windows — and `payrecon ledger verify` over everything the suite posted."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
        yield c


def open_account(client: httpx.Client, account_id: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/accounts", json={"id": account_id, "currency": "USD", **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def funded_customer(client: httpx.Client, run: str, name: str, amount: str = "100.00") -> str:
    """A no-overdraft customer account holding `amount`, funded from an equity account."""
    customer = f"{name}-{run}"
    open_account(client, customer, type="LIABILITY", allowOverdraft=False)
    open_account(client, f"equity-{run}", type="EQUITY", allowOverdraft=True)
    key = f"fund-{name}-{run}"
    funding = client.post("/api/v1/transactions", json=seed_body(key, f"equity-{run}", customer, amount))
    assert funding.status_code == 202
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    return customer


def test_accounts_are_created_once_read_and_listed(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    body = {
        "id": f"acct-{run}",
        "currency": "eur",
        "type": "ASSET",
        "allowOverdraft": False,
        "overdraftLimit": "50.00",
        "metadata": {"owner": "treasury"},
    }
    created = client.post("/api/v1/accounts", json=body)
    assert created.status_code == 201, created.text
    account = created.json()
    assert (account["id"], account["currency"], account["type"]) == (f"acct-{run}", "EUR", "ASSET")
    assert (account["overdraftLimit"], account["balance"], account["available"]) == ("50.00", "0.00", "0.00")
    assert account["status"] == "ACTIVE" and account["createdAt"].endswith("Z")
    again = client.post("/api/v1/accounts", json=body)
    assert again.status_code == 200 and again.json()["id"] == f"acct-{run}"
    different = client.post("/api/v1/accounts", json={**body, "type": "LIABILITY"})
    assert different.status_code == 409
    assert different.json()["code"] == "LEDGER_ACCOUNT_EXISTS"

    assert client.get(f"/api/v1/accounts/acct-{run}").json()["metadata"] == {"owner": "treasury"}
    assert client.get(f"/api/v1/accounts/missing-{run}").status_code == 404
    bad = client.post("/api/v1/accounts", json={"id": f"x-{run}", "currency": "USD", "type": "ROCK"})
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_ACCOUNT_TYPE")

    seen, cursor = [], ""
    while True:
        page = client.get("/api/v1/accounts", params={"limit": 50, "cursor": cursor}).json()
        seen += [a["id"] for a in page["accounts"]]
        cursor = page.get("nextCursor", "")
        if not cursor:
            break
    assert f"acct-{run}" in seen
    assert seen == sorted(seen) and len(seen) == len(set(seen))


def test_a_hold_reserves_funds_then_posts_partly_and_cannot_be_settled_twice(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    alice = funded_customer(client, run, "alice")
    merchant = f"merchant-{run}"
    open_account(client, merchant)

    hold = client.post(
        "/api/v1/holds",
        json={
            "idempotencyKey": f"hold-{run}",
            "sourceAccountId": alice,
            "destinationAccountId": merchant,
            "amount": "30.00",
        },
    )
    assert hold.status_code == 200, hold.text
    assert (hold.json()["status"], hold.json()["amount"]) == ("PENDING", "30.00")
    balance = client.get(f"/api/v1/accounts/{alice}/balance").json()
    assert (balance["balance"], balance["pending"], balance["available"]) == ("100.00", "-30.00", "70.00")

    too_much = client.post(
        "/api/v1/holds",
        json={
            "idempotencyKey": f"hold2-{run}",
            "sourceAccountId": alice,
            "destinationAccountId": merchant,
            "amount": 70.01,
        },
    )
    assert too_much.status_code == 400
    assert too_much.json()["code"] == "LEDGER_INSUFFICIENT_FUNDS"
    same_key_other_amount = client.post(
        "/api/v1/holds",
        json={
            "idempotencyKey": f"hold-{run}",
            "sourceAccountId": alice,
            "destinationAccountId": merchant,
            "amount": "31",
        },
    )
    assert same_key_other_amount.status_code == 409

    posted = client.post(f"/api/v1/holds/hold-{run}/post", json={"amount": "10.00"})
    assert posted.status_code == 200, posted.text
    assert (posted.json()["status"], posted.json()["postedAmount"]) == ("POSTED", "10.00")
    assert client.post(f"/api/v1/holds/hold-{run}/post", json={"amount": "10.00"}).status_code == 200  # replay
    assert client.post(f"/api/v1/holds/hold-{run}/void", json={}).json()["code"] == "LEDGER_HOLD_ALREADY_RESOLVED"
    balance = client.get(f"/api/v1/accounts/{alice}/balance").json()
    assert (balance["balance"], balance["pending"], balance["available"]) == ("90.00", "0.00", "90.00")
    assert client.get(f"/api/v1/accounts/{merchant}/balance").json()["balance"] == "10.00"

    voided = client.post(
        "/api/v1/holds",
        json={
            "idempotencyKey": f"hold3-{run}",
            "sourceAccountId": alice,
            "destinationAccountId": merchant,
            "amount": 5,
        },
    )
    assert client.post(f"/api/v1/holds/{voided.json()['id']}/void", json={}).json()["status"] == "VOIDED"
    late_post = client.post(f"/api/v1/holds/hold3-{run}/post", json={})
    assert (late_post.status_code, late_post.json()["code"]) == (409, "LEDGER_HOLD_ALREADY_RESOLVED")
    assert client.get(f"/api/v1/accounts/{alice}/balance").json()["available"] == "90.00"


def test_a_hold_past_its_expiry_is_released_and_cannot_be_posted(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    alice = funded_customer(client, run, "expiring", "20.00")
    expires = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    client.post(
        "/api/v1/holds",
        json={
            "idempotencyKey": f"exp-{run}",
            "sourceAccountId": alice,
            "destinationAccountId": f"equity-{run}",
            "amount": "20.00",
            "expiresAt": expires,
        },
    ).raise_for_status()
    deadline = time.monotonic() + 15
    while client.get(f"/api/v1/holds/exp-{run}").json()["status"] == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert client.get(f"/api/v1/holds/exp-{run}").json()["status"] == "EXPIRED"
    assert client.get(f"/api/v1/accounts/{alice}/balance").json()["available"] == "20.00"
    response = client.post(f"/api/v1/holds/exp-{run}/post", json={})
    assert (response.status_code, response.json()["code"]) == (409, "LEDGER_HOLD_EXPIRED")


def test_two_hundred_racing_post_and_void_calls_leave_each_of_twenty_holds_in_one_final_state(
    stack: Stack, client: httpx.Client
) -> None:
    run = uuid.uuid4().hex[:8]
    payer = funded_customer(client, run, "racer", "1000.00")
    payee = f"payee-{run}"
    open_account(client, payee)
    holds = [f"race-{run}-{i}" for i in range(20)]
    for hold in holds:
        client.post(
            "/api/v1/holds",
            json={"idempotencyKey": hold, "sourceAccountId": payer, "destinationAccountId": payee, "amount": "10.00"},
        ).raise_for_status()
    calls = [(hold, random.choice(["post", "void"])) for hold in holds for _ in range(10)]
    random.shuffle(calls)

    async def race() -> list[tuple[str, str, int, dict[str, Any]]]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=60, limits=limits) as c:

            async def call(hold: str, action: str) -> tuple[str, str, int, dict[str, Any]]:
                response = await c.post(f"/api/v1/holds/{hold}/{action}", json={})
                return hold, action, response.status_code, response.json()

            return await asyncio.gather(*(call(h, a) for h, a in calls))

    results = asyncio.run(race())
    posted_total = 0
    for hold in holds:
        final = client.get(f"/api/v1/holds/{hold}").json()["status"]
        assert final in ("POSTED", "VOIDED")
        mine = [(action, status, body) for h, action, status, body in results if h == hold]
        winners = {action for action, status, _ in mine if status == 200}
        assert winners == {"post" if final == "POSTED" else "void"}, (hold, final, mine)
        losers = [body["code"] for action, status, body in mine if status != 200]
        assert set(losers) <= {"LEDGER_HOLD_ALREADY_RESOLVED"}, losers
        entries = fetch(stack, "SELECT count(*) AS n FROM ledger.entries WHERE transfer_id = $1", hold)[0]["n"]
        assert entries == (2 if final == "POSTED" else 0)
        posted_total += 1000 if final == "POSTED" else 0
    balance = client.get(f"/api/v1/accounts/{payer}/balance").json()
    assert int(balance["pendingMinor"]) == 0  # int64 prints as a JSON string (proto3 JSON mapping)
    assert int(balance["balanceMinor"]) == 100_000 - posted_total
    assert int(client.get(f"/api/v1/accounts/{payee}/balance").json()["balanceMinor"]) == posted_total


def test_a_posted_transfer_is_reversed_once_and_linked_both_ways(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"rev-src-{run}"
    assert client.post("/api/v1/transactions", json=seed_body(key, f"p-{run}", f"q-{run}", "12.00")).status_code == 202
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    reversed_ = client.post(
        f"/api/v1/transfers/{key}/reverse", json={"idempotencyKey": f"undo-{run}", "reason": "duplicate charge"}
    )
    assert reversed_.status_code == 201, reversed_.text
    body = reversed_.json()
    assert (body["kind"], body["reversesTransferId"], body["amount"]) == ("REVERSAL", key, "12.00")
    assert (body["sourceAccountId"], body["destinationAccountId"]) == (f"q-{run}", f"p-{run}")
    replay = client.post(
        f"/api/v1/transfers/{key}/reverse", json={"idempotencyKey": f"undo-{run}", "reason": "duplicate charge"}
    )
    assert replay.status_code == 200 and replay.json()["id"] == f"undo-{run}"
    twice = client.post(f"/api/v1/transfers/{key}/reverse", json={"idempotencyKey": f"undo2-{run}"})
    assert (twice.status_code, twice.json()["code"]) == (409, "LEDGER_NOT_REVERSIBLE")
    assert client.get(f"/api/v1/transfers/{key}").json()["reversedByTransferId"] == f"undo-{run}"
    assert client.get(f"/api/v1/accounts/p-{run}/balance").json()["balance"] == "0.00"
    assert client.get(f"/api/v1/transfers/nothing-{run}").status_code == 404


def test_history_can_be_windowed_by_date(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"win-{run}"
    assert client.post("/api/v1/transactions", json=seed_body(key, f"w1-{run}", f"w2-{run}", 3)).status_code == 202
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"
    path = f"/api/v1/accounts/w2-{run}/ledger"
    today = datetime.now(UTC).date()
    assert len(client.get(path, params={"since": today.isoformat()}).json()["entries"]) == 1
    assert client.get(path, params={"since": "2001-01-01", "until": "2001-01-02"}).json()["entries"] == []
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert len(client.get(path, params={"until": tomorrow}).json()["entries"]) == 1
    bad = client.get(path, params={"since": "last week"})
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_DATE")


def test_a_read_only_token_cannot_open_accounts_or_hold_funds(stack: Stack) -> None:
    from tests.conftest import READ_ONLY_TOKEN

    with httpx.Client(
        base_url=stack.base_url, timeout=10, headers={"Authorization": f"Bearer {READ_ONLY_TOKEN}"}
    ) as reader:
        assert reader.post("/api/v1/accounts", json={"id": "nope", "currency": "USD"}).status_code == 403
        assert reader.post("/api/v1/holds", json={"idempotencyKey": "nope"}).status_code == 403
        assert reader.get("/api/v1/accounts").status_code == 200


def test_the_whole_ledger_verifies(stack: Stack) -> None:
    """Runs last in this module: everything posted above, audited by the operator's command."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "ledger", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, "PAYRECON_DATABASE_URL": stack.env["PAYRECON_DATABASE_URL"]},
    )
    assert result.returncode == 0, result.stderr
    assert "ledger verified" in result.stdout
