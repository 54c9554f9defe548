"""OpenTelemetry: one trace per transfer across Envoy, the services, SQS and PostgreSQL.

Spans come from the instrumentation packages (gRPC servers and clients, asyncpg, Redis) and, where
work is done for many requests at once (a group commit, an outbox publish, a received SQS batch),
from `batch_span`: the child of the first request's trace, linked to the others'. Trace context
crosses SQS in message attributes and the outboxes in a `traceparent` column.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from services.kernel.grpc_handlers import within

_configured = False
_exporting = False
tracer = trace.get_tracer(__name__)

# Links a batch span keeps (the SDK's default span limit): a batch of thousands of transfers links
# the first ones; the rest of the batch is still in the span's attributes.
MAX_LINKS = 128


class NoOrphanCalls(Sampler):
    """Root sampler: every operation that starts a trace (a request, a received message, a batch) is
    recorded, but not a database, Redis or gRPC call made outside any (a relay's poll finding
    nothing, a health probe's ping, a periodic job's query): several a second per process, each of
    which would be a trace of its own."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "NoOrphanCalls"


def exporting_sampler() -> Sampler:
    """What is recorded when spans are exported: a span whose parent was recorded, and a root span
    unless it is an orphan call (see NoOrphanCalls)."""
    return ParentBased(root=NoOrphanCalls())


def service_resource(service: str) -> Resource:
    """The OpenTelemetry resource of a payrecon process: its spans and its metrics carry this name."""
    return Resource.create({"service.name": f"payrecon-{service}"})


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Installs a tracer provider; spans are exported over OTLP/gRPC only when an endpoint is set.
    Without one nothing would ever read a span, so none is recorded (ALWAYS_OFF), the database and
    Redis clients are left uninstrumented, and batches make no span (see `batch_span`).

    The exporter's batching follows the standard OTEL_BSP_* variables (OTEL_BSP_SCHEDULE_DELAY:
    how often spans are sent, 5 s by default)."""
    global _configured, _exporting
    if _configured:
        return
    resource = service_resource(service)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        provider = TracerProvider(resource=resource, sampler=exporting_sampler())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
        # asyncpg under SQLAlchemy too: one span per statement, SQL text without its parameters.
        AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        RedisInstrumentor().instrument(tracer_provider=provider)
    else:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)
    _configured = True
    _exporting = bool(otlp_endpoint)


def flush_traces() -> None:
    """Sends the spans still batched (a process on its way out) and stops the exporter."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


@contextlib.contextmanager
def batch_span(name: str, contexts: Iterable[Context], kind: SpanKind = SpanKind.INTERNAL) -> Iterator[trace.Span]:
    """The current span while work is done at once for many traces (the requests of a group commit,
    the rows of an outbox publish, the messages of an SQS receive): the child of the first trace in
    `contexts`, linked to the other distinct ones (up to MAX_LINKS). One transfer alone is then one
    trace from end to end; a transfer batched with others reaches the batch by its link.

    When spans are not exported nothing is done (`contexts` is not even iterated) and the span is
    the current one, unchanged."""
    if not _exporting:
        yield trace.get_current_span()
        return
    parent: Context | None = None
    seen: set[int] = set()
    links: list[Link] = []
    for context in contexts:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid or span_context.span_id in seen:
            continue
        seen.add(span_context.span_id)
        if parent is None:
            parent = context
        elif len(links) < MAX_LINKS:
            links.append(Link(span_context))
        else:
            break
    with tracer.start_as_current_span(name, context=parent, kind=kind, links=links) as span:
        yield span


def grpc_server_interceptor() -> Any:
    """Server spans for every RPC (rpc.grpc.status_code included) but health checks: probes every few
    seconds are noise, and the interceptor breaks Health.Watch (it iterates the handler, a coroutine).
    When spans are not exported, only the caller's trace context is carried through the RPC."""
    if not _exporting:
        return TraceContextInterceptor()
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return aio_server_interceptor(filter_=filters.negate(filters.health_check()))  # type: ignore[no-untyped-call]


class TraceContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Makes the caller's `traceparent` (if it sent one) current while an RPC runs, so
    what the RPC hands on (outbox rows, SQS attributes) stays in the caller's trace; no span, no
    attributes. An RPC without it — most, when nothing traces — is left untouched."""

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        carrier = {
            key: value
            for key, value in handler_call_details.invocation_metadata or ()
            if key in ("traceparent", "tracestate") and isinstance(value, str)
        }
        if handler is None or "traceparent" not in carrier:
            return handler
        remote = propagate.extract(carrier)
        return within(handler, lambda context: _attached(remote))


@contextlib.contextmanager
def _attached(remote: Context) -> Iterator[None]:
    """`remote` is the current OpenTelemetry context while the block runs."""
    token = otel_context.attach(remote)
    try:
        yield
    finally:
        otel_context.detach(token)


def grpc_client_interceptors() -> list[Any]:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def inject_message_attributes() -> dict[str, dict[str, str]]:
    """The current trace context as SQS MessageAttributes."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: {"DataType": "String", "StringValue": v} for k, v in carrier.items()}


def extract_message_context(message: dict[str, Any]) -> Context:
    """The trace context an SQS message carries in its MessageAttributes."""
    attributes = message.get("MessageAttributes") or {}
    carrier = {k: v.get("StringValue", "") for k, v in attributes.items() if isinstance(v, dict)}
    return propagate.extract(carrier)


def trace_context_of(context: contextvars.Context) -> Context:
    """The trace context that was current where `context` was copied (a caller's, in a batch)."""
    return context.run(otel_context.get_current)


def current_traceparent() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str) -> Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})
