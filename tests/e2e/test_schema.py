"""The configurable schema through Envoy: apply and inspect it over REST, the ledger refusing what it
forbids on the sync routes and ingest refusing it before its 202 (a 400 with the rule's code, nothing
stored), ingest accepting while the ledger cannot be asked (the ledger then refuses it when posting:
FAILED with the code), and listings filtered on indexed metadata. A stack of its own: a schema in force
would refuse the other suites' free-form accounts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.devstack.stack import Stack
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome

pytestmark = pytest.mark.e2e

MARKETPLACE = (Path(__file__).parents[2] / "deploy" / "schema" / "marketplace.schema.yaml").read_text()
# The seed's free-form accounts (no ':' in their ids) kept as a class of their own.
LEGACY = """
  legacy:
    type: LIABILITY
    idPattern: "{accountId}"
"""


@pytest.fixture(scope="module")
def client(schema_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=schema_stack.base_url, headers=AUTH, timeout=30) as c:
        yield c


def with_legacy(document: str) -> str:
    return document.replace("transferTypes:\n", LEGACY.lstrip("\n") + "transferTypes:\n", 1)


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    body: dict[str, Any] = response.json()
    return body


def submission(key: str, source: str, destination: str, code: str, **metadata: str) -> dict[str, Any]:
    transaction = {"source_account_id": source, "destination_account_id": destination, "amount": "1.00"}
    return {"transaction": {**transaction, "code": code, "metadata": metadata}, "idempotencyKey": key}


def wait_for_ingest_to_check(client: httpx.Client, run: str, timeout: float = 30) -> None:
    """Until ingest's pre-check answers (it learns the version in force within a refresh): a transfer of
    a type no schema has is refused before the 202 once it does. Probes accepted before end FAILED."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        probe = client.post("/api/v1/transactions", json=submission(f"probe-{run}-{n}", "src", "dst", "NO_SUCH_TYPE"))
        if probe.status_code == 400:
            assert probe.json()["code"] == "SCHEMA_TRANSFER_TYPE_UNKNOWN", probe.text
            return
        assert probe.status_code == 202, probe.text
        time.sleep(0.1)
    raise AssertionError(f"ingest did not check transfers against the schema within {timeout}s")


