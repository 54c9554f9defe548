"""From a bank file to a resolved case, through Envoy as a finance user would: import a camt.053,
see it matched against the ledger, see every break as a case with its evidence, resolve one with a
correcting posting, and find the audit trail — plus the refusals (broken file, same file twice)."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH, wait_for_outcome

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=60) as c:
        yield c


def camt053(iban: str, day: str, opening: str, closing: str, entries: list[tuple[str, str, str, str]]) -> str:
    """A camt.053.001.02 statement; entries are (amount, CRDT|DBIT, bank reference, end-to-end id)."""
    ntry = "".join(
        f"""<Ntry><NtryRef>{ref}</NtryRef><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>{side}</CdtDbtInd>
        <Sts>BOOK</Sts><BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt>
        <AcctSvcrRef>{ref}</AcctSvcrRef><BkTxCd><Prtry><Cd>TRF</Cd></Prtry></BkTxCd>
        <NtryDtls><TxDtls><Refs><EndToEndId>{e2e}</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>"""
        for amount, side, ref, e2e in entries
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>
<GrpHdr><MsgId>M-{uuid.uuid4().hex[:8]}</MsgId><CreDtTm>{day}T18:00:00</CreDtTm></GrpHdr>
<Stmt><Id>S-{day}</Id><CreDtTm>{day}T18:00:00</CreDtTm>
<Acct><Id><IBAN>{iban}</IBAN></Id><Ccy>EUR</Ccy></Acct>
<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">{opening}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>
<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">{closing}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>
{ntry}</Stmt></BkToCstmrStmt></Document>"""


def post_transfer(client: httpx.Client, key: str, source: str, destination: str, amount: str, e2e: str) -> None:
    body = {
        "transaction": {
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": amount,
            "currency": "EUR",
            "metadata": {"end_to_end_id": e2e},
        },
        "idempotencyKey": key,
    }
    assert client.post("/api/v1/transactions", json=body).status_code == 202
    assert wait_for_outcome(client, key)["status"] == "COMPLETED"


