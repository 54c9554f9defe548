"""One transfer is one trace: an OTLP receiver in this process collects the spans of every process of a
stack started with PAYRECON_OTLP_ENDPOINT pointing at it (Envoy's included), and one POST, sent with a
caller's traceparent, must give spans in that trace from Envoy, ingest, the ingest relay, the ledger
worker, the ledger's relay and reconciliation, each the child of the hop before it."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from services.devstack.stack import Stack
from tests.conftest import start_stack
from tests.e2e.test_rest_flow import AUTH, seed_body, wait_for_outcome

pytestmark = pytest.mark.e2e

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]
    links: frozenset[str]  # the span ids it links to

    def follows(self, earlier: ReceivedSpan) -> bool:
        """The child of `earlier`, or linked to it (a batch that carried it among others)."""
        return self.parent_id == earlier.span_id or earlier.span_id in self.links

    def __str__(self) -> str:
        return (
            f"{self.service}: {self.name} ({trace_pb2.Span.SpanKind.Name(self.kind)}) {self.span_id}<-{self.parent_id}"
        )


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace endpoint keeping every span it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: a.value.string_value for a in span.attributes},
                            links=frozenset(link.span_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans_of(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]

    def all_spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[OtlpReceiver, int]]:
    collector = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield collector, port
    finally:
        server.stop(grace=1)


@pytest.fixture(scope="module")
def traced_stack(
    receiver: tuple[OtlpReceiver, int], server_database_url: str, redis_url: str, state_dir: Path, sqs_endpoint: str
) -> Iterator[Stack]:
    _, port = receiver
    running = start_stack(
        server_database_url,
        redis_url,
        state_dir,
        # Spans leave each service every 200 ms instead of every 5 s.
        {"PAYRECON_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "200"},
        sqs_url=sqs_endpoint,
    )
    try:
        yield running
    finally:
        running.stop()


def one(spans: list[ReceivedSpan], what: str, test: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
    found = [s for s in spans if test(s)]
    assert len(found) == 1, f"expected one {what}, found {len(found)} in:\n" + "\n".join(map(str, spans))
    return found[0]


def is_call_to(span: ReceivedSpan, system: str) -> bool:
    """A client span of the instrumentation packages calling `system` (old or new semantic conventions)."""
    return span.kind == CLIENT and system in (span.attributes.get("db.system"), span.attributes.get("db.system.name"))


def is_sql(span: ReceivedSpan) -> bool:
    return is_call_to(span, "postgresql")


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


def test_one_transfer_is_one_trace_across_every_process(
    traced_stack: Stack, receiver: tuple[OtlpReceiver, int]
) -> None:
    collector, _ = receiver
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    key = f"trace-{uuid.uuid4()}"
    with httpx.Client(base_url=traced_stack.base_url, headers=AUTH, timeout=30) as client:
        response = client.post(
            "/api/v1/transactions",
            json=seed_body(key, f"trace-payer-{key}", f"trace-payee-{key}", "12.34"),
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert response.status_code == 202, response.text
        assert wait_for_outcome(client, key)["status"] == "COMPLETED"

    # The last hops: the outcome event consumed by ingest (status) and reconciliation (projection),
    # each with its database statements; then everything before them has been exported too (every
    # process sends every 200 ms, Envoy every 5 s).
    wanted = {
        "payrecon-envoy",
        "payrecon-ingest",
        "payrecon-ledger-worker",
        "payrecon-ledger",
        "payrecon-reconciliation",
    }

    def complete(spans: list[ReceivedSpan]) -> bool:
        consumers_with_sql = {s.service for s in spans if s.kind == CONSUMER and any(map(is_sql, children(spans, s)))}
        return (
            wanted <= {s.service for s in spans}
            and {
                "payrecon-ingest",
                "payrecon-ledger-worker",
                "payrecon-reconciliation",
            }
            <= consumers_with_sql
        )

    deadline = time.monotonic() + 60
    spans = collector.spans_of(trace_id)
    while not complete(spans) and time.monotonic() < deadline:
        time.sleep(0.5)
        spans = collector.spans_of(trace_id)
    assert complete(spans), "incomplete trace:\n" + "\n".join(map(str, spans))

    # Envoy: the server span of the request, the child of the caller's.
    envoy = one(spans, "Envoy server span", lambda s: s.service == "payrecon-envoy" and s.kind == SERVER)
    assert envoy.parent_id == caller_span
    # Ingest: its gRPC server span is the child of Envoy's (traceparent through the transcoder).
    submit = one(
        spans,
        "ingest SubmitTransaction span",
        lambda s: s.service == "payrecon-ingest" and s.kind == SERVER and s.name.endswith("/SubmitTransaction"),
    )
    assert submit.parent_id == envoy.span_id
    # The group commit writing the request and its outbox row (PostgreSQL), then its key (Redis).
    commit = one(spans, "ingest group commit span", lambda s: s.name == "ingest group commit")
    assert commit.parent_id == submit.span_id
    assert any(map(is_sql, children(spans, commit)))
    assert any(is_call_to(c, "redis") for c in children(spans, commit))
    # The ingest relay publishes the request's outbox row: its span is the child of the request.
    publish = one(
        spans, "ingest publish span", lambda s: s.service == "payrecon-ingest" and s.name == "ingest outbox publish"
    )
    assert publish.kind == PRODUCER and publish.parent_id == submit.span_id
    # The ledger worker's batch (context from the SQS message attributes) posts in PostgreSQL.
    posting = one(
        spans, "ledger worker batch span", lambda s: s.service == "payrecon-ledger-worker" and s.kind == CONSUMER
    )
    assert posting.parent_id == publish.span_id
    assert any(map(is_sql, children(spans, posting)))
    # The ledger's relay publishes the outcome event the worker wrote to the ledger's outbox.
    outcome = one(
        spans, "ledger publish span", lambda s: s.service == "payrecon-ledger" and s.name == "ledger outbox publish"
    )
    assert outcome.kind == PRODUCER and outcome.parent_id == posting.span_id
    # Ingest (status update) and reconciliation (projection) consume it, each in PostgreSQL.
    for service in ("payrecon-ingest", "payrecon-reconciliation"):
        consumer = one(spans, f"{service} event consumer", lambda s, n=service: s.service == n and s.kind == CONSUMER)
        assert consumer.parent_id == outcome.span_id, consumer
        assert any(map(is_sql, children(spans, consumer))), service
    # Every span of the trace hangs from the caller's: no hop started a trace of its own.
    ids = {s.span_id for s in spans} | {caller_span}
    assert [s for s in spans if s.parent_id not in ids] == []


def missing_hops(spans: list[ReceivedSpan], submit: ReceivedSpan) -> list[str]:
    """The hops a transfer's request does not lead to, through parents and links: its group commit and
    outbox publish in ingest, the worker batch that posted it, the ledger's publish of the outcome,
    and the outcome's consumers in ingest and reconciliation."""

    def following(earlier: list[ReceivedSpan], test: Callable[[ReceivedSpan], bool]) -> list[ReceivedSpan]:
        return [s for s in spans if test(s) and any(s.follows(e) for e in earlier)]

    hops = {
        "ingest group commit": following([submit], lambda s: s.name == "ingest group commit"),
        "ingest outbox publish": following([submit], lambda s: s.name == "ingest outbox publish"),
    }
    hops["ledger worker batch"] = following(
        hops["ingest outbox publish"], lambda s: s.service == "payrecon-ledger-worker" and s.kind == CONSUMER
    )
    hops["ledger outbox publish"] = following(hops["ledger worker batch"], lambda s: s.name == "ledger outbox publish")
    for service in ("payrecon-ingest", "payrecon-reconciliation"):
        hops[f"{service} event batch"] = following(
            hops["ledger outbox publish"], lambda s, n=service: s.service == n and s.kind == CONSUMER
        )
    return [hop for hop, found in hops.items() if not found]


