"""Writes gateway/openapi.json, the OpenAPI 3 description of the public REST API, from the
`google.api.http` annotations, messages and comments in gateway/descriptor.pb.

Run as `python gateway/openapi.py [--out FILE]` (`make protos` does, after building the descriptor set);
a unit test regenerates it and fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from services.devstack.public_api import DESCRIPTOR_SET, HttpBinding, Rpc, load_descriptor_set, public_rpcs
from services.ingest.api.errors import PUBLIC_METHODS, SERVICE_NAME

OUTPUT = Path(__file__).resolve().parent / "openapi.json"
# The probes answer without a token (the only public methods are ingest's).
OPEN_METHODS = tuple(f"/{SERVICE_NAME}/{method}" for method in PUBLIC_METHODS)
Schema = dict[str, Any]
Field = descriptor_pb2.FieldDescriptorProto

# The gateway prints proto3 JSON: 64-bit integers as strings, enums by name, Timestamps as RFC 3339.
SCALARS: dict[int, Schema] = {
    Field.TYPE_DOUBLE: {"type": "number", "format": "double"},
    Field.TYPE_FLOAT: {"type": "number", "format": "float"},
    Field.TYPE_INT32: {"type": "integer", "format": "int32"},
    Field.TYPE_SINT32: {"type": "integer", "format": "int32"},
    Field.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    Field.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    Field.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    Field.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    Field.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    Field.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    Field.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    Field.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    Field.TYPE_BOOL: {"type": "boolean"},
    Field.TYPE_STRING: {"type": "string"},
    Field.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    # payrecon's Value fields are amounts: a decimal string ("100.00") or, as the seed sends, a JSON number.
    "google.protobuf.Value": {"oneOf": [{"type": "number"}, {"type": "string"}]},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "uint32", "minimum": 0},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
}
# Statuses a servicer asks for through x-http-code (applied by the gateway's Lua filter): the
# descriptor cannot tell them, so they are listed here. Every other operation answers 200.
SUCCESS_STATUSES: dict[str, dict[str, str]] = {
    "payrecon.ingest.v1.IngestService.SubmitTransaction": {
        "202": "Accepted: the request is durable; poll pollUrl for its outcome (also for a replay)."
    },
    "payrecon.ingest.v1.IngestService.GetReadiness": {
        "200": "READY.",
        "503": "NOT_READY: components name the one that failed.",
    },
    "payrecon.ledger.v1.LedgerService.CreateAccount": {
        "201": "Opened.",
        "200": "The same definition again: the existing account.",
    },
    "payrecon.ledger.v1.LedgerService.ReverseTransfer": {
        "201": "Reversed.",
        "200": "The same key again: the existing reversal.",
    },
    "payrecon.reconciliation.v1.ReconciliationService.ImportStatement": {
        "201": "Imported (and matched): the summary.",
        "200": "The same file again: the first import's summary.",
        "400": "STATEMENT_INVALID: the summary lists every row error with its line; nothing was imported.",
    },
    "payrecon.reconciliation.v1.ReconciliationService.ImportStatementStream": {
        "201": "Imported (and matched): the summary.",
        "200": "The same file again: the first import's summary.",
        "400": "STATEMENT_INVALID: the summary lists every row error with its line; nothing was imported.",
    },
}
ERROR_BODY = "payrecon.common.v1.ErrorBody"
HTTP_BODY = "google.api.HttpBody"
# What an RPC answering google.api.HttpBody can send (the service picks the content type).
RAW_BODY_CONTENT: Schema = {
    "text/csv": {"schema": {"type": "string"}},
    "application/json": {"schema": {}},
}
ERROR_FALLBACK: Schema = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "array"}},
}
PATH_PARAMETER = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


@dataclass(frozen=True)
class _Message:
    proto: descriptor_pb2.DescriptorProto
    file: str
    path: tuple[int, ...]  # in its file's source info


class _Descriptors:
    """Messages, enums and comments of a descriptor set, by full name and source path."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.file_names: list[str] = [str(file.name) for file in files.file]
        self._comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for file in files.file:
            for location in file.source_code_info.location:
                text = _clean(location.leading_comments or location.trailing_comments)
                if text:
                    self._comments[(file.name, tuple(location.path))] = text
            for enum in file.enum_type:
                self.enums[f"{file.package}.{enum.name}"] = enum
            for index, message in enumerate(file.message_type):
                self._add(message, f"{file.package}.{message.name}", file.name, (4, index))

    def _add(self, message: descriptor_pb2.DescriptorProto, name: str, file: str, path: tuple[int, ...]) -> None:
        self.messages[name] = _Message(message, file, path)
        for index, nested in enumerate(message.nested_type):
            self._add(nested, f"{name}.{nested.name}", file, (*path, 3, index))
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self._comments.get((file, path), "")


