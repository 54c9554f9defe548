"""OpenTelemetry setup and trace-context propagation through SQS message attributes."""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Installs a tracer provider; spans are exported over OTLP/gRPC only when an endpoint is set."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"payrecon-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    _configured = True


def grpc_server_interceptor() -> Any:
    """Server spans for every RPC (rpc.grpc.status_code included) but health checks: probes every few
    seconds are noise, and the interceptor breaks Health.Watch (it iterates the handler, a coroutine)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return aio_server_interceptor(filter_=filters.negate(filters.health_check()))  # type: ignore[no-untyped-call]


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
