"""When spans are not exported, the server interceptor only carries the caller's trace context: an
RPC that sent a traceparent runs with it current (so what it hands on stays in the caller's trace),
one that did not is served by its own handler, untouched; batches build no span. When they are, what
is recorded. No IO."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from services.kernel.telemetry import (
    TraceContextInterceptor,
    batch_span,
    context_from_traceparent,
    current_traceparent,
    exporting_sampler,
    grpc_server_interceptor,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass(frozen=True)
class CallDetails:
    method: str
    invocation_metadata: Sequence[tuple[str, str]]


async def serve(metadata: Sequence[tuple[str, str]]) -> tuple[Any, Any, str]:
    seen: list[str] = []

    async def behavior(request: Any, context: Any) -> str:
        seen.append(current_traceparent())
        return "answer"

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details: Any) -> Any:
        return handler

    served = await TraceContextInterceptor().intercept_service(continuation, CallDetails("/svc/Method", metadata))
    assert await served.unary_unary(object(), None) == "answer"
    return handler, served, seen[0]


async def test_a_callers_traceparent_is_current_while_its_rpc_runs() -> None:
    _, _, seen = await serve([("authorization", "Bearer x"), ("traceparent", TRACEPARENT)])
    assert seen == TRACEPARENT
    assert current_traceparent() == ""  # and only while it runs


async def test_an_rpc_without_one_keeps_its_own_handler() -> None:
    handler, served, seen = await serve([("authorization", "Bearer x")])
    assert served is handler and seen == ""


def test_spans_are_not_built_when_nothing_exports_them() -> None:
    assert isinstance(grpc_server_interceptor(), TraceContextInterceptor)  # tracing was not configured here


def test_batches_read_no_trace_context_when_nothing_exports_spans() -> None:
    def contexts() -> Iterator[Context]:
        raise AssertionError("read the batch's trace contexts")
        yield Context()

    with batch_span("a batch", contexts()) as span:
        assert not span.is_recording()


def test_calls_made_outside_any_traced_operation_are_not_recorded() -> None:
    """A relay's idle poll or a probe's ping starts no trace; the same call within a request is
    recorded, and so is every operation that starts a trace (a request, a received batch)."""
    provider = TracerProvider(sampler=exporting_sampler())
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as orphan:
        assert not orphan.is_recording()
    for kind in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.INTERNAL):
        with tracer.start_as_current_span("operation", kind=kind) as operation:
            assert operation.is_recording(), kind
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as call:
                assert call.is_recording(), kind
    # A caller that did not sample its trace decides for everything in it.
    unsampled = context_from_traceparent(TRACEPARENT[:-2] + "00")
    with tracer.start_as_current_span("operation", context=unsampled, kind=SpanKind.SERVER) as operation:
        assert not operation.is_recording()
