"""Wrapping a gRPC server handler so that its behaviour runs inside a context: one place for the four
shapes a handler can take, used by the interceptors that only wrap the call's duration (the caller's
principal, the caller's trace context, the call's latency and status)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any

import grpc

# Called with the call's context (grpc.aio.ServicerContext); the manager's exit sees how the call ended.
Scope = Callable[[Any], AbstractContextManager[object]]


def within(handler: Any, scope: Scope) -> Any:
    """`handler` (None stays None) with every call's behaviour run inside `scope(context)`; a server-streaming
    behaviour stays inside it while it produces, including one that writes with context.write()."""
    if handler is None:
        return None
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def scoped_unary(request: Any, context: Any) -> Any:
            with scope(context):
                return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            scoped_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        streamed = handler.stream_unary

        async def scoped_stream(requests: Any, context: Any) -> Any:
            with scope(context):
                return await streamed(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            scoped_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        producing = handler.unary_stream

        async def scoped_produce(request: Any, context: Any) -> AsyncIterator[Any]:
            with scope(context):
                produced = producing(request, context)
                if not hasattr(produced, "__aiter__"):  # a handler that writes with context.write()
                    await produced
                    return
                async for item in produced:
                    yield item

        return grpc.unary_stream_rpc_method_handler(
            scoped_produce,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
