"""The error interceptor: a database outage that reaches it unnamed is UNAVAILABLE (503, retryable),
anything else unmapped is INTERNAL — never the other way round."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from services.kernel.grpc_errors import BASE_TABLE, ErrorMappingInterceptor, ErrorTable


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.status: grpc.StatusCode | None = None
        self.message = ""

    async def abort(self, status: grpc.StatusCode, message: str, trailing_metadata: Any = ()) -> None:
        self.status, self.message = status, message
        raise Aborted


async def answer_to(error: Exception) -> FakeContext:
    async def behavior(request: Any, context: Any) -> Any:
        raise error

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behavior)

    interceptor = ErrorMappingInterceptor(ErrorTable(dict(BASE_TABLE)))
    details = type("Details", (), {"method": "/payrecon.test.v1.Service/Method", "invocation_metadata": ()})()
    handler = await interceptor.intercept_service(continuation, details)
    context = FakeContext()
    with pytest.raises(Aborted):
        await handler.unary_unary(b"", context)
    return context


async def test_an_unnamed_outage_is_unavailable_and_a_bug_is_internal() -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    wrapped = RuntimeError("posting failed")
    wrapped.__cause__ = refused
    for outage in (refused, TimeoutError(), wrapped):
        context = await answer_to(outage)
        assert context.status is grpc.StatusCode.UNAVAILABLE and "retry" in context.message
    bug = await answer_to(KeyError("oops"))
    assert (bug.status, bug.message) == (grpc.StatusCode.INTERNAL, "internal error")
