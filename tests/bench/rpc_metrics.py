"""CPU per RPC of the metrics interceptor (services.kernel.metrics.RpcMetricsInterceptor): the same
trivial unary handler called directly and through the interceptor, with the meter provider a process
with PAYRECON_METRICS_ADDRESS has (the Prometheus reader; no OTLP), and a scrape-sized collection in
between so the histogram holds the series a real process holds. CPU from resource.getrusage (this
process only), wall time beside it, and the load average: a shared machine's figures.

    python -m tests.bench.rpc_metrics [--calls 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from services.kernel.metrics import RpcMetricsInterceptor, prometheus_reader

METHOD = "/payrecon.ingest.v1.IngestService/SubmitTransaction"


class Context:
    def code(self) -> Any:
        return None


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def per_call(call: Callable[[], Awaitable[object]], calls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call."""
    started_cpu, started = cpu(), time.perf_counter()
    for _ in range(calls):
        await call()
    return (cpu() - started_cpu) / calls * 1e6, (time.perf_counter() - started) / calls * 1e6


async def measure(calls: int, rounds: int) -> None:
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[prometheus_reader(registry)])

    async def answer(request: Any, context: Any) -> str:
        return "accepted"

    handler = grpc.unary_unary_rpc_method_handler(answer)

    async def continuation(details: Any) -> Any:
        return handler

    details = SimpleNamespace(method=METHOD, invocation_metadata=())
    measured = await RpcMetricsInterceptor(provider.get_meter("payrecon")).intercept_service(continuation, details)
    context, request = Context(), object()
    direct = handler.unary_unary
    through = measured.unary_unary
    await per_call(lambda: through(request, context), 1000)  # the series exists before timing
    generate_latest(registry)
    for round_number in range(1, rounds + 1):
        bare_cpu, bare_wall = await per_call(lambda: direct(request, context), calls)
        with_cpu, with_wall = await per_call(lambda: through(request, context), calls)
        print(
            f"round {round_number}: handler alone {bare_cpu:.2f} µs CPU ({bare_wall:.2f} wall); "
            f"through the interceptor {with_cpu:.2f} µs CPU ({with_wall:.2f} wall); "
            f"interceptor {with_cpu - bare_cpu:.2f} µs CPU per RPC",
            flush=True,
        )
    scrape_started = cpu()
    generate_latest(registry)
    print(f"one scrape of that registry: {(cpu() - scrape_started) * 1e3:.2f} ms CPU")
    print("load average: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))
    provider.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(measure(args.calls, args.rounds))


if __name__ == "__main__":
    main()
