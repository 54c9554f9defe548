"""A run's report downloaded as a file, through Envoy with the token (CSV and JSON), and with the CLI
over gRPC: one row per match and per case, exact amounts, references with commas and quotes intact."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH
from tests.e2e.test_statements import camt053, post_transfer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def run_id(client: httpx.Client) -> str:
    run = uuid.uuid4().hex[:8]
    bank = f"bank-export-{run}"
    opened = client.post(
        "/api/v1/accounts", json={"id": bank, "currency": "EUR", "type": "ASSET", "allowOverdraft": True}
    )
    assert opened.status_code == 201, opened.text
    post_transfer(client, f"exp-1-{run}", bank, f"cust-{run}", "1234.56", f"E2E-X1-{run}")
    day = datetime.now(UTC).date().isoformat()
    # The fee's bank reference has a comma and quotes (escaped for XML).
    statement = camt053(
        "DE89370400440532013000",
        day,
        "0.00",
        "1192.56",
        [
            ("1234.56", "CRDT", f"X1-{run}", f"E2E-X1-{run}"),
            ("42.00", "DBIT", f"FEE, &quot;Q4&quot; {run}", "NOTPROVIDED"),
        ],
    )
    assert client.post("/api/v1/statements", json={"accountId": bank, "content": statement}).status_code == 201
    report = client.post(f"/api/v1/accounts/{bank}/reconcile", json={"startDate": day, "endDate": day})
    assert report.status_code == 200, report.text
    return str(report.json()["report_id"])


def test_a_run_exports_as_csv_through_the_gateway(client: httpx.Client, run_id: str) -> None:
    response = client.get(f"/api/v1/reconciliations/{run_id}/export", params={"format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers.get("content-disposition", "")
    assert response.text.startswith("record,run_id,account_id,kind,") and response.text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    (match,) = [r for r in rows if r["record"] == "match"]
    assert (match["kind"], match["amount"], match["currency"], match["rule"]) == (
        "ONE_TO_ONE",
        "1234.56",
        "EUR",
        "reference",
    )
    missing = next(r for r in rows if r["record"] == "case" and r["kind"] == "MISSING_IN_LEDGER")
    assert missing["amount"] == "-42.00" and missing["currency"] == "EUR" and missing["status"] == "OPEN"
    assert missing["references"].startswith('FEE, "Q4" ')
    assert json.loads(missing["evidence"])["statementLines"][0]["amount"] == "-42.00"
    assert {r["run_id"] for r in rows} == {run_id}


def test_a_run_exports_as_json_through_the_gateway(client: httpx.Client, run_id: str) -> None:
    response = client.get(f"/api/v1/reconciliations/{run_id}/export", params={"format": "json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["run"]["report_id"] == run_id and document["run"]["matched"] == 1
    assert [m["amount"] for m in document["matches"]] == ["1234.56"]
    kinds = {c["kind"] for c in document["cases"]}
    assert "MISSING_IN_LEDGER" in kinds
    assert all(isinstance(c["amount"], str) for c in document["cases"])


def test_export_refusals(client: httpx.Client, stack: Stack, run_id: str) -> None:
    unknown = client.get(f"/api/v1/reconciliations/{uuid.uuid4()}/export")
    assert unknown.status_code == 404 and unknown.json()["code"] == "RECON_RUN_NOT_FOUND"
    bad = client.get(f"/api/v1/reconciliations/{run_id}/export", params={"format": "xlsx"})
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_FORMAT"
    anonymous = httpx.get(f"{stack.base_url}/api/v1/reconciliations/{run_id}/export", timeout=30)
    assert anonymous.status_code == 401


def test_the_cli_writes_the_same_file(client: httpx.Client, stack: Stack, run_id: str, tmp_path: Path) -> None:
    out = tmp_path / "run.csv"
    with out.open("wb") as file:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "reconcile",
                "export",
                run_id,
                "--format",
                "csv",
                "--address",
                stack.addresses["reconciliation"],
            ],
            stdout=file,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == client.get(f"/api/v1/reconciliations/{run_id}/export").content
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "reconcile",
            "export",
            str(uuid.uuid4()),
            "--address",
            stack.addresses["reconciliation"],
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1 and b"NOT_FOUND" in failed.stderr
