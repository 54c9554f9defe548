"""Bad input on every route but POST /transactions (tests/e2e/test_ingest_guarantees.py has those),
through Envoy: each is a 4xx with a stable code and a message in the API's error shape
{code, message, details}, never a 5xx, and nothing is stored."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_ingest_guarantees import fetch
from tests.e2e.test_rest_flow import AUTH

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:8]
# Set up once by the `client` fixture: an account, and a hold of 10.00 from it to post too much of.
PAYER = f"bad-payer-{RUN}"
PAYER_LEDGER = f"/api/v1/accounts/{PAYER}/ledger"
HOLD = f"bad-input-hold-{RUN}"


def cursor(text: str) -> str:
    """A cursor as the API encodes them, around any text (so: one it never returned)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    content: str | None = None

    def __str__(self) -> str:
        return self.name


ACCOUNT = {"id": f"bad-acct-{RUN}", "currency": "USD", "type": "ASSET"}
HOLD_BODY = {
    "idempotencyKey": f"bad-hold-{RUN}",
    "sourceAccountId": f"bad-src-{RUN}",
    "destinationAccountId": f"bad-dst-{RUN}",
    "amount": "1.00",
}
WINDOW = {"startDate": "2026-01-01", "endDate": "2026-01-31"}
LONG_ID = "x" * 300

