"""Reconciliation defaults from the schema, through Envoy: a `bank` class declares the metadata field
(its IBAN) that names its statements and matching rules of its own (a 3-day date tolerance, the built-in
one is 2). A camt.053 imported with no accountId lands on the account holding its IBAN; a run uses the
class's rules and says so, and a line 3 days off its ledger entry matches — until the account saves
rules of its own, which win. A stack of its own: a schema in force would refuse the other suites'
free-form accounts."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH
from tests.e2e.test_statements import camt053, post_transfer

pytestmark = pytest.mark.e2e

SCHEMA = """
accountClasses:
  bank:
    type: ASSET
    currencies: [EUR]
    idPattern: "bank:{name}"
    autoCreate: false
    indexedMetadata: [iban]
    reconciliation:
      statementAccount: {metadataField: iban}
      rules: {date_tolerance_days: 3}
  customer:
    type: LIABILITY
    idPattern: "customer:{id}"
transferTypes:
  DEPOSIT: {debit: [bank], credit: [customer]}
defaultTransferType: DEPOSIT
"""


@pytest.fixture(scope="module")
def client(schema_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=schema_stack.base_url, headers=AUTH, timeout=60) as c:
        yield c


def test_a_statement_finds_its_account_by_iban_and_matches_with_the_class_rules(
    client: httpx.Client, schema_stack: Stack, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    applied = client.put("/api/v1/schema", json={"documentText": SCHEMA})
    assert applied.status_code == 200, applied.text
    iban = "DE89370400440532013000"
    bank = "bank:operating"
    opened = client.post(
        "/api/v1/accounts", json={"id": bank, "currency": "EUR", "type": "ASSET", "metadata": {"iban": iban}}
    )
    assert opened.status_code == 201, opened.text
    post_transfer(client, f"dep-{run}", bank, f"customer:{run}", "250.00", "NOTPROVIDED")
    today = datetime.now(UTC).date()
    booked = (today - timedelta(days=3)).isoformat()  # the bank booked it 3 days before the ledger posted it

    unknown = client.post(
        "/api/v1/statements",
        json={"content": camt053("FR7630006000011234567890189", booked, "0.00", "1.00", [("1.00", "CRDT", "U", "e")])},
    )
    assert (unknown.status_code, unknown.json()["code"]) == (400, "STATEMENT_ACCOUNT_UNKNOWN"), unknown.text
    assert "FR7630006000011234567890189" in unknown.json()["message"]

    # No shared reference: only amount and date can pair the line with the entry.
    statement = camt053(iban, booked, "0.00", "250.00", [("250.00", "CRDT", f"B-{run}", "NOTPROVIDED")])
    imported = client.post("/api/v1/statements", json={"format": "CAMT053", "content": statement})
    assert imported.status_code == 201, imported.text
    assert imported.json()["accountId"] == bank and imported.json()["linesImported"] == 1

    # The CLI without --account: the same routing over the streamed import.
    next_day = (today - timedelta(days=2)).isoformat()
    file = tmp_path / "next.xml"
    file.write_text(camt053(iban, next_day, "250.00", "250.00", []))
    address = schema_stack.addresses["reconciliation"]
    cli = subprocess.run(
        [sys.executable, "-m", "services.cli", "statements", "import", str(file), "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["accountId"] == bank

    window = {"startDate": booked, "endDate": today.isoformat()}
    report = client.post(f"/api/v1/accounts/{bank}/reconcile", json=window)
    assert report.status_code == 200, report.text
    found = report.json()
    assert found["rules_source"] == "schema v1, class bank", found
    assert found["matched"] == 1 and found["statement_lines"] == 1, found

    shown = client.get(f"/api/v1/accounts/{bank}/matching-rules").json()
    assert (shown["source"], shown["rules"]["date_tolerance_days"], shown.get("version", 0)) == (
        "schema v1, class bank",
        3,
        0,
    ), shown

    # Rules saved for the account win over its class's: with the built-in tolerance the line is too far off.
    saved = client.put(f"/api/v1/accounts/{bank}/matching-rules", json={"rules": {"date_tolerance_days": 2}})
    assert saved.status_code == 200, saved.text
    again = client.post(f"/api/v1/accounts/{bank}/reconcile", json=window).json()
    assert again["rules_source"] == "account rules v1" and again["matched"] == 0, again
    assert saved.json()["source"] == "account rules v1" and saved.json()["rules"]["date_tolerance_days"] == 2