def test_transfers_sent_together_each_lead_to_every_batch_that_carried_them(
    traced_stack: Stack, receiver: tuple[OtlpReceiver, int]
) -> None:
    """Sent at once, transfers share group commits, outbox publishes and SQS batches, each batch in the
    trace of its first transfer: every other transfer's request is linked from the batch instead."""
    collector, _ = receiver
    run = uuid.uuid4().hex[:8]
    callers = {f"traces-{run}-{i}": (secrets.token_hex(16), secrets.token_hex(8)) for i in range(20)}

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=traced_stack.base_url, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/transactions",
                        json=seed_body(key, f"traces-payer-{run}-{i % 4}", f"traces-payee-{run}", "1.00"),
                        headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
                    )
                    for i, (key, (trace_id, span_id)) in enumerate(callers.items())
                )
            )

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [202] * len(callers), [r.text for r in responses]
    with httpx.Client(base_url=traced_stack.base_url, headers=AUTH, timeout=30) as client:
        for key in callers:
            assert wait_for_outcome(client, key)["status"] == "COMPLETED"

    def gaps() -> dict[str, list[str]]:
        spans = collector.all_spans()
        found = {}
        for key, (trace_id, _) in callers.items():
            submits = [
                s
                for s in spans
                if s.trace_id == trace_id and s.kind == SERVER and s.name.endswith("/SubmitTransaction")
            ]
            found[key] = missing_hops(spans, submits[0]) if submits else ["ingest SubmitTransaction"]
        return {key: missing for key, missing in found.items() if missing}

    deadline = time.monotonic() + 60
    while gaps() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gaps() == {}
