"""Builds a service's grpc.aio server: metrics, auth, tracing and error mapping interceptors, health,
reflection; and the probe-only server of a process that serves no RPCs of its own (the ledger worker)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kernel.auth import BearerAuthInterceptor
from services.kernel.config import ApiToken
from services.kernel.grpc_errors import Context, ErrorMappingInterceptor, ErrorTable
from services.kernel.metrics import rpc_metrics_interceptor
from services.kernel.telemetry import grpc_server_interceptor

Registration = Callable[[grpc.aio.Server], None]


async def create_server(
    address: str,
    *,
    service_names: Iterable[str],
    register: Iterable[Registration],
    tokens: Iterable[ApiToken],
    scopes: Mapping[str, str],
    errors: ErrorTable,
    public_methods: Iterable[str] = (),
) -> tuple[grpc.aio.Server, int, Any]:
    """Binds `address` (port 0 picks a free one) and returns (server, bound port, health servicer).

    The server is not started; callers `await server.start()` and later `await server.stop(grace)`.
    """
    # Metrics first: it sees every call with the status the caller gets, refusals included.
    measuring = rpc_metrics_interceptor()
    interceptors: list[Any] = [
        *([measuring] if measuring is not None else []),
        grpc_server_interceptor(),
        BearerAuthInterceptor(tokens, scopes, public_methods),
        ErrorMappingInterceptor(errors),
    ]
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    for add in register:
        add(server)
    port, health_servicer = await _add_health_and_bind(server, address, list(service_names))
    return server, port, health_servicer


async def create_probe_server(address: str, *, service_names: Iterable[str]) -> tuple[grpc.aio.Server, int, Any]:
    """A server with health and reflection only, for a process whose work is not RPCs (a queue
    worker): Kubernetes' gRPC probes and `payrecon health` ask it, nothing else does, so it needs
    no token. Returns (server, bound port, health servicer), not started, like `create_server`."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    port, health_servicer = await _add_health_and_bind(server, address, list(service_names))
    return server, port, health_servicer


async def _add_health_and_bind(server: grpc.aio.Server, address: str, names: list[str]) -> tuple[int, Any]:
    """Registers health (every name and the server's "" SERVING) and reflection, binds `address`."""
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # health.aio is set at import time
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return port, health_servicer


async def set_http_status(context: Context, status: int) -> None:
    """Asks the gateway to answer with `status` (Envoy's Lua filter reads x-http-code)."""
    await context.send_initial_metadata((("x-http-code", str(status)),))


def scopes_for(service: str, scopes: Mapping[str, str]) -> dict[str, str]:
    """{'Method': 'scope'} → {'/pkg.Service/Method': 'scope'}."""
    return {f"/{service}/{method}": scope for method, scope in scopes.items()}