CASES = [
    # -- cursors ----------------------------------------------------------------------------------
    Case("history: garbage cursor", "GET", PAYER_LEDGER, 400, "INVALID_CURSOR", params={"cursor": "!!"}),
    Case(
        "history: another route's cursor",
        "GET",
        PAYER_LEDGER,
        400,
        "INVALID_CURSOR",
        params={"cursor": cursor("a:a1")},
    ),
    Case(
        "history: cursor past int64",
        "GET",
        PAYER_LEDGER,
        400,
        "INVALID_CURSOR",
        params={"cursor": cursor("e:99999999999999999999")},
    ),
    Case(
        "history: cursor of another kind of digit",
        "GET",
        PAYER_LEDGER,
        400,
        "INVALID_CURSOR",
        params={"cursor": cursor("e:\u00b2")},
    ),
    Case(
        "history: cursor with a sign",
        "GET",
        PAYER_LEDGER,
        400,
        "INVALID_CURSOR",
        params={"cursor": cursor("e:-5")},
    ),
    Case("accounts: garbage cursor", "GET", "/api/v1/accounts", 400, "INVALID_CURSOR", params={"cursor": "%%%"}),
    Case(
        "accounts: another route's cursor",
        "GET",
        "/api/v1/accounts",
        400,
        "INVALID_CURSOR",
        params={"cursor": cursor("e:12")},
    ),
    Case(
        "accounts: cursor holding a NUL",
        "GET",
        "/api/v1/accounts",
        400,
        "INVALID_CURSOR",
        params={"cursor": cursor("a:x\x00y")},
    ),
    # -- limits -----------------------------------------------------------------------------------
    Case("history: negative limit", "GET", PAYER_LEDGER, 400, "INVALID_LIMIT", params={"limit": "-1"}),
    Case("history: limit 501", "GET", PAYER_LEDGER, 400, "INVALID_LIMIT", params={"limit": "501"}),
    Case(
        "history: limit not a number",
        "GET",
        PAYER_LEDGER,
        400,
        "INVALID_REQUEST",
        params={"limit": "ten"},
    ),
    Case("accounts: negative limit", "GET", "/api/v1/accounts", 400, "INVALID_LIMIT", params={"limit": "-7"}),
    Case("accounts: limit 501", "GET", "/api/v1/accounts", 400, "INVALID_LIMIT", params={"limit": "501"}),
    Case(
        "accounts: limit beyond int32",
        "GET",
        "/api/v1/accounts",
        400,
        "INVALID_REQUEST",
        params={"limit": "99999999999"},
    ),
    Case("accounts: fractional limit", "GET", "/api/v1/accounts", 400, "INVALID_REQUEST", params={"limit": "1.5"}),
    Case(
        "balance: asOf not a timestamp",
        "GET",
        "/api/v1/accounts/a1/balance",
        400,
        "INVALID_REQUEST",
        params={"asOf": "yesterday"},
    ),
    # -- accounts ---------------------------------------------------------------------------------
    Case(
        "account: unknown currency",
        "POST",
        "/api/v1/accounts",
        400,
        "UNKNOWN_CURRENCY",
        json={**ACCOUNT, "currency": "ZZZ"},
    ),
    Case(
        "account: malformed currency",
        "POST",
        "/api/v1/accounts",
        400,
        "INVALID_CURRENCY",
        json={**ACCOUNT, "currency": "US1"},
    ),
    Case(
        "account: unknown type",
        "POST",
        "/api/v1/accounts",
        400,
        "INVALID_ACCOUNT_TYPE",
        json={**ACCOUNT, "type": "ROCK"},
    ),
    Case("account: type as a number", "POST", "/api/v1/accounts", 400, "INVALID_REQUEST", json={**ACCOUNT, "type": 5}),
    Case(
        "account: negative overdraftLimit",
        "POST",
        "/api/v1/accounts",
        400,
        "INVALID_AMOUNT",
        json={**ACCOUNT, "overdraftLimit": "-1.00"},
    ),
    Case(
        "account: overdraftLimit with 3 decimals",
        "POST",
        "/api/v1/accounts",
        400,
        "AMOUNT_PRECISION",
        json={**ACCOUNT, "overdraftLimit": "1.001"},
    ),
    Case(
        "account: overdraftLimit not a number",
        "POST",
        "/api/v1/accounts",
        400,
        "INVALID_AMOUNT",
        json={**ACCOUNT, "overdraftLimit": "lots"},
    ),
    Case(
        "account: overdraftLimit beyond int64",
        "POST",
        "/api/v1/accounts",
        400,
        "AMOUNT_OUT_OF_RANGE",
        json={**ACCOUNT, "overdraftLimit": "1" + "0" * 20},
    ),
    Case(
        "account: overdraftLimit a boolean",
        "POST",
        "/api/v1/accounts",
        400,
        "INVALID_AMOUNT",
        json={**ACCOUNT, "overdraftLimit": True},
    ),
    Case("account: no id", "POST", "/api/v1/accounts", 400, "MISSING_FIELD", json={"currency": "USD"}),
    Case(
        "account: id with a slash", "POST", "/api/v1/accounts", 400, "INVALID_ACCOUNT_ID", json={**ACCOUNT, "id": "a/b"}
    ),
    Case(
        "account: id too long", "POST", "/api/v1/accounts", 400, "INVALID_ACCOUNT_ID", json={**ACCOUNT, "id": LONG_ID}
    ),
    Case(
        "account: metadata with a NUL",
        "POST",
        "/api/v1/accounts",
        400,
        "INVALID_METADATA",
        json={**ACCOUNT, "metadata": {"k": "a\u0000b"}},
    ),
    Case("account: body not JSON", "POST", "/api/v1/accounts", 400, "INVALID_REQUEST", content="{not json"),
    Case("account: body an array", "POST", "/api/v1/accounts", 400, "INVALID_REQUEST", content="[]"),
    # -- holds ------------------------------------------------------------------------------------
    Case("hold: zero amount", "POST", "/api/v1/holds", 400, "INVALID_AMOUNT", json={**HOLD_BODY, "amount": 0}),
    Case("hold: negative amount", "POST", "/api/v1/holds", 400, "INVALID_AMOUNT", json={**HOLD_BODY, "amount": "-1"}),
    Case(
        "hold: too many decimals",
        "POST",
        "/api/v1/holds",
        400,
        "AMOUNT_PRECISION",
        json={**HOLD_BODY, "amount": "1.001"},
    ),
    Case(
        "hold: no amount",
        "POST",
        "/api/v1/holds",
        400,
        "MISSING_FIELD",
        json={k: v for k, v in HOLD_BODY.items() if k != "amount"},
    ),
    Case(
        "hold: amount beyond a double",
        "POST",
        "/api/v1/holds",
        400,
        "INVALID_REQUEST",
        content='{"idempotencyKey":"k-' + RUN + '","sourceAccountId":"s","destinationAccountId":"d","amount":1e400}',
    ),
    Case(
        "hold: unknown currency",
        "POST",
        "/api/v1/holds",
        400,
        "UNKNOWN_CURRENCY",
        json={**HOLD_BODY, "currency": "ZZZ"},
    ),
    Case(
        "hold: same accounts",
        "POST",
        "/api/v1/holds",
        400,
        "SAME_ACCOUNT",
        json={**HOLD_BODY, "destinationAccountId": HOLD_BODY["sourceAccountId"]},
    ),
    Case(
        "hold: no key",
        "POST",
        "/api/v1/holds",
        400,
        "MISSING_FIELD",
        json={k: v for k, v in HOLD_BODY.items() if k != "idempotencyKey"},
    ),
    Case(
        "hold: expiresAt in the past",
        "POST",
        "/api/v1/holds",
        400,
        "INVALID_DATE",
        json={**HOLD_BODY, "expiresAt": "2020-01-01T00:00:00Z"},
    ),
    Case(
        "hold: malformed expiresAt",
        "POST",
        "/api/v1/holds",
        400,
        "INVALID_REQUEST",
        json={**HOLD_BODY, "expiresAt": "tomorrow"},
    ),
    Case(
        "hold post: more than held",
        "POST",
        f"/api/v1/holds/{HOLD}/post",
        400,
        "LEDGER_AMOUNT_EXCEEDS_HOLD",
        json={"amount": "10.01"},
    ),
    Case("hold post: zero", "POST", f"/api/v1/holds/{HOLD}/post", 400, "INVALID_AMOUNT", json={"amount": "0"}),
    Case("hold post: negative", "POST", f"/api/v1/holds/{HOLD}/post", 400, "INVALID_AMOUNT", json={"amount": -1}),
    Case(
        "hold post: too many decimals",
        "POST",
        f"/api/v1/holds/{HOLD}/post",
        400,
        "AMOUNT_PRECISION",
        json={"amount": 1.001},
    ),
    Case("unknown hold: get", "GET", f"/api/v1/holds/nothing-{RUN}", 404, "LEDGER_HOLD_NOT_FOUND"),
    Case("unknown hold: post", "POST", f"/api/v1/holds/nothing-{RUN}/post", 404, "LEDGER_HOLD_NOT_FOUND", json={}),
    Case("unknown hold: void", "POST", f"/api/v1/holds/nothing-{RUN}/void", 404, "LEDGER_HOLD_NOT_FOUND", json={}),
    # -- reversals --------------------------------------------------------------------------------
    Case("reverse: no key", "POST", f"/api/v1/transfers/t-{RUN}/reverse", 400, "MISSING_FIELD", json={"reason": "r"}),
    Case(
        "reverse: bad key",
        "POST",
        f"/api/v1/transfers/t-{RUN}/reverse",
        400,
        "INVALID_IDEMPOTENCY_KEY",
        json={"idempotencyKey": "has space"},
    ),
    Case(
        "reverse: reason too long",
        "POST",
        f"/api/v1/transfers/t-{RUN}/reverse",
        400,
        "INVALID_REASON",
        json={"idempotencyKey": f"undo-{RUN}", "reason": "r" * 501},
    ),
    Case(
        "reverse: unknown transfer",
        "POST",
        f"/api/v1/transfers/t-{RUN}/reverse",
        404,
        "LEDGER_TRANSFER_NOT_FOUND",
        json={"idempotencyKey": f"undo-{RUN}"},
    ),
    # -- reconcile --------------------------------------------------------------------------------
    Case(
        "reconcile: malformed start",
        "POST",
        "/api/v1/accounts/a1/reconcile",
        400,
        "INVALID_DATE",
        json={**WINDOW, "startDate": "01/01/2026"},
    ),
    Case(
        "reconcile: impossible date",
        "POST",
        "/api/v1/accounts/a1/reconcile",
        400,
        "INVALID_DATE",
        json={**WINDOW, "endDate": "2026-02-30"},
    ),
    Case(
        "reconcile: end before start",
        "POST",
        "/api/v1/accounts/a1/reconcile",
        400,
        "INVALID_DATE_RANGE",
        json={"startDate": "2026-02-01", "endDate": "2026-01-01"},
    ),
    Case(
        "reconcile: no end",
        "POST",
        "/api/v1/accounts/a1/reconcile",
        400,
        "MISSING_FIELD",
        json={"startDate": "2026-01-01"},
    ),
    Case(  # windows have no length limit (issue 10): a long one over an unknown account is a 404
        "reconcile: a thirty-year window over an unknown account",
        "POST",
        "/api/v1/accounts/a1/reconcile",
        404,
        "RECON_ACCOUNT_NOT_FOUND",
        json={"startDate": "2000-01-01", "endDate": "2030-01-01"},
    ),
    Case(
        "reconcile: date as a number",
        "POST",
        "/api/v1/accounts/a1/reconcile",
        400,
        "INVALID_REQUEST",
        json={**WINDOW, "startDate": 20260101},
    ),
]

