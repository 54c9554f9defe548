"""Metrics without IO: the RPC interceptor against fake handlers and a fake clock, ingest's replay and
conflict counters against its fake store, the background gauges, and the names — every instrument's
Prometheus name is in the README's table, and every `payrecon_…` name the Grafana dashboard queries is
one the code serves (rendered by the same Prometheus reader the processes scrape through)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from payrecon.ingest.v1 import ingest_pb2
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import services.kernel.metrics as kernel_metrics
from services.ingest.api.servicer import IngestServicer
from services.ingest.app import oldest_processing_gauge
from services.ingest.service.transactions import TransactionService
from services.kernel.config import CommonSettings, ConfigError, Env
from services.kernel.metrics import (
    BackgroundGauge,
    RpcMetricsInterceptor,
    outbox_backlog_gauge,
    prometheus_reader,
    queue_depth_gauge,
)
from services.ledger.app import postings_counter
from services.reconciliation.app import open_discrepancies_gauge
from tests.unit.fakes.ingest import FakeIdempotencyCache, FakeQueue, FakeRequestStore

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "payrecon.json"
SUBMIT = "/payrecon.ingest.v1.IngestService/SubmitTransaction"


class Scraped:
    """A meter whose instruments render as the processes' scrape endpoints render them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.memory = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[prometheus_reader(self.registry), self.memory])
        self.meter = self.provider.get_meter("payrecon")

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        text = generate_latest(self.registry).decode()
        return [
            (s.name, dict(s.labels), float(s.value)) for f in text_string_to_metric_families(text) for s in f.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, found, v in self.samples() if n == name and labels.items() <= found.items())

    def exported_names(self) -> set[str]:
        """The names a PromQL query uses: a histogram's family name, a counter's `_total`, a gauge's."""
        text = generate_latest(self.registry).decode()
        names: set[str] = set()
        for family in text_string_to_metric_families(text):
            if family.type == "histogram":
                names.add(family.name)
            else:
                names |= {s.name for s in family.samples}
        return {n for n in names if n.startswith("payrecon_")}


@pytest.fixture
def scraped() -> Iterator[Scraped]:
    measured = Scraped()
    yield measured
    measured.provider.shutdown()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(kernel_metrics, "time", SimpleNamespace(perf_counter=fake))
    return fake


@dataclass(frozen=True)
class CallDetails:
    method: str
    invocation_metadata: Sequence[tuple[str, str]] = ()


class FakeContext:
    """What the interceptor asks of a grpc.aio context: the code set by abort() or set_code()."""

    def __init__(self) -> None:
        self._code: Any = None
        self.initial_metadata: list[tuple[str, str]] = []

    def code(self) -> Any:
        return self._code

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code.value[0]  # grpc.aio keeps the number
        raise grpc.aio.AbortError()

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.initial_metadata += list(metadata)


async def intercepted(meter: Any, method: str, handler: Any) -> Any:
    async def continuation(details: Any) -> Any:
        return handler

    return await RpcMetricsInterceptor(meter).intercept_service(continuation, CallDetails(method))


async def test_each_rpc_is_one_observation_of_its_duration_and_status(scraped: Scraped, clock: FakeClock) -> None:
    async def accept(request: Any, context: Any) -> str:
        clock.now += 0.3
        return "accepted"

    served = await intercepted(scraped.meter, SUBMIT, grpc.unary_unary_rpc_method_handler(accept))
    assert await served.unary_unary(object(), FakeContext()) == "accepted"
    assert await served.unary_unary(object(), FakeContext()) == "accepted"

    labels = {
        "rpc_service": "payrecon.ingest.v1.IngestService",
        "rpc_method": "SubmitTransaction",
        "rpc_grpc_status_code": "OK",
    }
    assert scraped.value("payrecon_rpc_server_duration_seconds_count", **labels) == 2
    assert scraped.value("payrecon_rpc_server_duration_seconds_sum", **labels) == pytest.approx(0.6)
    assert scraped.value("payrecon_rpc_server_duration_seconds_bucket", **labels, le="0.25") == 0
    assert scraped.value("payrecon_rpc_server_duration_seconds_bucket", **labels, le="0.5") == 2
    assert scraped.samples()[0][1]["service_name"]  # the process kind is on every series


