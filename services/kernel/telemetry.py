"""OpenTelemetry setup and trace-context propagation through SQS message attributes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from services.kernel.grpc_handlers import within

_configured = False
_exporting = False


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Installs a tracer provider; spans are exported over OTLP/gRPC only when an endpoint is set.
    Without one nothing would ever read a span, so none is recorded (ALWAYS_OFF: spans are no-ops
    that still carry the trace context on)."""
    global _configured, _exporting
    if _configured:
        return
    resource = Resource.create({"service.name": f"payrecon-{service}"})
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    else:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)
    _configured = True
    _exporting = bool(otlp_endpoint)


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
        return within(handler, lambda: _attached(remote))


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


def current_traceparent() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str) -> Context:
    return propagate.extract({"traceparent": traceparent} if traceparent else {})