# -- every id path parameter: bad characters, too long, an encoded slash, an encoded NUL -----------
ID_ROUTES = [
    ("GET", "/api/v1/accounts/{}/balance", "INVALID_ACCOUNT_ID", None),
    ("GET", "/api/v1/accounts/{}/ledger", "INVALID_ACCOUNT_ID", None),
    ("GET", "/api/v1/accounts/{}", "INVALID_ACCOUNT_ID", None),
    ("POST", "/api/v1/accounts/{}/reconcile", "INVALID_ACCOUNT_ID", WINDOW),
    ("GET", "/api/v1/transactions/status/{}", "INVALID_IDEMPOTENCY_KEY", None),
    ("GET", "/api/v1/holds/{}", "INVALID_IDEMPOTENCY_KEY", None),
    ("POST", "/api/v1/holds/{}/post", "INVALID_IDEMPOTENCY_KEY", {}),
    ("POST", "/api/v1/holds/{}/void", "INVALID_IDEMPOTENCY_KEY", {}),
    ("POST", "/api/v1/transfers/{}/reverse", "INVALID_IDEMPOTENCY_KEY", {"idempotencyKey": f"undo-{RUN}"}),
    ("GET", "/api/v1/transfers/{}", "INVALID_IDEMPOTENCY_KEY", None),
]
BAD_IDS = [("bad characters", "bad%24id%20here"), ("too long", LONG_ID), ("NUL", "a%00b"), ("final newline", "ab%0A")]
CASES += [
    Case(f"{path.format('{id}')} {method}: {what}", method, path.format(value), 400, code, json=body)
    for method, path, code, body in ID_ROUTES
    for what, value in BAD_IDS
]
# A list's optional account filter is an account id like any other (a NUL once reached PostgreSQL).
CASES += [
    Case(f"{path} accountId filter: {what}", "GET", path, 400, "INVALID_ACCOUNT_ID", params={"accountId": value})
    for path in ("/api/v1/reconciliations", "/api/v1/discrepancies")
    for what, value in (("NUL", "a\x00b"), ("bad characters", "bad$id here"), ("too long", LONG_ID))
]
# An encoded slash either reaches the service as part of the id (refused as malformed) or matches
# no route at all: either way a 4xx with a stable code, checked below.
SLASHED = [
    Case(f"{path.format('{id}')} {method}: encoded slash", method, path.format("a%2Fb"), 0, "", json=body)
    for method, path, _, body in ID_ROUTES
]

