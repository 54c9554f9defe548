"""A short fuzz of the public REST API through Envoy (`make fuzz` is the full run), and the requests
fuzzing once found answered with a 500 or outside the one error shape, pinned as regressions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import wait_for_outcome
from tests.fuzz.rest_fuzzer import RestFuzzer, error_shape_problem

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": "Bearer demo-token-for-testing"}
SHORT_RUN = 300
CSV_MAPPING = {
    "delimiter": ",",
    "has_header": True,
    "date": "date",
    "amount": "amount",
    "reference": "reference",
    "date_format": "%Y-%m-%d",
    "currency": "USD",
    "account": "FUZZ-BANK",
}


def test_generated_requests_get_no_server_error_and_refused_ones_leave_no_row(stack: Stack) -> None:
    fuzzer = RestFuzzer(stack.base_url, stack.env["PAYRECON_DATABASE_URL"])
    report = fuzzer.run(SHORT_RUN, max_seconds=35, check_exploring=False)
    print(report.summary())
    assert report.requests >= SHORT_RUN // 2, report.summary()  # the time bound may cut a slow run short
    assert len(report.by_operation) >= 25, report.summary()  # every route but the two streams
    assert report.rejected_writes_checked > 0, report.summary()
    assert report.server_errors == 0 and not report.violations, report.summary()


# (method, path, extra headers, JSON body, expected status, expected code); each answered 500 or
# a body outside {code, message, details} before its fix.
FOUND: list[tuple[str, str, dict[str, str], Any, int, str]] = [
    # A header name gRPC metadata cannot carry: the services' gRPC runtime refused the call (INTERNAL).
    ("GET", "/api/v1/accounts?limit=1", {"foo#bar": "1"}, None, 200, ""),
    ("GET", "/api/v1/accounts?limit=1", {"x-bin": "!!!"}, None, 200, ""),
    ("GET", "/api/v1/accounts?limit=1", {"grpc-timeout": "soon"}, None, 200, ""),
    # An unknown query parameter left the request untranscoded: 404 ROUTE_NOT_FOUND on a real route.
    ("GET", "/api/v1/accounts?limit=1&utm_source=mail", {}, None, 200, ""),
    ("GET", "/api/v1/accounts/nobody-fuzz/balance?verbose=1", {}, None, 404, "LEDGER_ACCOUNT_NOT_FOUND"),
    # Ages beyond what a datetime can reach back overflowed: INTERNAL.
    ("GET", "/api/v1/discrepancies?minAgeSeconds=600431759005450569", {}, None, 400, "INVALID_AGE"),
    ("GET", "/api/v1/transactions/pending?olderThanSeconds=9223372036854775807", {}, None, 400, "INVALID_AGE"),
    # A broken file answered 400 with the import summary instead of the error shape.
    (
        "POST",
        "/api/v1/statements",
        {},
        {
            "accountId": "fuzz-bank",
            "format": "CSV",
            "content": "date,amount,reference\nxx,1.00,r\n",
            "csvMapping": CSV_MAPPING,
        },
        400,
        "STATEMENT_INVALID",
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "code"), FOUND)
def test_what_fuzzing_found_stays_fixed(
    stack: Stack, method: str, path: str, headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    response = httpx.request(method, stack.base_url + path, headers={**AUTH, **headers}, json=body, timeout=30)
    assert response.status_code == status, response.text
    if status >= 400:
        assert error_shape_problem({"content-type": [response.headers["content-type"]]}, response.content) is None
        assert response.json()["code"] == code


def test_an_amount_beyond_matching_range_still_reconciles(stack: Stack) -> None:
    """A transfer of 17,930,859,886,660,936.00 fits the ledger (int64 minor units) but not the matching
    engine: reconcile answered 500 for its account, and continuous matching failed for ever."""
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=60) as client:
        account = "fuzz-huge-source"
        transfer = {
            "source_account_id": account,
            "destination_account_id": "fuzz-huge-sink",
            "amount": "17930859886660936.00",
        }
        accepted = client.post("/api/v1/transactions", json={"transaction": transfer, "idempotencyKey": "fuzz-huge-1"})
        assert accepted.status_code == 202, accepted.text
        assert wait_for_outcome(client, "fuzz-huge-1")["status"] == "COMPLETED"
        day = datetime.now(UTC).date().isoformat()
        content = f"date,amount,reference\n{day},-1.00,elsewhere\n"
        statement = {"accountId": account, "format": "CSV", "content": content, "csvMapping": CSV_MAPPING}
        assert client.post("/api/v1/statements", json=statement).status_code in (200, 201)
        report = client.post(f"/api/v1/accounts/{account}/reconcile", json={"startDate": day, "endDate": day})
        assert report.status_code == 200, report.text
