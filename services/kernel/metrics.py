"""Metrics: one OpenTelemetry meter provider per process, scraped by Prometheus on
PAYRECON_METRICS_ADDRESS and exported over OTLP to PAYRECON_OTLP_ENDPOINT — one set of instruments
serving both. Also what every context shares: the per-RPC interceptor, and gauges whose readings
(SQS attributes, database counts) are taken in the background so that a scrape never waits on them.

Names are OpenTelemetry's (`payrecon.rpc.server.duration`, unit `s`); Prometheus sees them as
`payrecon_rpc_server_duration_seconds_bucket`, counters with `_total` (the README's Metrics table).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from prometheus_client import CollectorRegistry

from services.kernel.auth import INFRASTRUCTURE_PREFIXES
from services.kernel.config import host_of, port_of
from services.kernel.grpc_errors import Context
from services.kernel.grpc_handlers import within
from services.kernel.queues import dead_letter_queue_name
from services.kernel.runtime import sleep_or_stop
from services.kernel.sqs import SqsClient
from services.kernel.telemetry import service_resource

log = logging.getLogger(__name__)

METER_NAME = "payrecon"
# RPC latency buckets (seconds): a loopback call takes ~0.5 ms, a POST's commit a few ms to tens under
# load, a statement import or a reconcile seconds.
LATENCY_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# How often background gauges are read: "a few seconds old" is what a dashboard needs, and SQS and
# PostgreSQL are asked once per period whatever the number of scrapers.
REFRESH_SECONDS = 5.0
# Probes and reflection are infrastructure, not traffic: a kubelet asks every few seconds.
UNMEASURED_PREFIXES = INFRASTRUCTURE_PREFIXES

_enabled = False


@dataclass
class MetricsExport:
    """A process's meter provider and the scrape server it started (None without an address)."""

    provider: MeterProvider
    scrape_server: WSGIServer | None

    def shutdown(self) -> None:
        if self.scrape_server is not None:
            self.scrape_server.shutdown()
            self.scrape_server.server_close()
        self.provider.shutdown()


def start_metrics_export(service: str, address: str | None, otlp_endpoint: str | None) -> MetricsExport | None:
    """A meter provider whose instruments are served on `address` (host:port, Prometheus text at
    /metrics) and pushed over OTLP/gRPC to `otlp_endpoint` (every 60 s, or OTEL_METRIC_EXPORT_INTERVAL
    ms), each only when set; None when neither is."""
    readers: list[MetricReader] = []
    server = None
    if address:
        from prometheus_client import ProcessCollector, start_http_server

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, open fds
        readers.append(prometheus_reader(registry))
        server, _ = start_http_server(port_of(address), addr=host_of(address), registry=registry)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint, insecure=True)))
    if not readers:
        return None
    return MetricsExport(MeterProvider(resource=service_resource(service), metric_readers=readers), server)


def configure_metrics(service: str, address: str | None, otlp_endpoint: str | None) -> None:
    """Installs the process's meter provider (see start_metrics_export). With neither an address nor
    an endpoint nothing is measured: instruments stay OpenTelemetry's no-ops, servers get no metrics
    interceptor and background gauges read nothing."""
    global _enabled
    if _enabled:
        return
    export = start_metrics_export(service, address, otlp_endpoint)
    if export is None:
        return
    metrics.set_meter_provider(export.provider)
    _enabled = True
    log.info(
        "metrics configured",
        extra={"fields": {"prometheus": address or "off", "otlp": otlp_endpoint or "off"}},
    )


def prometheus_reader(registry: CollectorRegistry) -> MetricReader:
    """The reader that renders the instruments into `registry` for scrapes: no otel_scope_* labels
    (there is one scope, `payrecon`), and service_name on every series, so a dashboard can tell the
    processes' kinds apart without relabelling rules."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    return PrometheusMetricReader(
        registry=registry,
        scope_info_enabled=False,
        resource_attribute_filter=lambda key: key == "service.name",
    )


def payrecon_meter() -> Meter:
    """The process's meter (OpenTelemetry's no-op one until configure_metrics installs a provider)."""
    return metrics.get_meter(METER_NAME)


# -- per-RPC requests, latency and errors ----------------------------------------------------------


def rpc_metrics_interceptor() -> RpcMetricsInterceptor | None:
    """The interceptor for a server's list, or None when this process measures nothing."""
    return RpcMetricsInterceptor(payrecon_meter()) if _enabled else None


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """One histogram observation per RPC: its duration in seconds, labelled with the service, the
    method and the gRPC status code it ended with. Its count is the request rate, the non-OK codes the
    errors, its buckets the latency percentiles. First in the server's list, so calls refused by
    authentication or ended by the error table are counted with the code the caller saw."""

    def __init__(self, meter: Meter) -> None:
        self._duration = meter.create_histogram(
            "payrecon.rpc.server.duration",
            unit="s",
            description="Duration of RPCs served, by service, method and gRPC status code",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_SECONDS),
        )
        self._attributes: dict[tuple[str, str], Mapping[str, str]] = {}

    def _labels(self, method: str, code: str) -> Mapping[str, str]:
        # Built once per (method, code): the dict is what the SDK hashes on every observation.
        labels = self._attributes.get((method, code))
        if labels is None:
            service, _, name = method.lstrip("/").rpartition("/")
            labels = self._attributes[(method, code)] = {
                "rpc.service": service,
                "rpc.method": name,
                "rpc.grpc.status_code": code,
            }
        return labels

    def _observe(self, method: str, started: float, code: str) -> None:
        self._duration.record(time.perf_counter() - started, self._labels(method, code))

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(UNMEASURED_PREFIXES):
            return handler
        return within(handler, lambda context: _MeasuredCall(self._observe, method, context))