def test_a_marketplace_schema_is_applied_inspected_and_enforced(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    assert client.get("/api/v1/schema").json().get("version", 0) == 0
    # With no schema: the seed's flow, verbatim.
    seed_key = f"seed-{run}"
    assert client.post("/api/v1/transactions", json=seed_body(seed_key, f"src{run}", f"dst{run}")).status_code == 202
    assert wait_for_outcome(client, seed_key)["status"] == "COMPLETED"

    # The marketplace alone would strand the seed's accounts: listed by a dry run, refused when applied.
    preview = client.put("/api/v1/schema", json={"documentText": MARKETPLACE, "dryRun": True})
    assert preview.status_code == 200, preview.text
    assert {a["accountId"] for a in preview.json()["stranded"]} == {f"src{run}", f"dst{run}"}
    assert preview.json().get("applied", False) is False
    stranding = refused(
        client.put("/api/v1/schema", json={"documentText": MARKETPLACE}), 400, "SCHEMA_STRANDS_ACCOUNTS"
    )
    assert f"src{run}" in str(stranding["details"])
    assert client.get("/api/v1/schema").json().get("version", 0) == 0

    # With a class for them it applies, as a JSON object here, guarded by If-Match.
    document = yaml.safe_load(with_legacy(MARKETPLACE))
    applied = client.put("/api/v1/schema", json={"document": document}, headers={"If-Match": '"0"'})
    assert applied.status_code == 200, applied.text
    assert (applied.json()["applied"], applied.json()["schema"]["version"]) == (True, 1)
    assert "+ transfer type PURCHASE" in [c["description"] for c in applied.json()["changes"]]
    refused(
        client.put("/api/v1/schema", json={"document": document}, headers={"If-Match": "0"}),
        409,
        "SCHEMA_VERSION_CONFLICT",
    )
    shown = client.get("/api/v1/schema").json()
    assert shown["version"] == 1 and shown["document"]["transferTypes"]["FEE"]["reversals"] is False
    assert shown["document"]["transferTypes"]["TOPUP"]["limits"]["USD"] == {"min": 100, "max": 1000000}
    versions = client.get("/api/v1/schema/versions").json()["versions"]
    assert [(v["version"], v["appliedBy"]) for v in versions] == [(1, "demo")]

    # Accounts fit their class; a top-up through ingest opens the wallet.
    bank, merchant, wallet, other = "bank:operating", f"merchant:m{run}", f"wallet:a{run}", f"wallet:b{run}"
    assert client.post("/api/v1/accounts", json={"id": bank, "currency": "USD"}).status_code == 201
    refused(
        client.post("/api/v1/accounts", json={"id": merchant, "currency": "USD"}),
        400,
        "SCHEMA_ACCOUNT_METADATA_INVALID",
    )
    opened = client.post("/api/v1/accounts", json={"id": merchant, "currency": "USD", "metadata": {"country": "FR"}})
    assert opened.status_code == 201 and opened.json()["accountClass"] == "merchant"
    top = {
        **seed_body(f"top-{run}", bank, wallet, "50.00"),
        "transaction": {**seed_body("", bank, wallet, "50.00")["transaction"], "code": "TOPUP"},
    }
    assert client.post("/api/v1/transactions", json=top).status_code == 202
    assert wait_for_outcome(client, f"top-{run}")["status"] == "COMPLETED"
    assert client.get(f"/api/v1/accounts/{wallet}").json()["accountClass"] == "wallet"

    # Through ingest, before the 202: a wallet-to-wallet PURCHASE is refused with the rule's code, and
    # nothing is stored (no request under the key, no transfer, no account opened).
    wait_for_ingest_to_check(client, run)
    p2p = refused(
        client.post("/api/v1/transactions", json=submission(f"p2p-{run}", wallet, other, "PURCHASE", orderId="o1")),
        400,
        "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT",
    )
    assert "PURCHASE" in p2p["message"] and other in p2p["message"]
    assert client.get(f"/api/v1/transactions/status/p2p-{run}").status_code == 404
    assert client.get(f"/api/v1/transfers/p2p-{run}").status_code == 404
    assert client.get(f"/api/v1/accounts/{other}").status_code == 404
    # Missing required metadata: refused too.
    refused(
        client.post("/api/v1/transactions", json=submission(f"buy-{run}", wallet, merchant, "PURCHASE")),
        400,
        "SCHEMA_METADATA_INVALID",
    )
    assert client.get(f"/api/v1/transactions/status/buy-{run}").status_code == 404
    # The key stayed free: the corrected request under it is accepted and posted.
    good = client.post(
        "/api/v1/transactions", json=submission(f"buy-{run}", wallet, merchant, "PURCHASE", orderId="o1")
    )
    assert good.status_code == 202 and good.json()["status"] == "ACCEPTED", good.text
    assert wait_for_outcome(client, f"buy-{run}")["status"] == "COMPLETED"

    # The ledger's sync hold route: refused with the rule's code, nothing stored.
    hold = {
        "sourceAccountId": wallet,
        "destinationAccountId": other,
        "amount": "5.00",
        "currency": "USD",
        "code": "PURCHASE",
        "metadata": {"orderId": "o2"},
    }
    refused(
        client.post("/api/v1/holds", json={**hold, "idempotencyKey": f"h1-{run}"}),
        400,
        "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT",
    )
    assert client.get(f"/api/v1/holds/h1-{run}").status_code == 404
    assert client.get(f"/api/v1/accounts/{other}").status_code == 404  # not opened either
    no_order = {**hold, "destinationAccountId": merchant, "metadata": {}, "idempotencyKey": f"h2-{run}"}
    refused(client.post("/api/v1/holds", json=no_order), 400, "SCHEMA_METADATA_INVALID")
    assert client.get(f"/api/v1/holds/h2-{run}").status_code == 404
    good = client.post("/api/v1/holds", json={**hold, "destinationAccountId": merchant, "idempotencyKey": f"h3-{run}"})
    assert good.status_code == 200 and good.json()["transferType"] == "PURCHASE", good.text
    assert client.post(f"/api/v1/holds/h3-{run}/post", json={}).json()["status"] == "POSTED"

    # A FEE may not be reversed.
    fee = {
        "transaction": {
            "source_account_id": merchant,
            "destination_account_id": "fees:platform",
            "amount": "0.50",
            "code": "FEE",
        },
        "idempotencyKey": f"fee-{run}",
    }
    assert client.post("/api/v1/transactions", json=fee).status_code == 202
    assert wait_for_outcome(client, f"fee-{run}")["status"] == "COMPLETED"
    refused(
        client.post(f"/api/v1/transfers/fee-{run}/reverse", json={"idempotencyKey": f"rev-{run}", "reason": "x"}),
        400,
        "SCHEMA_REVERSALS_NOT_ALLOWED",
    )
    assert client.get(f"/api/v1/transfers/rev-{run}").status_code == 404

    # A breaking change lists the accounts it would strand and changes nothing.
    eur_wallets = with_legacy(MARKETPLACE).replace(
        '    currencies: [USD, EUR]\n    overdraft: forbidden\n    idPattern: "wallet:{userId}"',
        '    currencies: [EUR]\n    overdraft: forbidden\n    idPattern: "wallet:{userId}"',
    )
    breaking = refused(client.put("/api/v1/schema", json={"documentText": eur_wallets}), 400, "SCHEMA_STRANDS_ACCOUNTS")
    assert wallet in str(breaking["details"])
    assert len(client.get("/api/v1/schema/versions").json()["versions"]) == 1

    # A bad document: every problem with its path.
    bad = refused(
        client.put("/api/v1/schema", json={"documentText": "accountClasses: {x: {type: ROCK}}\ntransferTypes: {}"}),
        400,
        "SCHEMA_INVALID",
    )
    assert "$.accountClasses.x.type" in str(bad["details"])


def test_the_cli_prints_the_diff_applies_and_shows(schema_stack: Stack, client: httpx.Client, tmp_path: Path) -> None:
    def payrecon(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "schema", *args, "--address", schema_stack.addresses["ledger"]],
            capture_output=True,
            text=True,
            timeout=60,
        )

    base = tmp_path / "marketplace.yaml"
    base.write_text(with_legacy(MARKETPLACE))
    first = payrecon("apply", str(base))
    assert first.returncode == 0, first.stderr
    in_force = client.get("/api/v1/schema").json()["version"]
    assert in_force >= 1

    raised = tmp_path / "raised.yaml"
    raised.write_text(
        with_legacy(MARKETPLACE).replace("min: 100, max: 1000000}\n      EUR", "min: 100, max: 2000000}\n      EUR")
    )
    preview = payrecon("apply", str(raised), "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert (
        f"schema in force: version {in_force}" in preview.stdout and "~ transfer type TOPUP (limits)" in preview.stdout
    )
    assert client.get("/api/v1/schema").json()["version"] == in_force  # a dry run applies nothing
    applied = payrecon("apply", str(raised))
    assert applied.returncode == 0 and f"applied: version {in_force + 1}" in applied.stdout, (
        applied.stdout + applied.stderr
    )

    shown = payrecon("show")
    assert shown.returncode == 0 and shown.stdout.startswith(f"# version {in_force + 1}, applied by demo")
    assert yaml.safe_load(shown.stdout)["transferTypes"]["TOPUP"]["limits"]["USD"] == {"min": 100, "max": 2000000}
    assert payrecon("versions").stdout.count("\tdemo") == in_force + 1

    broken = tmp_path / "broken.yaml"
    broken.write_text("accountClasses: {x: {type: ROCK, idPattern: 'x:{id}'}}\ntransferTypes: {}\n")
    refused = payrecon("apply", str(broken))
    assert (
        refused.returncode == 1 and "SCHEMA_INVALID" in refused.stderr and "$.accountClasses.x.type" in refused.stderr
    )