async def test_refusals_errors_and_cancellations_are_counted_with_the_status_the_caller_sees(
    scraped: Scraped, clock: FakeClock
) -> None:
    async def conflict(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.ALREADY_EXISTS, "key reused")

    async def crash(request: Any, context: Any) -> None:
        raise RuntimeError("bug")

    async def cancelled(request: Any, context: Any) -> None:
        raise asyncio.CancelledError

    for behaviour, raised in (
        (conflict, grpc.aio.AbortError),
        (crash, RuntimeError),
        (cancelled, asyncio.CancelledError),
    ):
        served = await intercepted(scraped.meter, SUBMIT, grpc.unary_unary_rpc_method_handler(behaviour))
        with pytest.raises(raised):
            await served.unary_unary(object(), FakeContext())

    count = "payrecon_rpc_server_duration_seconds_count"
    assert scraped.value(count, rpc_grpc_status_code="ALREADY_EXISTS") == 1
    assert scraped.value(count, rpc_grpc_status_code="UNKNOWN") == 1
    assert scraped.value(count, rpc_grpc_status_code="CANCELLED") == 1
    assert scraped.value(count, rpc_grpc_status_code="OK") == 0


async def test_a_streamed_answer_is_observed_once_when_it_ends(scraped: Scraped, clock: FakeClock) -> None:
    async def rows(request: Any, context: Any) -> AsyncIterator[int]:
        for row in range(3):
            clock.now += 1.0
            yield row

    served = await intercepted(scraped.meter, "/svc.Export/Rows", grpc.unary_stream_rpc_method_handler(rows))
    assert [row async for row in served.unary_stream(object(), FakeContext())] == [0, 1, 2]
    assert scraped.value("payrecon_rpc_server_duration_seconds_count", rpc_method="Rows") == 1
    assert scraped.value("payrecon_rpc_server_duration_seconds_sum", rpc_method="Rows") == pytest.approx(3.0)


async def test_health_probes_are_not_traffic(scraped: Scraped) -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    assert await intercepted(scraped.meter, "/grpc.health.v1.Health/Check", handler) is handler


async def test_ingest_counts_replays_and_conflicts_of_idempotency_keys(scraped: Scraped) -> None:
    transactions = TransactionService(FakeRequestStore(), FakeIdempotencyCache(), 86400, "USD", 16)
    servicer = IngestServicer(transactions, operations=None, base_path="/api/v1", meter=scraped.meter)  # type: ignore[arg-type]

    def request(amount: str) -> ingest_pb2.SubmitTransactionRequest:
        submit = ingest_pb2.SubmitTransactionRequest(idempotency_key="k-1")
        submit.transaction.source_account_id, submit.transaction.destination_account_id = "a-1", "a-2"
        submit.transaction.amount.string_value = amount
        return submit

    await servicer.SubmitTransaction(request("10.00"), FakeContext())  # type: ignore[arg-type]
    assert scraped.value("payrecon_ingest_idempotency_replays_total") == 0
    await servicer.SubmitTransaction(request("10.00"), FakeContext())  # type: ignore[arg-type]
    with pytest.raises(Exception, match="already used"):
        await servicer.SubmitTransaction(request("11.00"), FakeContext())  # type: ignore[arg-type]
    assert scraped.value("payrecon_ingest_idempotency_replays_total") == 1
    assert scraped.value("payrecon_ingest_idempotency_conflicts_total") == 1


async def test_background_gauges_report_their_last_reading_and_nothing_once_it_fails(scraped: Scraped) -> None:
    queue = FakeQueue()
    queue.depth = {"transfers.fifo": 7, "transfers-dlq.fifo": 2}
    depth = queue_depth_gauge(scraped.meter, queue, ["transfers.fifo"])  # type: ignore[arg-type]
    assert scraped.value("payrecon_queue_messages") == 0  # nothing read yet, nothing told
    await depth.refresh()
    assert scraped.value("payrecon_queue_messages", queue="transfers.fifo", state="visible") == 7
    assert scraped.value("payrecon_queue_messages", queue="transfers.fifo", state="dead_letter") == 2
    queue.depth["transfers.fifo"] = 3
    assert scraped.value("payrecon_queue_messages", state="visible") == 7  # a scrape does not ask SQS
    await depth.refresh()
    assert scraped.value("payrecon_queue_messages", state="visible") == 3
    queue.down = True
    await depth.refresh()
    assert not [s for s in scraped.samples() if s[0] == "payrecon_queue_messages"]  # no stale depth


async def test_refreshing_runs_only_in_a_process_that_measures(scraped: Scraped) -> None:
    reads = 0

    async def read() -> list[tuple[float, dict[str, str]]]:
        nonlocal reads
        reads += 1
        return [(1.0, {})]

    gauge = BackgroundGauge(scraped.meter, "payrecon.test.reads", read, description="test")
    await asyncio.wait_for(gauge.refresh_until(asyncio.Event(), seconds=0.01), 1)  # returns at once
    assert reads == 0