class _MeasuredCall:
    """The scope of one call: on exit, its duration and the status it ends with are observed. A class
    rather than a generator-based manager: it runs on every RPC."""

    __slots__ = ("_context", "_method", "_observe", "_started")

    def __init__(self, observe: Callable[[str, float, str], None], method: str, context: Context) -> None:
        self._observe, self._method, self._context = observe, method, context

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self._observe(self._method, self._started, _status_of(error, self._context))


def _status_of(error: BaseException | None, context: Context) -> str:
    """The gRPC status name the call ends with: the one set on the context (by abort or set_code),
    else OK when the handler returned, CANCELLED when the call was cancelled, UNKNOWN when it raised."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # grpc.aio keeps the numeric value when set by abort()
        return _CODE_NAMES.get(code, "UNKNOWN")
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


_CODE_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}


# -- gauges read in the background -----------------------------------------------------------------

Reading = Sequence[tuple[float, Mapping[str, str]]]


class BackgroundGauge:
    """An observable gauge whose value(s) `read` produces every REFRESH_SECONDS in the background
    (run it with `refresh_until`); collections report the latest reading. A reading that fails
    empties the gauge until one succeeds (a stale depth would look healthy), with a warning."""

    def __init__(
        self,
        meter: Meter,
        name: str,
        read: Callable[[], Awaitable[Reading]],
        *,
        description: str,
        unit: str = "",
    ) -> None:
        self.name = name
        self._read = read
        self._observations: list[Observation] = []
        self._failing = False
        meter.create_observable_gauge(name, callbacks=[self._observe], unit=unit, description=description)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observations)

    async def refresh(self) -> None:
        try:
            reading = await self._read()
        except Exception as error:
            self._observations = []
            if not self._failing:
                log.warning("metric reading failed", extra={"fields": {"metric": self.name, "error": repr(error)}})
            self._failing = True
            return
        self._observations = [Observation(value, dict(labels)) for value, labels in reading]
        self._failing = False

    async def refresh_until(self, stop: asyncio.Event, seconds: float = REFRESH_SECONDS) -> None:
        """Refreshes every `seconds` until `stop`; in a process that measures nothing, never."""
        if not _enabled:
            return
        while not stop.is_set():
            await self.refresh()
            await sleep_or_stop(stop, seconds)


def queue_depth_gauge(meter: Meter, sqs: SqsClient, queues: Sequence[str]) -> BackgroundGauge:
    """`payrecon.queue.messages{queue, state}` for each of `queues`: visible and in-flight messages
    (SQS's ApproximateNumberOfMessages and ...NotVisible) and the messages waiting in its dead-letter
    queue (state dead_letter)."""

    async def read() -> Reading:
        found: list[tuple[float, Mapping[str, str]]] = []
        for queue in queues:
            main, dead = await asyncio.gather(sqs.attributes(queue), sqs.attributes(dead_letter_queue_name(queue)))
            found += [
                (main.messages, {"queue": queue, "state": "visible"}),
                (main.in_flight, {"queue": queue, "state": "in_flight"}),
                (dead.messages + dead.in_flight, {"queue": queue, "state": "dead_letter"}),
            ]
        return found

    return BackgroundGauge(
        meter,
        "payrecon.queue.messages",
        read,
        description="Messages in an SQS queue: visible, in flight (received, not yet deleted), and in its dead-letter queue",
    )


def outbox_backlog_gauge(meter: Meter, source: str, unpublished: Callable[[], Awaitable[int]]) -> BackgroundGauge:
    """`payrecon.outbox.unpublished{source}`: outbox rows written but not yet published to SQS."""

    async def read() -> Reading:
        return [(await unpublished(), {"source": source})]

    return BackgroundGauge(
        meter,
        "payrecon.outbox.unpublished",
        read,
        description="Outbox rows committed but not yet published to SQS, by the context that wrote them",
    )
