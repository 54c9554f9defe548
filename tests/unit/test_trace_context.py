"""When spans are not exported, the server interceptor only carries the caller's trace context: an
RPC that sent a traceparent runs with it current (so what it hands on stays in the caller's trace),
one that did not is served by its own handler, untouched. No IO."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from services.kernel.telemetry import TraceContextInterceptor, current_traceparent, grpc_server_interceptor

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
