"""The public API as the descriptor set declares it: an RPC is public exactly when it carries a
`google.api.http` annotation. The gateway's routes and the OpenAPI description are both built from it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = REPO_ROOT / "gateway" / "descriptor.pb"
VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class HttpBinding:
    """One REST form of an RPC: `verb` and path template, and which request field the body fills."""

    verb: str  # GET, POST, ...
    path: str  # /api/v1/accounts/{account_id}/balance
    body: str  # "*" (every field not in the path), one field's name, or "" (no body)


@dataclass(frozen=True)
class Rpc:
    """One method of a payrecon gRPC service, with its REST bindings (none when internal)."""

    package: str  # payrecon.ledger.v1
    service: str  # LedgerService
    method: str  # GetBalance
    input_type: str  # payrecon.ledger.v1.GetBalanceRequest
    output_type: str
    bindings: tuple[HttpBinding, ...]
    # Where the method sits in its file's source info, for its comments: (file index, service, method).
    location: tuple[int, int, int]
    streaming: bool = False  # client- or server-streamed: a stream lasts as long as it needs

    @property
    def full_service(self) -> str:
        return f"{self.package}.{self.service}"

    @property
    def grpc_path(self) -> str:
        return f"/{self.full_service}/{self.method}"

    @property
    def context(self) -> str:
        """The bounded context serving it: payrecon.<context>.v1."""
        return self.package.split(".")[1]

    @property
    def public(self) -> bool:
        return bool(self.bindings)


def load_descriptor_set(path: Path = DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    # annotations_pb2 is imported above, so the google.api.http option is parsed, not left unknown.
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def _bindings(rule: http_pb2.HttpRule, where: str) -> Iterator[HttpBinding]:
    verb = rule.WhichOneof("pattern")
    if verb is None:
        return
    if verb not in VERBS:
        raise ValueError(f"{where}: google.api.http pattern {verb!r} is not supported by the gateway")
    yield HttpBinding(verb.upper(), getattr(rule, verb), rule.body)
    for extra in rule.additional_bindings:
        yield from _bindings(extra, where)


def rpcs(files: descriptor_pb2.FileDescriptorSet) -> list[Rpc]:
    """Every method of every payrecon service, in descriptor order."""
    found = []
    for file_index, file in enumerate(files.file):
        if not file.package.startswith("payrecon."):
            continue
        for service_index, service in enumerate(file.service):
            for method_index, method in enumerate(service.method):
                rule = method.options.Extensions[annotations_pb2.http]
                where = f"{file.package}.{service.name}.{method.name}"
                found.append(
                    Rpc(
                        package=file.package,
                        service=service.name,
                        method=method.name,
                        input_type=method.input_type.lstrip("."),
                        output_type=method.output_type.lstrip("."),
                        bindings=tuple(_bindings(rule, where)),
                        location=(file_index, service_index, method_index),
                        streaming=method.client_streaming or method.server_streaming,
                    )
                )
    return found


def public_rpcs(files: descriptor_pb2.FileDescriptorSet) -> list[Rpc]:
    return [rpc for rpc in rpcs(files) if rpc.public]


def internal_rpcs(files: descriptor_pb2.FileDescriptorSet) -> list[Rpc]:
    return [rpc for rpc in rpcs(files) if not rpc.public]
