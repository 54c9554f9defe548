"""The configurable schema through Envoy: apply and inspect it over REST, and the ledger refusing what
it forbids on the sync routes (a 400 with the rule's code, nothing stored) and through ingest (FAILED
with the code). A stack of its own: a schema in force would refuse the other suites' free-form accounts."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.devstack.stack import Stack
from tests.conftest import start_stack
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
def schema_stack(server_database_url: str, redis_url: str, state_dir: Path) -> Iterator[Stack]:
    running = start_stack(server_database_url, redis_url, state_dir)
    try:
        yield running
    finally:
        running.stop()


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

    # Through ingest: a wallet-to-wallet PURCHASE ends FAILED with the rule's code.
    p2p = {
        "transaction": {
            "source_account_id": wallet,
            "destination_account_id": other,
            "amount": "1.00",
            "code": "PURCHASE",
            "metadata": {"orderId": "o1"},
        },
        "idempotencyKey": f"p2p-{run}",
    }
    assert client.post("/api/v1/transactions", json=p2p).status_code == 202
    failed = wait_for_outcome(client, f"p2p-{run}")
    assert failed["status"] == "FAILED" and failed["error"]["code"] == "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT", failed

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
