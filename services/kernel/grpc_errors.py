"""The mechanism that turns a context's typed domain errors into gRPC statuses.

Each context declares one ErrorTable in its `api/errors.py`: error class → gRPC code and stable
machine code. The error interceptor applies it; anything unmapped becomes INTERNAL with a sanitized
message and a log line carrying the trace id — except a database outage (kernel.db.is_outage), which
is UNAVAILABLE whichever adapter let it through. The machine code travels as google.rpc.ErrorInfo.reason
in grpc-status-details-bin, which Envoy turns into the REST body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from services.kernel.db import is_outage
from services.kernel.errors import DomainError, NotFound, Unavailable, ValidationError

log = logging.getLogger(__name__)

# Any servicer method's context (the request and response types do not matter to the edges).
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

ERROR_DOMAIN = "payrecon"


@dataclass(frozen=True)
class ErrorMapping:
    status: grpc.StatusCode
    code: str


@dataclass
class ErrorTable:
    """error class → (gRPC status, stable machine code). Looked up along the class's MRO."""

    entries: dict[type[DomainError], ErrorMapping] = field(default_factory=dict)

    def lookup(self, error: DomainError) -> ErrorMapping | None:
        for cls in type(error).__mro__:
            if cls in self.entries:
                return self.entries[cls]
        return None


def rich_status_metadata(
    status: grpc.StatusCode,
    code: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[tuple[str, str]] = (),
) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.ErrorInfo(reason=code, domain=ERROR_DOMAIN, metadata=dict(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in violations
            ]
        )
        details.append(any_pb2.Any())
        details[-1].Pack(bad_request)
    rpc_status = status_pb2.Status(code=status.value[0], message=message, details=details)
    return (("grpc-status-details-bin", rpc_status.SerializeToString()),)


async def abort_with(
    context: Context,
    status: grpc.StatusCode,
    code: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[tuple[str, str]] = (),
) -> None:
    """Ends the RPC with `status`, carrying the machine code as google.rpc.ErrorInfo (and the
    violations, if any, as google.rpc.BadRequest)."""
    trailers = rich_status_metadata(status, code, message, metadata, violations)
    await context.abort(status, message, trailing_metadata=trailers)


def machine_code_of(error: grpc.aio.AioRpcError) -> str | None:
    """The machine code a payrecon service put in an error's details, if any (client side)."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            rpc_status = status_pb2.Status.FromString(value)
            for detail in rpc_status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return None


def violations_of(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs a payrecon service put in an error's google.rpc.BadRequest (client side)."""
    metadata: Any = (error.trailing_metadata() if isinstance(error, grpc.Call) else None) or ()
    found: list[tuple[str, str]] = []
    for key, value in metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


Handler = Callable[[Any, Context], Awaitable[Any]]


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Applies a service's ErrorTable to every unary RPC."""

    def __init__(self, table: ErrorTable) -> None:
        self._table = table

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            unary: Handler = handler.unary_unary

            async def mapped_unary(request: Any, context: Context) -> Any:
                return await self._mapped(method, context, unary(request, context))

            return grpc.unary_unary_rpc_method_handler(
                mapped_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            streamed: Handler = handler.stream_unary

            async def mapped_stream(requests: Any, context: Context) -> Any:
                return await self._mapped(method, context, streamed(requests, context))

            return grpc.stream_unary_rpc_method_handler(
                mapped_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            producing = handler.unary_stream
            mapped = self._mapped

            async def mapped_stream_out(request: Any, context: Context) -> AsyncIterator[Any]:
                produced = producing(request, context)
                if not hasattr(produced, "__aiter__"):  # a handler that writes with context.write()
                    await mapped(method, context, produced)
                    return
                items = produced.__aiter__()
                while True:
                    try:
                        item = await mapped(method, context, items.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                mapped_stream_out,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _mapped(self, method: str, context: Context, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except DomainError as error:
            mapping = self._table.lookup(error)
            if mapping is None:
                log.exception("unmapped domain error", extra={"fields": {"method": method}})
                await abort_with(context, grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")
                raise  # unreachable: abort raises
            metadata = dict(error.metadata)
            if error.field:
                metadata["field"] = error.field
            await abort_with(
                context, mapping.status, error.code or mapping.code, error.message, metadata, error.violations
            )
        except (grpc.aio.AbortError, grpc.RpcError, StopAsyncIteration):
            raise
        except Exception as error:
            if is_outage(error):  # an adapter that did not say so itself: still an outage, not a bug
                log.warning("dependency unavailable", exc_info=True, extra={"fields": {"method": method}})
                await abort_with(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    "a dependency is unavailable; retry the same request in a few seconds",
                )
            log.exception("unhandled error", extra={"fields": {"method": method}})
            await abort_with(context, grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")


BASE_TABLE: dict[type[DomainError], ErrorMapping] = {
    ValidationError: ErrorMapping(grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
    NotFound: ErrorMapping(grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    # Through Envoy: 503, which callers may retry with the same idempotency key.
    Unavailable: ErrorMapping(grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE"),
}
