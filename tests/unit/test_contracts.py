"""Generated contract code is what `make protos` produces from protos/ (no stale code committed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_and_descriptor_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path / "protos") for p in (tmp_path / "protos").rglob("*") if p.is_file())
    assert generated, "nothing was generated"
    stale = [str(p) for p in generated if (REPO / "protos" / p).read_bytes() != (tmp_path / "protos" / p).read_bytes()]
    assert not stale, f"run `make protos`: stale {stale}"
    committed = sorted(p.relative_to(REPO / "protos") for p in (REPO / "protos" / "payrecon").rglob("*_pb2*.py*"))
    assert set(committed) <= set(generated), "generated files without a .proto source"
    assert (REPO / "gateway" / "descriptor.pb").read_bytes() == (tmp_path / "gateway" / "descriptor.pb").read_bytes()


def test_every_public_rpc_has_a_rest_route() -> None:
    from google.api import annotations_pb2
    from payrecon.ingest.v1 import ingest_pb2
    from payrecon.ledger.v1 import ledger_pb2
    from payrecon.reconciliation.v1 import reconciliation_pb2

    internal = {"payrecon.ledger.v1.LedgerService.PostTransfers", "payrecon.ledger.v1.LedgerService.CheckTransfers"}
    for module in (ingest_pb2, ledger_pb2, reconciliation_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                if method.full_name in internal:
                    assert not rule.ListFields()
                else:
                    assert rule.ListFields(), f"{method.full_name} has no google.api.http route"


def test_internal_rpcs_need_a_scope_that_no_public_token_has() -> None:
    """Every RPC has a scope; an RPC without a REST route needs one that `*` (every public scope) lacks."""
    from google.api import annotations_pb2
    from payrecon.ingest.v1 import ingest_pb2
    from payrecon.ledger.v1 import ledger_pb2
    from payrecon.reconciliation.v1 import reconciliation_pb2

    from services.ingest.api import errors as ingest_errors
    from services.kernel.config import hash_token, parse_api_tokens
    from services.ledger.api import errors as ledger_errors
    from services.reconciliation.api import errors as reconciliation_errors

    (star,) = parse_api_tokens(f"client:{hash_token('t')}:*", development=False)
    scopes = {
        f"/{table.SERVICE_NAME}/{method}": scope
        for table in (ingest_errors, ledger_errors, reconciliation_errors)
        for method, scope in table.SCOPES.items()
    }
    for module in (ingest_pb2, ledger_pb2, reconciliation_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                if service.full_name == ingest_errors.SERVICE_NAME and method.name in ingest_errors.PUBLIC_METHODS:
                    continue
                assert path in scopes, f"{path} has no scope"
                routed = bool(method.GetOptions().Extensions[annotations_pb2.http].ListFields())
                assert star.grants(scopes[path]) == routed, (path, scopes[path])