def cases(client: httpx.Client, account: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/discrepancies", params={"accountId": account, **params})
    assert response.status_code == 200, response.text
    return list(response.json().get("discrepancies", []))


def test_a_bank_file_is_imported_once_matched_and_its_breaks_resolved(client: httpx.Client, stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    bank, customer = f"bank-{run}", f"customer-{run}"
    opened = client.post(
        "/api/v1/accounts", json={"id": bank, "currency": "EUR", "type": "ASSET", "allowOverdraft": True}
    )
    assert opened.status_code == 201, opened.text
    client.post(
        "/api/v1/accounts", json={"id": customer, "currency": "EUR", "type": "LIABILITY", "allowOverdraft": True}
    )
    # Money in at the bank is a debit of the bank's asset account: the ledger's source side.
    post_transfer(client, f"in-1-{run}", bank, customer, "120.00", f"E2E-1-{run}")
    post_transfer(client, f"in-2-{run}", bank, customer, "80.50", f"E2E-2-{run}")
    post_transfer(client, f"in-3-{run}", bank, customer, "15.00", f"E2E-3-{run}")
    day = datetime.now(UTC).date().isoformat()
    # The bank saw 1 and 2 (2 with its own reference only), not 3, and a 42.00 fee nobody booked.
    statement = camt053(
        "DE89370400440532013000",
        day,
        "0.00",
        "158.50",
        [
            ("120.00", "CRDT", f"B1-{run}", f"E2E-1-{run}"),
            ("80.50", "CRDT", f"B2-{run}", "NOTPROVIDED"),
            ("42.00", "DBIT", f"B3-{run}", "NOTPROVIDED"),
        ],
    )
    body = {"accountId": bank, "format": "CAMT053", "content": statement, "fileName": "day.xml"}
    imported = client.post("/api/v1/statements", json=body)
    assert imported.status_code == 201, imported.text
    summary = imported.json()
    assert summary["status"] == "IMPORTED" and summary["linesImported"] == 3
    assert summary["openingBalance"] == "0.00" and summary["closingBalance"] == "158.50"
    assert summary["balanceCheck"] == "OK"
    assert summary["matched"] == 2

    again = client.post(
        "/api/v1/statements",
        json={**body, "content": "", "contentBase64": base64.b64encode(statement.encode()).decode()},
    )
    assert again.status_code == 200 and again.json()["id"] == summary["id"]
    assert again.json()["status"] == "ALREADY_IMPORTED"

    report = client.post(f"/api/v1/accounts/{bank}/reconcile", json={"startDate": day, "endDate": day})
    assert report.status_code == 200, report.text
    found = report.json()
    kinds = sorted(d["type"] for d in found["discrepancies"])
    assert kinds == ["BALANCE_DRIFT", "MISSING_IN_LEDGER", "MISSING_IN_STATEMENT"], found
    assert found["matched"] == 2 and found["statement_lines"] == 3 and found["watermark"] == "CURRENT"
    assert found["balanced"] is False

    missing = [c for c in cases(client, bank, status="OPEN") if c["kind"] == "MISSING_IN_LEDGER"]
    assert len(missing) == 1
    case = missing[0]
    assert case["amount"] == "-42.00"
    assert case["evidence"]["statementLines"][0]["reference"] == f"B3-{run}"
    not_booked = [c for c in cases(client, bank) if c["kind"] == "MISSING_IN_STATEMENT"]
    assert not_booked[0]["evidence"]["ledgerEntries"][0]["transferId"] == f"in-3-{run}"

    acknowledged = client.post(
        f"/api/v1/discrepancies/{case['id']}/resolve", json={"action": "ACKNOWLEDGE", "reason": "bank fee"}
    )
    assert acknowledged.status_code == 200 and acknowledged.json()["status"] == "ACKNOWLEDGED"
    resolved = client.post(
        f"/api/v1/discrepancies/{case['id']}/resolve", json={"action": "POST_ADJUSTMENT", "reason": "book the bank fee"}
    )
    assert resolved.status_code == 200, resolved.text
    final = resolved.json()
    assert final["status"] == "RESOLVED" and final["adjustmentTransferId"] == f"adj-{case['id']}"
    assert [e["action"] for e in final["history"]] == ["OPENED", "ACKNOWLEDGED", "ADJUSTMENT_POSTED", "RESOLVED"]
    assert {e["actor"] for e in final["history"][1:]} == {"demo"}
    refused = client.post(f"/api/v1/discrepancies/{case['id']}/resolve", json={"action": "RESOLVE", "reason": "again"})
    assert refused.status_code == 409 and refused.json()["code"] == "RECON_CASE_ALREADY_RESOLVED"
    # The fee left the bank account for the suspense account, once.
    balance = client.get(f"/api/v1/accounts/{bank}/balance").json()
    assert balance["balance"] == "173.50"  # 120.00 + 80.50 + 15.00 - 42.00

    runs = client.get("/api/v1/reconciliations", params={"accountId": bank}).json()["reconciliations"]
    assert runs and runs[0]["account_id"] == bank
    stored = client.get(f"/api/v1/reconciliations/{found['report_id']}")
    assert stored.status_code == 200 and stored.json()["report_id"] == found["report_id"]


def test_a_broken_file_is_refused_with_line_numbers_and_imports_nothing(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    day = datetime.now(UTC).date().isoformat()
    statement = camt053("DE89370400440532013000", day, "0.00", "1.00", [("1.0O", "CRDT", f"X-{run}", "e")])
    response = client.post("/api/v1/statements", json={"accountId": f"bank-{run}", "content": statement})
    assert response.status_code == 400, response.text
    body = response.json()
    # The one error shape: the row errors are google.rpc.BadRequest violations, "line N: …".
    assert set(body) == {"code", "message", "details"} and body["code"] == "STATEMENT_INVALID"
    (violations,) = [d["fieldViolations"] for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert violations and int(violations[0]["description"].split(":")[0].removeprefix("line ")) > 1
    assert (
        client.get("/api/v1/discrepancies", params={"accountId": f"bank-{run}"}).json().get("discrepancies", []) == []
    )
    reconcile = client.post(f"/api/v1/accounts/bank-{run}/reconcile", json={"startDate": day, "endDate": day})
    assert reconcile.status_code == 404 and reconcile.json()["code"] == "RECON_ACCOUNT_NOT_FOUND"
    not_xml = client.post(
        "/api/v1/statements", json={"accountId": f"bank-{run}", "format": "CAMT053", "content": "hello"}
    )
    assert not_xml.status_code == 400
    unknown = client.post("/api/v1/statements", json={"accountId": f"bank-{run}", "format": "PDF", "content": "x"})
    assert unknown.status_code == 400 and unknown.json()["code"] == "INVALID_FORMAT"


def test_a_break_is_resolved_by_the_system_when_late_ledger_data_explains_it(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    bank = f"bank-late-{run}"
    client.post("/api/v1/accounts", json={"id": bank, "currency": "EUR", "type": "ASSET", "allowOverdraft": True})
    day = datetime.now(UTC).date().isoformat()
    statement = camt053("NL91ABNA0417164300", day, "0.00", "99.00", [("99.00", "CRDT", f"L-{run}", f"E2E-L-{run}")])
    assert client.post("/api/v1/statements", json={"accountId": bank, "content": statement}).status_code == 201
    (case,) = [c for c in cases(client, bank) if c["kind"] == "MISSING_IN_LEDGER"]
    assert case["status"] == "OPEN"
    post_transfer(client, f"late-{run}", bank, f"cust-{run}", "99.00", f"E2E-L-{run}")
    # Continuous matching: the late posting resolves the case as its event arrives, with no call.
    deadline = time.monotonic() + 30
    while client.get(f"/api/v1/discrepancies/{case['id']}").json()["status"] != "RESOLVED":
        assert time.monotonic() < deadline, "the late posting did not resolve the case"
        time.sleep(0.5)
    deadline = time.monotonic() + 20
    while True:
        report = client.post(f"/api/v1/accounts/{bank}/reconcile", json={"startDate": day, "endDate": day}).json()
        if report["balanced"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert report["balanced"] is True, report
    closed = client.get(f"/api/v1/discrepancies/{case['id']}").json()
    assert closed["status"] == "RESOLVED" and closed["history"][-1]["actor"] == "system"


def test_a_watcher_sees_a_break_the_moment_it_appears(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    bank = f"bank-watch-{run}"
    day = datetime.now(UTC).date().isoformat()
    statement = camt053("NL91ABNA0417164300", day, "0.00", "7.00", [("7.00", "CRDT", f"W-{run}", "NOTPROVIDED")])
    seen: list[dict[str, Any]] = []
    with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=httpx.Timeout(30, read=20)) as watcher:
        with watcher.stream("GET", "/api/v1/discrepancies:watch", params={"accountId": bank}) as stream:
            assert stream.status_code == 200
            with httpx.Client(base_url=stack.base_url, headers=AUTH, timeout=30) as importer:
                imported = importer.post("/api/v1/statements", json={"accountId": bank, "content": statement})
                assert imported.status_code == 201, imported.text
            buffer = ""
            for text in stream.iter_text():
                buffer += text
                if f"W-{run}" in buffer and "MISSING_IN_LEDGER" in buffer:
                    seen.append({"raw": buffer})
                    break
    assert seen, "the watcher saw no case"


def test_pending_transactions_are_listed_for_reconciliation(client: httpx.Client) -> None:
    listed = client.get("/api/v1/transactions/pending", params={"olderThanSeconds": 0, "limit": 5})
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json().get("transactions", []), list)
    for params, code in (
        ({"olderThanSeconds": -1}, "INVALID_AGE"),
        ({"limit": 5000}, "INVALID_LIMIT"),
        ({"accountId": "a b"}, "INVALID_ACCOUNT_ID"),
    ):
        refused = client.get("/api/v1/transactions/pending", params=params)
        assert refused.status_code == 400 and refused.json()["code"] == code, refused.text