def test_history_and_accounts_filter_on_indexed_metadata(client: httpx.Client) -> None:
    """After the first test: the marketplace (orderId indexed for transfers, country for accounts) is in force."""
    run = uuid.uuid4().hex[:8]
    wait_for_ingest_to_check(client, run)
    bank, merchant, wallet = "bank:operating", f"merchant:f{run}", f"wallet:f{run}"
    opened = client.post("/api/v1/accounts", json={"id": merchant, "currency": "USD", "metadata": {"country": "DE"}})
    assert opened.status_code == 201, opened.text
    top = submission(f"ftop-{run}", bank, wallet, "TOPUP")
    top["transaction"]["amount"] = "50.00"
    assert client.post("/api/v1/transactions", json=top).status_code == 202
    assert wait_for_outcome(client, f"ftop-{run}")["status"] == "COMPLETED"
    for n in range(5):
        body = submission(f"fbuy{n}-{run}", wallet, merchant, "PURCHASE", orderId=f"{run}-{n % 2}")
        assert client.post("/api/v1/transactions", json=body).status_code == 202
    for n in range(5):
        assert wait_for_outcome(client, f"fbuy{n}-{run}")["status"] == "COMPLETED"

    seen, cursor = [], ""
    while True:  # pages of 2 keep the filter
        params = {"metadata": f"orderId:{run}-0", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/api/v1/accounts/{merchant}/ledger", params=params)
        assert page.status_code == 200, page.text
        seen += [e["transferId"] for e in page.json().get("entries", [])]
        cursor = page.json().get("nextCursor", "")
        if not cursor:
            break
    assert seen == [f"fbuy4-{run}", f"fbuy2-{run}", f"fbuy0-{run}"]
    both = client.get(
        f"/api/v1/accounts/{wallet}/ledger", params=[("metadata", f"orderId:{run}-1"), ("metadata", "orderId:other")]
    )
    refused(both, 400, "INVALID_METADATA_FILTER")
    not_indexed = refused(
        client.get(f"/api/v1/accounts/{merchant}/ledger", params={"metadata": "userId:u1"}),
        400,
        "METADATA_FIELD_NOT_INDEXED",
    )
    assert "orderId" in not_indexed["message"]

    listed = client.get("/api/v1/accounts", params={"metadata": "country:DE", "limit": 500})
    assert listed.status_code == 200, listed.text
    assert merchant in [a["id"] for a in listed.json()["accounts"]]
    assert all(a["metadata"]["country"] == "DE" for a in listed.json()["accounts"])
    refused(client.get("/api/v1/accounts", params={"metadata": "orderId:x"}), 400, "METADATA_FIELD_NOT_INDEXED")


def test_ingest_accepts_while_the_ledger_cannot_be_asked_and_the_ledger_still_refuses(
    schema_stack: Stack, client: httpx.Client
) -> None:
    """Ledger service hung (SIGSTOP: slower than any deadline): ingest answers 202 after its short
    deadline instead of refusing payments, and the ledger refuses the transfer when posting it — FAILED
    with the rule's code, told once the ledger's event relay (in the hung process) runs again."""
    run = uuid.uuid4().hex[:8]
    wait_for_ingest_to_check(client, run)
    wallet, other = f"wallet:s{run}", f"wallet:t{run}"
    top = submission(f"stop-{run}", "bank:operating", wallet, "TOPUP")
    top["transaction"]["amount"] = "5.00"
    assert client.post("/api/v1/transactions", json=top).status_code == 202
    assert wait_for_outcome(client, f"stop-{run}")["status"] == "COMPLETED"
    ledger = schema_stack.children["ledger"].process
    os.killpg(ledger.pid, signal.SIGSTOP)
    try:
        body = submission(f"hung-{run}", wallet, other, "PURCHASE", orderId="o1")
        accepted = client.post("/api/v1/transactions", json=body)
        assert accepted.status_code == 202, accepted.text
    finally:
        os.killpg(ledger.pid, signal.SIGCONT)
    failed = wait_for_outcome(client, f"hung-{run}")
    assert failed["status"] == "FAILED" and failed["error"]["code"] == "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT", failed
    # Once the ledger answers again, ingest checks again.
    wait_for_ingest_to_check(client, f"{run}-back")
    refused(
        client.post("/api/v1/transactions", json=submission(f"back-{run}", wallet, other, "PURCHASE", orderId="o2")),
        400,
        "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT",
    )