async def test_open_discrepancies_cover_every_kind_and_age_band(scraped: Scraped) -> None:
    async def counts() -> list[tuple[str, str, int]]:
        return [("MISSING_IN_LEDGER", "<1h", 3), ("BALANCE_DRIFT", ">7d", 1)]

    await open_discrepancies_gauge(scraped.meter, counts).refresh()
    name = "payrecon_reconciliation_open_discrepancies"
    assert scraped.value(name, kind="MISSING_IN_LEDGER", age="<1h") == 3
    assert scraped.value(name, kind="BALANCE_DRIFT", age=">7d") == 1
    assert scraped.value(name) == 4
    served = {(labels["kind"], labels["age"]) for n, labels, _ in scraped.samples() if n == name}
    assert ("AMOUNT_MISMATCH", "1d-7d") in served and len(served) == 10 * 4


async def every_instrument(scraped: Scraped) -> set[str]:
    """Makes every instrument the services define, with one value each; their Prometheus names."""

    async def ten() -> int:
        return 10

    async def age() -> float:
        return 1.5

    async def counts() -> list[tuple[str, str, int]]:
        return []

    async def accept(request: Any, context: Any) -> str:
        return "ok"

    served = await intercepted(scraped.meter, SUBMIT, grpc.unary_unary_rpc_method_handler(accept))
    await served.unary_unary(object(), FakeContext())
    servicer = IngestServicer(None, None, "/", meter=scraped.meter)  # type: ignore[arg-type]
    servicer._replays.add(1)
    servicer._conflicts.add(1)
    postings_counter(scraped.meter).add(1)
    for gauge in (
        queue_depth_gauge(scraped.meter, FakeQueue(), ["q.fifo"]),  # type: ignore[arg-type]
        outbox_backlog_gauge(scraped.meter, "ingest", ten),
        oldest_processing_gauge(scraped.meter, age),
        open_discrepancies_gauge(scraped.meter, counts),
    ):
        await gauge.refresh()
    return scraped.exported_names()


def instrument_names_in_source() -> set[str]:
    """Every OpenTelemetry instrument name services/ creates (`meter.create_…("payrecon.…"` and
    `BackgroundGauge(meter, "payrecon.…"`)."""
    pattern = re.compile(r'(?:\.create_[a-z_]+\(|BackgroundGauge\(\s*meter,)\s*"(payrecon\.[^"]+)"')
    return {name for path in (REPO / "services").rglob("*.py") for name in pattern.findall(path.read_text())}


async def test_every_instrument_in_the_code_is_made_here_and_documented_in_the_readme(scraped: Scraped) -> None:
    exported = await every_instrument(scraped)
    made = {
        m.name
        for rm in scraped.memory.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert made == instrument_names_in_source(), "a new instrument: add it to every_instrument() and the README"
    documented = set(re.findall(r"^\| `(payrecon_[a-z0-9_]+)`", (REPO / "README.md").read_text(), re.MULTILINE))
    assert documented == exported


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    panels += [inner for p in dashboard["panels"] if p["type"] == "row" for inner in p.get("panels", [])]
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


async def test_the_dashboard_queries_only_metrics_the_code_serves_and_shows_them_all(scraped: Scraped) -> None:
    exported = await every_instrument(scraped)
    used: set[str] = set()
    for query in dashboard_queries():
        for name in re.findall(r"\bpayrecon_[a-z0-9_]+", query):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            used.add(base if base in exported else name)
    assert used, "no payrecon_ metric in the dashboard's queries"
    assert used <= exported, f"queried but never served: {sorted(used - exported)}"
    assert exported <= used, f"served but on no panel: {sorted(exported - used)}"


def test_the_dashboard_reads_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)


def test_a_metrics_address_must_be_host_and_port() -> None:
    base = {"PAYRECON_ENV": "development", "PAYRECON_DATABASE_URL": "postgresql://x/y"}
    assert CommonSettings.from_env(Env(base)).metrics_address is None
    settings = CommonSettings.from_env(Env({**base, "PAYRECON_METRICS_ADDRESS": "0.0.0.0:9464"}))
    assert settings.metrics_address == "0.0.0.0:9464"
    with pytest.raises(ConfigError, match="PAYRECON_METRICS_ADDRESS"):
        CommonSettings.from_env(Env({**base, "PAYRECON_METRICS_ADDRESS": "9464"}))
