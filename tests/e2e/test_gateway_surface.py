"""The gateway exposes exactly the RPCs annotated with google.api.http, enumerated from the same
descriptor set Envoy loads: each one refuses a missing or wrong token (probes excepted), and every
other RPC is unreachable through Envoy — as REST and as gRPC — yet still answers on its service's
own port to a token holding the internal scope."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from services.devstack.stack import Stack
from services.kernel.config import DEMO_TOKEN
from services.kernel.grpc_errors import machine_code_of

pytestmark = pytest.mark.e2e

DESCRIPTOR = Path(__file__).resolve().parents[2] / "gateway" / "descriptor.pb"
OPENAPI = DESCRIPTOR.with_name("openapi.json")
PROBES = {"/api/v1/health", "/api/v1/ready"}
WRONG = "Bearer not-a-token"


@dataclass(frozen=True)
class Rpc:
    service: str
    method: str
    rule: http_pb2.HttpRule | None
    client_streaming: bool = False

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def context(self) -> str:
        """The owning service's name in the stack (payrecon.<context>.v1.Service)."""
        return self.service.split(".")[1]

    @property
    def verb(self) -> str:
        assert self.rule is not None
        return str(self.rule.WhichOneof("pattern")).upper()

    @property
    def sample_path(self) -> str:
        assert self.rule is not None
        return re.sub(r"\{[^}]+\}", "x", getattr(self.rule, self.verb.lower()))

    def __str__(self) -> str:
        return f"{self.service.rsplit('.', 1)[1]}.{self.method}"


def payrecon_rpcs() -> list[Rpc]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    rpcs = []
    for file in files.file:
        if not file.package.startswith("payrecon."):
            continue
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                rpcs.append(
                    Rpc(
                        f"{file.package}.{service.name}",
                        method.name,
                        rule if rule.ListFields() else None,
                        method.client_streaming,
                    )
                )
    return rpcs


RPCS = payrecon_rpcs()
PUBLIC = [r for r in RPCS if r.rule is not None]
GUARDED = [r for r in PUBLIC if r.sample_path not in PROBES]
INTERNAL = [r for r in RPCS if r.rule is None]


def test_the_descriptor_names_public_and_internal_rpcs() -> None:
    assert len(GUARDED) >= 15
    assert "LedgerService.PostTransfers" in {str(r) for r in INTERNAL}
    assert {r.sample_path for r in PUBLIC} >= PROBES


@pytest.mark.parametrize("rpc", GUARDED, ids=str)
def test_each_public_route_refuses_a_missing_and_a_wrong_token(stack: Stack, rpc: Rpc) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        for headers in ({}, {"Authorization": WRONG}):
            # A client-streamed route takes a JSON array of messages.
            body: Any = ([{}] if rpc.client_streaming else {}) if rpc.rule is not None and rpc.rule.body else None
            response = client.request(rpc.verb, rpc.sample_path, headers=headers, json=body)
            assert response.status_code == 401, (rpc.verb, rpc.sample_path, response.text)
            assert response.json()["code"] == "AUTH_UNAUTHENTICATED"


def test_the_probes_need_no_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        for path in sorted(PROBES):
            assert client.get(path).status_code == 200, path


def _call(channel: grpc.aio.Channel, rpc: Rpc) -> grpc.aio.UnaryUnaryCall:
    """An untyped unary call: empty request bytes are a valid (empty) message of any type."""
    return channel.unary_unary(rpc.grpc_path)