def _clean(comment: str) -> str:
    return "\n".join(line.strip() for line in comment.strip().splitlines())


def _described(schema: Schema, description: str) -> Schema:
    if not description:
        return schema
    if "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref
        return {"description": description, "allOf": [schema]}
    return {"description": description, **schema}


class _Builder:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.descriptors = _Descriptors(files)
        self.schemas: dict[str, Schema] = {}

    def ref(self, name: str) -> Schema:
        """A reference to message `name`, adding its schema (and those it uses) to the components."""
        if name not in self.schemas:
            self.schemas[name] = {}  # claimed first: a message may refer to itself
            self.schemas[name] = self.message_schema(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def message_schema(self, name: str, without: frozenset[str] = frozenset()) -> Schema:
        message = self.descriptors.messages[name]
        properties = {}
        for index, field in enumerate(message.proto.field):
            if field.name not in without:
                doc = self.descriptors.comment(message.file, (*message.path, 2, index))
                properties[field.json_name] = _described(self.field_schema(field), doc)
        schema: Schema = {"type": "object", "properties": properties}
        return _described(schema, self.descriptors.comment(message.file, message.path))

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> Schema:
        if field.type == Field.TYPE_MESSAGE:
            entry = self.descriptors.messages[field.type_name.lstrip(".")].proto
            if entry.options.map_entry:  # JSON object keyed by the map's keys (always strings in JSON)
                return {"type": "object", "additionalProperties": self.field_schema(entry.field[1])}
        single = self.single_schema(field)
        return {"type": "array", "items": single} if field.label == Field.LABEL_REPEATED else single

    def single_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> Schema:
        type_name = field.type_name.lstrip(".")
        if field.type == Field.TYPE_MESSAGE:
            known = WELL_KNOWN.get(type_name)
            return json.loads(json.dumps(known)) if known is not None else self.ref(type_name)
        if field.type == Field.TYPE_ENUM:
            return {"type": "string", "enum": [value.name for value in self.descriptors.enums[type_name].value]}
        return dict(SCALARS[field.type])

    def query_parameters(self, field: descriptor_pb2.FieldDescriptorProto, prefix: str, depth: int = 0) -> list[Schema]:
        """Query parameters for a request field a GET does not bind in its path (nested messages by
        dotted name; maps cannot be sent as query parameters)."""
        name = f"{prefix}{field.json_name}"
        type_name = field.type_name.lstrip(".")
        if field.type == Field.TYPE_MESSAGE and type_name not in WELL_KNOWN:
            message = self.descriptors.messages[type_name]
            if message.proto.options.map_entry or field.label == Field.LABEL_REPEATED or depth >= 3:
                return []
            return [p for f in message.proto.field for p in self.query_parameters(f, f"{name}.", depth + 1)]
        return [{"name": name, "in": "query", "required": False, "schema": self.field_schema(field)}]

    def operation(self, rpc: Rpc, binding: HttpBinding, operation_id: str) -> Schema:
        request = self.descriptors.messages[rpc.input_type]
        fields = {field.name: (index, field) for index, field in enumerate(request.proto.field)}
        bound = PATH_PARAMETER.findall(binding.path)
        parameters = []
        for name in bound:
            if name not in fields:
                raise ValueError(f"{rpc.grpc_path}: path parameter {name!r} is not a top-level request field")
            index, field = fields[name]
            doc = self.descriptors.comment(request.file, (*request.path, 2, index))
            parameter: Schema = {"name": name, "in": "path", "required": True, "schema": self.single_schema(field)}
            parameters.append({**parameter, "description": doc} if doc else parameter)
        operation: Schema = {"operationId": operation_id, "tags": [rpc.service]}
        doc = self.descriptors.comment(self.file_of(rpc), (6, rpc.location[1], 2, rpc.location[2]))
        if doc:
            operation["description"] = doc
        operation["x-grpc-method"] = rpc.grpc_path
        if binding.body != "*":
            for name, (index, field) in fields.items():
                if name not in bound and name != binding.body:
                    for parameter in self.query_parameters(field, ""):
                        doc = self.descriptors.comment(request.file, (*request.path, 2, index))
                        parameters.append({**parameter, "description": doc} if doc else parameter)
        if parameters:
            operation["parameters"] = parameters
        if binding.body:
            if binding.body == "*":
                body = self.message_schema(rpc.input_type, frozenset(bound)) if bound else self.ref(rpc.input_type)
            else:
                body = self.field_schema(fields[binding.body][1])
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        statuses = SUCCESS_STATUSES.get(f"{rpc.full_service}.{rpc.method}", {"200": "OK."})
        output = self.ref(rpc.output_type)
        error = self.ref(ERROR_BODY) if ERROR_BODY in self.descriptors.messages else ERROR_FALLBACK
        responses: Schema = {
            # A 4xx the servicer answers with its own message (a refused statement's row errors) may
            # also be a plain error (a bad field): either shape.
            status: {
                "description": text,
                "content": {"application/json": {"schema": {"oneOf": [output, error]} if status >= "400" else output}},
            }
            for status, text in statuses.items()
        }
        if rpc.output_type == HTTP_BODY:
            # The transcoder sends an HttpBody's bytes as the body, with its content type: a file.
            responses = {"200": {"description": "The file.", "content": RAW_BODY_CONTENT}}
        if rpc.grpc_path in OPEN_METHODS:
            operation["security"] = []
        else:
            responses["401"] = {"$ref": "#/components/responses/Unauthenticated"}
            responses["403"] = {"$ref": "#/components/responses/Forbidden"}
        responses["default"] = {"$ref": "#/components/responses/Error"}
        operation["responses"] = responses
        return operation

    def file_of(self, rpc: Rpc) -> str:
        return self.descriptors.file_names[rpc.location[0]]


def build_openapi(files: descriptor_pb2.FileDescriptorSet) -> Schema:
    """The OpenAPI 3.0 document of every RPC with a google.api.http annotation in `files`."""
    builder = _Builder(files)
    paths: dict[str, Schema] = {}
    tags: dict[str, str] = {}
    for rpc in public_rpcs(files):
        tags.setdefault(rpc.service, builder.descriptors.comment(builder.file_of(rpc), (2,)))
        for number, binding in enumerate(rpc.bindings):
            operation_id = f"{rpc.service}_{rpc.method}" + (f"_{number}" if number else "")
            path = PATH_PARAMETER.sub(r"{\1}", binding.path)
            paths.setdefault(path, {})[binding.verb.lower()] = builder.operation(rpc, binding, operation_id)
    # The one error shape, as common/v1/errors.proto documents it (Envoy's own replies share it).
    error = builder.ref(ERROR_BODY) if ERROR_BODY in builder.descriptors.messages else ERROR_FALLBACK

    def error_response(description: str) -> Schema:
        return {"description": description, "content": {"application/json": {"schema": error}}}

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "payrecon REST API",
            "version": "v1",
            "description": (
                "The public REST surface of payrecon, served by its Envoy gateway (grpc_json_transcoder). "
                "Generated from the protos' google.api.http annotations by gateway/openapi.py; do not edit. "
                "Every operation but the probes needs `Authorization: Bearer <token>`. 64-bit integers "
                "are JSON strings; amounts in answers are decimal strings (`*Minor` fields carry the exact "
                "integers). Errors share one shape: {code, message, details}."
            ),
        },
        "servers": [{"url": "http://localhost:3000", "description": "the local stack (make run, docker compose)"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name, "description": text} if text else {"name": name} for name, text in tags.items()],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from PAYRECON_API_TOKENS; `demo-token-for-testing` in development.",
                }
            },
            "responses": {
                "Unauthenticated": error_response("AUTH_UNAUTHENTICATED: missing or invalid bearer token."),
                "Forbidden": error_response("AUTH_FORBIDDEN: the token lacks this operation's scope."),
                "Error": error_response("Bad input (400), unknown (404), conflict (409), unavailable (503), ..."),
            },
            "schemas": dict(sorted(builder.schemas.items())),
        },
    }


def render(descriptor_set: Path = DESCRIPTOR_SET) -> str:
    return json.dumps(build_openapi(load_descriptor_set(descriptor_set)), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--descriptor", type=Path, default=DESCRIPTOR_SET, help="descriptor set to read")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="file to write")
    args = parser.parse_args(argv)
    args.out.write_text(render(args.descriptor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
