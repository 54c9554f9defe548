"""gateway/openapi.json is what `make protos` generates from the descriptor set, a valid OpenAPI 3
document, and describes exactly the annotated routes with the gateway's JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "gateway" / "openapi.json"
SCRIPT = REPO / "gateway" / "openapi.py"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    assert COMMITTED.exists(), "run `make protos` to write gateway/openapi.json"
    return json.loads(COMMITTED.read_text())


def _annotated_bindings() -> dict[tuple[str, str], str]:
    """(verb, path) → gRPC method of every google.api.http binding, read from the descriptor set."""
    files = descriptor_pb2.FileDescriptorSet.FromString((REPO / "gateway" / "descriptor.pb").read_bytes())
    found = {}
    for file in files.file:
        if file.package.startswith("payrecon."):
            for service in file.service:
                for method in service.method:
                    rule = method.options.Extensions[annotations_pb2.http]
                    verb = rule.WhichOneof("pattern")
                    if verb:
                        found[(verb, getattr(rule, verb))] = f"/{file.package}.{service.name}/{method.name}"
    return found


def _schema(spec: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def _properties(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return spec["components"]["schemas"][name]["properties"]


def test_the_committed_description_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, cwd=REPO)
    assert COMMITTED.exists() and COMMITTED.read_text() == out.read_text(), "run `make protos`: stale openapi.json"


def test_it_is_a_valid_openapi_3_document(spec: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_it_has_exactly_the_annotated_routes_and_no_internal_rpc(spec: dict[str, Any]) -> None:
    operations = {
        (verb, path): operation["x-grpc-method"]
        for path, item in spec["paths"].items()
        for verb, operation in item.items()
    }
    assert operations == _annotated_bindings()
    assert "/payrecon.ledger.v1.LedgerService/PostTransfers" not in operations.values()
    assert len({op["operationId"] for item in spec["paths"].values() for op in item.values()}) == len(operations)


def test_every_route_but_the_probes_needs_the_bearer_token(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    assert spec["security"] == [{"bearerAuth": []}]
    for path, item in spec["paths"].items():
        for verb, operation in item.items():
            if path in ("/api/v1/health", "/api/v1/ready"):
                assert operation["security"] == [], path
            else:
                assert "security" not in operation, (verb, path)
                assert "401" in operation["responses"] and "403" in operation["responses"], (verb, path)


def test_path_and_query_parameters(spec: dict[str, Any]) -> None:
    ledger = spec["paths"]["/api/v1/accounts/{account_id}/ledger"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in ledger] == [
        ("account_id", "path", True),
        ("limit", "query", False),
        ("cursor", "query", False),
        ("since", "query", False),
        ("until", "query", False),
        ("metadata", "query", False),
    ]
    assert ledger[1]["schema"] == {"type": "integer", "format": "int32"}
    assert ledger[5]["schema"] == {"type": "array", "items": {"type": "string"}}  # ?metadata=a:1&metadata=b:2
    balance = spec["paths"]["/api/v1/accounts/{account_id}/balance"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in balance] == [("account_id", "path"), ("asOf", "query")]
    assert balance[1]["schema"] == {"type": "string", "format": "date-time"}
    post_hold = spec["paths"]["/api/v1/holds/{hold_id}/post"]["post"]
    assert [p["name"] for p in post_hold["parameters"]] == ["hold_id"]
    body = post_hold["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"amount"}, "a path-bound field is not part of the body"


def test_schemas_follow_the_gateways_json_mapping(spec: dict[str, Any]) -> None:
    submit = spec["paths"]["/api/v1/transactions"]["post"]
    assert set(submit["responses"]) >= {"202", "401", "403", "default"} and "200" not in submit["responses"]
    request = _schema(spec, submit["requestBody"]["content"]["application/json"]["schema"])
    assert set(request["properties"]) == {"transaction", "idempotencyKey"}  # json_name
    transaction = _properties(spec, "payrecon.ingest.v1.TransactionInput")
    assert {"source_account_id", "destination_account_id", "amount", "currency", "metadata", "code"} == set(transaction)
    amount = transaction["amount"]
    assert amount["oneOf"] == [{"type": "number"}, {"type": "string"}]
    assert transaction["metadata"] == {**transaction["metadata"], "additionalProperties": {"type": "string"}}
    accepted = _properties(spec, "payrecon.ingest.v1.SubmitTransactionResponse")
    assert {"status", "idempotencyKey", "messageId", "pollUrl", "expiresAt", "replayed"} == set(accepted)
    assert accepted["expiresAt"]["format"] == "date-time"
    balance = _properties(spec, "payrecon.ledger.v1.Balance")
    assert "account_id" in balance and "balanceMinor" in balance and "accountType" in balance
    assert balance["balanceMinor"]["type"] == "string" and balance["balanceMinor"]["format"] == "int64"
    entries = _properties(spec, "payrecon.ledger.v1.ListLedgerEntriesResponse")["entries"]
    assert entries["type"] == "array" and entries["items"] == {
        "$ref": "#/components/schemas/payrecon.ledger.v1.LedgerEntry"
    }
    ready = spec["paths"]["/api/v1/ready"]["get"]["responses"]
    assert set(ready) >= {"200", "503"}
    error = spec["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert set(_schema(spec, error)["properties"]) == {"code", "message", "details"}


def test_enums_nested_messages_and_body_fields_map_as_proto3_json_does(tmp_path: Path) -> None:
    """A contract shape payrecon does not use yet: an enum, a nested message, `body: "item"`."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="payrecon/demo/v1/demo.proto", package="payrecon.demo.v1")
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSPECIFIED", number=0)
    kind.value.add(name="KIND_CARD", number=1)
    item = file.message_type.add(name="Item")
    item.field.add(name="kind", number=1, type=field.TYPE_ENUM, type_name=".payrecon.demo.v1.Kind", json_name="kind")
    item.field.add(name="tags", number=2, type=field.TYPE_STRING, label=field.LABEL_REPEATED, json_name="tags")
    request = file.message_type.add(name="PutItemRequest")
    request.field.add(name="item_id", number=1, type=field.TYPE_STRING, json_name="itemId")
    request.field.add(
        name="item", number=2, type=field.TYPE_MESSAGE, type_name=".payrecon.demo.v1.Item", json_name="item"
    )
    request.field.add(name="dry_run", number=3, type=field.TYPE_BOOL, json_name="dryRun")
    method = file.service.add(name="DemoService").method.add(
        name="PutItem", input_type=".payrecon.demo.v1.PutItemRequest", output_type=".payrecon.demo.v1.Item"
    )
    rule = method.options.Extensions[annotations_pb2.http]
    rule.put = "/api/v1/items/{item_id}"
    rule.body = "item"
    descriptor, out = tmp_path / "demo.pb", tmp_path / "demo.json"
    descriptor.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    subprocess.run([sys.executable, str(SCRIPT), "--descriptor", str(descriptor), "--out", str(out)], check=True)
    spec = json.loads(out.read_text())
    operation = spec["paths"]["/api/v1/items/{item_id}"]["put"]
    assert [(p["name"], p["in"]) for p in operation["parameters"]] == [("item_id", "path"), ("dryRun", "query")]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/payrecon.demo.v1.Item"
    }
    properties = spec["components"]["schemas"]["payrecon.demo.v1.Item"]["properties"]
    assert properties["kind"] == {"type": "string", "enum": ["KIND_UNSPECIFIED", "KIND_CARD"]}
    assert properties["tags"] == {"type": "array", "items": {"type": "string"}}
