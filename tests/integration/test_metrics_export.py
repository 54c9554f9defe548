"""One set of instruments, two ways out: what a process's meter records is scraped over HTTP from its
PAYRECON_METRICS_ADDRESS endpoint and pushed over OTLP/gRPC to PAYRECON_OTLP_ENDPOINT — here a real
OTLP receiver (the collector's gRPC MetricsService) on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.devstack.processes import free_port
from services.kernel.metrics import LATENCY_BUCKETS_SECONDS, start_metrics_export

pytestmark = pytest.mark.integration


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    async def Export(self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: object) -> object:
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    received = Receiver()
    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield received, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_the_same_instruments_are_scraped_and_pushed_over_otlp(receiver: tuple[Receiver, str]) -> None:
    received, endpoint = receiver
    address = f"127.0.0.1:{free_port()}"
    export = start_metrics_export("ingest", address, endpoint)
    assert export is not None
    try:
        meter = export.provider.get_meter("payrecon")
        meter.create_counter("payrecon.ingest.idempotency.replays").add(3)
        latency = meter.create_histogram(
            "payrecon.rpc.server.duration", unit="s", explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_SECONDS)
        )
        latency.record(0.004, {"rpc.method": "SubmitTransaction", "rpc.grpc.status_code": "OK"})

        async with httpx.AsyncClient() as client:
            page = (await client.get(f"http://{address}/metrics", timeout=5)).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page)
            for s in family.samples
        }
        assert samples[("payrecon_ingest_idempotency_replays_total", (("service_name", "payrecon-ingest"),))] == 3
        count = [v for (name, _), v in samples.items() if name == "payrecon_rpc_server_duration_seconds_count"]
        assert count == [1]

        assert await asyncio.to_thread(export.provider.force_flush, 10_000)
        metrics = {
            metric.name: metric
            for request in received.requests
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        assert metrics["payrecon.ingest.idempotency.replays"].sum.data_points[0].as_int == 3
        (point,) = metrics["payrecon.rpc.server.duration"].histogram.data_points
        assert point.count == 1 and list(point.explicit_bounds) == list(LATENCY_BUCKETS_SECONDS)
        resource = received.requests[0].resource_metrics[0].resource
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "payrecon-ingest"
    finally:
        export.shutdown()
