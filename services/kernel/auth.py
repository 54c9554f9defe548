"""Bearer-token authentication and scope checks for every RPC but the probes.

Tokens are configured as SHA-256 digests; the presented token is hashed and compared in constant
time against each. A missing or unknown token is UNAUTHENTICATED (401 through Envoy); a known token
lacking the method's scope is PERMISSION_DENIED (403).
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import grpc

from services.kernel.config import ApiToken, hash_token
from services.kernel.grpc_errors import Context, rich_status_metadata
from services.kernel.grpc_handlers import within

# Infrastructure that needs no token; a context adds its own probes (`public_methods`).
INFRASTRUCTURE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def find_token(tokens: Iterable[ApiToken], presented: str) -> ApiToken | None:
    digest = hash_token(presented)
    found = None
    for token in tokens:  # no early exit: every comparison runs
        if hmac.compare_digest(token.sha256_hex, digest):
            found = token
    return found


_principal: contextvars.ContextVar[str] = contextvars.ContextVar("payrecon_principal", default="")


def current_principal() -> str:
    """The name of the token that authenticated the RPC being served ('' outside one): the actor an
    audit trail records."""
    return _principal.get()


def _denied(handler: Any, status: grpc.StatusCode, code: str, message: str) -> Any:
    """A handler of the same shape as `handler` (unary or client-streamed request) that refuses the call."""

    async def deny(request: Any, context: Context) -> Any:
        await context.abort(status, message, trailing_metadata=rich_status_metadata(status, code, message))

    if handler is not None and handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
    if handler is not None and handler.unary_stream is not None:

        async def deny_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await deny(request, context)
            yield  # unreachable: abort raises; makes this an async generator

        return grpc.unary_stream_rpc_method_handler(
            deny_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(deny)


@contextlib.contextmanager
def _acting_as(principal: str) -> Iterator[None]:
    """The principal set while the block runs."""
    token = _principal.set(principal)
    try:
        yield
    finally:
        _principal.reset(token)


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Checks `authorization: Bearer <token>` metadata; `scopes` maps full method name → required scope.
    `public_methods` (full names) need no token, like the infrastructure services."""

    def __init__(
        self, tokens: Iterable[ApiToken], scopes: Mapping[str, str], public_methods: Iterable[str] = ()
    ) -> None:
        self._tokens = tuple(tokens)
        self._scopes = dict(scopes)
        self._public = INFRASTRUCTURE_PREFIXES + tuple(public_methods)

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if method.startswith(self._public):
            return await continuation(handler_call_details)
        header = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                header = value
        scheme, _, presented = header.partition(" ")
        token = find_token(self._tokens, presented.strip()) if scheme.lower() == "bearer" and presented else None
        handler = await continuation(handler_call_details)
        if token is None:
            return _denied(
                handler, grpc.StatusCode.UNAUTHENTICATED, "AUTH_UNAUTHENTICATED", "missing or invalid bearer token"
            )
        required = self._scopes.get(method)
        if required is None or not token.grants(required):
            return _denied(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                "AUTH_FORBIDDEN",
                f"token lacks the scope {required or 'for this method'}",
            )
        return within(handler, lambda context: _acting_as(token.name))