@pytest.mark.parametrize("rpc", GUARDED, ids=str)
async def test_each_public_rpc_is_routed_for_grpc_clients_and_refuses_a_missing_or_wrong_token(
    stack: Stack, rpc: Rpc
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.options.http_port}") as channel:
        for metadata in ((), (("authorization", WRONG),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _call(channel, rpc)(b"", metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
            assert machine_code_of(refused.value) == "AUTH_UNAUTHENTICATED"


@pytest.mark.parametrize("rpc", INTERNAL, ids=str)
def test_internal_rpcs_are_not_routed_for_rest_callers(stack: Stack, rpc: Rpc) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}) as c:
        response = c.post(rpc.grpc_path, json={"transfers": []})
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "ROUTE_NOT_FOUND"
        # Over HTTP/1.1 with a gRPC content type Envoy answers the gRPC way: UNIMPLEMENTED (12).
        response = c.post(rpc.grpc_path, content=b"{}", headers={"Content-Type": "application/grpc+json"})
        assert response.headers.get("grpc-status") == "12", (response.status_code, response.headers)


@pytest.mark.parametrize("rpc", INTERNAL, ids=str)
async def test_internal_rpcs_are_not_routed_for_grpc_clients(stack: Stack, rpc: Rpc) -> None:
    metadata = (("authorization", f"Bearer {DEMO_TOKEN}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.options.http_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _call(channel, rpc)(b"", metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, refused.value


@pytest.mark.parametrize("rpc", INTERNAL, ids=str)
async def test_internal_rpcs_answer_on_their_own_port_to_the_internal_scope_only(stack: Stack, rpc: Rpc) -> None:
    from tests.conftest import INTERNAL_TOKEN, PUBLIC_SCOPES_TOKEN

    async with grpc.aio.insecure_channel(stack.addresses[rpc.context]) as channel:
        await _call(channel, rpc)(b"", metadata=(("authorization", f"Bearer {INTERNAL_TOKEN}"),), timeout=10)
        # A token granted `*` holds every public scope, never an internal one.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _call(channel, rpc)(b"", metadata=(("authorization", f"Bearer {PUBLIC_SCOPES_TOKEN}"),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
        assert machine_code_of(refused.value) == "AUTH_FORBIDDEN"


async def test_a_service_token_posts_a_batch_straight_to_the_ledger(stack: Stack) -> None:
    from payrecon.common.v1 import money_pb2
    from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc, messages_pb2

    from tests.conftest import INTERNAL_TOKEN

    run = uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(stack.addresses["ledger"]) as channel:
        response = await ledger_pb2_grpc.LedgerServiceStub(channel).PostTransfers(
            ledger_pb2.PostTransfersRequest(
                transfers=[
                    messages_pb2.TransferRequest(
                        transfer_id=f"internal-{run}",
                        debit_account_id=f"int-src-{run}",
                        credit_account_id=f"int-dst-{run}",
                        amount=money_pb2.Money(minor_units=700, currency="USD"),
                    )
                ]
            ),
            metadata=(("authorization", f"Bearer {INTERNAL_TOKEN}"),),
        )
    assert [o.WhichOneof("event") for o in response.outcomes] == ["transfer_posted"]


def _strict(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's components with every documented object closed to undocumented fields (but the
    google.rpc details, which carry their @type), so a misnamed field fails validation."""
    components = json.loads(json.dumps(spec["components"]))

    def close(schema: Any) -> None:
        if isinstance(schema, dict):
            if "properties" in schema and "additionalProperties" not in schema:
                schema["additionalProperties"] = False
            for value in schema.values():
                close(value)
        elif isinstance(schema, list):
            for value in schema:
                close(value)

    for name, schema in components["schemas"].items():
        if not name.startswith("google."):
            close(schema)
    return components


def test_answers_match_the_published_openapi_description(stack: Stack) -> None:
    from openapi_schema_validator import OAS30Validator

    from tests.e2e.test_rest_flow import seed_body, wait_for_outcome

    spec = json.loads(OPENAPI.read_text())
    components = _strict(spec)
    run = uuid.uuid4().hex[:8]
    checked: set[tuple[str, str]] = set()
    with httpx.Client(base_url=stack.base_url, timeout=30, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}) as c:

        def check(verb: str, template: str, body: Any = None, **values: str) -> dict[str, Any]:
            response = c.request(verb, template.format(**values), json=body)
            responses = spec["paths"][template][verb.lower()]["responses"]
            answer = responses.get(str(response.status_code), responses["default"])
            if "$ref" in answer:
                answer = spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
            schema = answer["content"]["application/json"]["schema"]
            OAS30Validator({**schema, "components": components}).validate(response.json())
            checked.add((verb, template))
            return dict(response.json())

        src, dst, key = f"oa-src-{run}", f"oa-dst-{run}", f"oa-{run}"
        check("POST", "/api/v1/accounts", {"id": dst, "currency": "USD", "metadata": {"k": "v"}})
        check("POST", "/api/v1/transactions", seed_body(key, src, dst, "12.50"))
        assert wait_for_outcome(c, key)["status"] == "COMPLETED"
        check("GET", "/api/v1/transactions/status/{idempotency_key}", idempotency_key=key)
        check("GET", "/api/v1/accounts/{account_id}/balance", account_id=dst)
        check("GET", "/api/v1/accounts/{account_id}/ledger", account_id=dst)
        check("GET", "/api/v1/accounts/{account_id}", account_id=dst)
        check("GET", "/api/v1/accounts/{account_id}", account_id=f"missing-{run}")  # 404, the error shape
        check("GET", "/api/v1/accounts")
        hold = {"idempotencyKey": f"oa-h-{run}", "sourceAccountId": src, "destinationAccountId": dst, "amount": 1}
        check("POST", "/api/v1/holds", hold)
        check("GET", "/api/v1/holds/{hold_id}", hold_id=f"oa-h-{run}")
        check("POST", "/api/v1/holds/{hold_id}/post", {}, hold_id=f"oa-h-{run}")
        check("POST", "/api/v1/holds/{hold_id}/void", {}, hold_id=f"oa-h-{run}")  # 409
        check("GET", "/api/v1/transfers/{transfer_id}", transfer_id=key)
        check("POST", "/api/v1/transfers/{transfer_id}/reverse", {"idempotencyKey": f"oa-r-{run}"}, transfer_id=key)
        window = {"startDate": "2026-01-01", "endDate": "2030-12-31"}
        check("POST", "/api/v1/accounts/{account_id}/reconcile", window, account_id=dst)
        for path in ("/api/v1/queue/stats", "/api/v1/cache/stats", "/api/v1/health", "/api/v1/ready"):
            check("GET", path)
        check("GET", "/api/v1/transactions/pending")
        statement = "date;amount;ref\n2026-11-20;12,50;OA-" + run + "\n"
        mapping = {
            "delimiter": ";",
            "date": "date",
            "amount": "amount",
            "reference": "ref",
            "decimal_separator": ",",
            "currency": "USD",
            "account": "OA",
        }
        imported = check(
            "POST",
            "/api/v1/statements",
            {"accountId": dst, "format": "CSV", "content": statement, "csvMapping": mapping},
        )
        check(
            "POST",
            "/api/v1/statements",
            {"accountId": dst, "format": "CSV", "content": "no;such\n", "csvMapping": {"date": "x"}},
        )
        assert imported["status"] == "IMPORTED", imported
        check(
            "PUT", "/api/v1/accounts/{account_id}/matching-rules", {"rules": {"date_tolerance_days": 3}}, account_id=dst
        )
        check("GET", "/api/v1/accounts/{account_id}/matching-rules", account_id=dst)
        report = check(
            "POST",
            "/api/v1/accounts/{account_id}/reconcile",
            {"startDate": "2026-11-20", "endDate": "2026-11-20"},
            account_id=dst,
        )
        listed = check("GET", "/api/v1/discrepancies")
        case_id = listed["discrepancies"][0]["id"]
        check("GET", "/api/v1/discrepancies/{id}", id=case_id)
        check("POST", "/api/v1/discrepancies/{id}/resolve", {"action": "ACKNOWLEDGE", "reason": "seen"}, id=case_id)
        check("GET", "/api/v1/reconciliations")
        check("GET", "/api/v1/reconciliations/{run_id}", run_id=report["report_id"])
        # The schema routes, applying nothing: a schema in force would refuse the other tests' accounts.
        check("GET", "/api/v1/schema")
        check("GET", "/api/v1/schema/versions")
        document = "accountClasses: {any: {type: LIABILITY, idPattern: '{id}'}}\ntransferTypes: {}\n"
        preview = check("PUT", "/api/v1/schema", {"documentText": document, "dryRun": True})
        assert preview.get("applied", False) is False and preview["changes"], preview
        # A file, not a JSON answer: its content type is one the description lists.
        export = "/api/v1/reconciliations/{run_id}/export"
        for fmt in ("csv", "json"):
            exported = c.get(export.format(run_id=report["report_id"]), params={"format": fmt})
            content = spec["paths"][export]["get"]["responses"]["200"]["content"]
            assert exported.status_code == 200 and exported.headers["content-type"].split(";")[0] in content
        checked.add(("GET", export))
    streamed = {("POST", "/api/v1/statements:stream"), ("GET", "/api/v1/discrepancies:watch")}  # not one JSON answer
    assert checked | streamed >= {(verb.upper(), path) for path, item in spec["paths"].items() for verb in item}