STORED = (
    "SELECT (SELECT count(*) FROM ledger.accounts) AS accounts, (SELECT count(*) FROM ledger.transfers) AS transfers,"
    " (SELECT count(*) FROM ledger.entries) AS entries, (SELECT count(*) FROM ingest.requests) AS requests,"
    " (SELECT count(*) FROM reconciliation.runs) AS runs"
)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as c:
        # The hold some cases post too much of: 10.00 from an account that may overdraw.
        for account in (PAYER, f"bad-payee-{RUN}"):
            opened = c.post("/api/v1/accounts", json={"id": account, "currency": "USD", "allowOverdraft": True})
            assert opened.status_code == 201, opened.text
        hold = c.post(
            "/api/v1/holds",
            json={
                "idempotencyKey": HOLD,
                "sourceAccountId": PAYER,
                "destinationAccountId": f"bad-payee-{RUN}",
                "amount": "10.00",
            },
        )
        assert hold.status_code == 200, hold.text
        yield c


def send(client: httpx.Client, case: Case) -> httpx.Response:
    if case.content is not None:
        return client.request(
            case.method, case.path, content=case.content, headers={"Content-Type": "application/json"}
        )
    return client.request(case.method, case.path, params=case.params, json=case.json)


def assert_refused(stack: Stack, client: httpx.Client, case: Case) -> dict[str, Any]:
    before = dict(fetch(stack, STORED)[0])
    response = send(client, case)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert isinstance(body["code"], str) and body["code"].isupper() and body["message"], body
    assert dict(fetch(stack, STORED)[0]) == before, "a refused request stored something"
    return {"status": response.status_code, **body}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_a_4xx_with_a_stable_code_and_stores_nothing(
    stack: Stack, client: httpx.Client, case: Case
) -> None:
    answer = assert_refused(stack, client, case)
    assert (answer["status"], answer["code"]) == (case.status, case.code), answer


@pytest.mark.parametrize("case", SLASHED, ids=str)
def test_an_encoded_slash_in_an_id_is_a_4xx(stack: Stack, client: httpx.Client, case: Case) -> None:
    answer = assert_refused(stack, client, case)
    assert (answer["status"], answer["code"]) in {
        (400, "INVALID_ACCOUNT_ID"),
        (400, "INVALID_IDEMPOTENCY_KEY"),
        (404, "ROUTE_NOT_FOUND"),
    }, answer


def test_limit_zero_means_the_default_page(client: httpx.Client) -> None:
    assert client.get("/api/v1/accounts", params={"limit": "0"}).status_code == 200
    assert client.get(PAYER_LEDGER, params={"limit": "0"}).status_code == 200
