"""`make bench`: starts an isolated stack, measures, prints the figures and writes them to
tests/bench/RESULTS.md. Timings are never asserted; they are reported with the machine they ran on."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions, default_state_dir
from services.kernel.db import create_engine
from services.ledger.adapters.audit import audit_ledger
from tests.bench.ledger_throughput import (
    Throughput,
    batch_api_throughput,
    pgbench_baseline,
    worker_drain_throughput,
)
from tests.bench.post_latency import measure_post_latency
from tests.bench.reconcile_scale import DEFAULT_LINES
from tests.bench.reconcile_scale import run_benchmark as run_reconcile_benchmark
from tests.bench.reconcile_scale import section as reconcile_table
from tests.bench.statement_import import DEFAULT_ENTRIES, run_benchmark
from tests.bench.statement_import import section as statement_import_table

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGET_PER_SECOND = 10_000
TARGET_RATIO = 3.0
RUNS = 3


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def latency_section(stack: Stack) -> str:
    rows = [asyncio.run(measure_post_latency(stack.base_url, clients=c, per_client=n)) for c, n in ((1, 300), (32, 60))]
    return (
        "## POST /api/v1/transactions through Envoy\n\n"
        "Each client sends its next request when the 202 of the previous one arrives; the 202 covers validation,"
        " the Redis check and the PostgreSQL commit of request + outbox row. The relay, the ledger worker and"
        " the SQS server keep running on the same two cores meanwhile.\n\n"
        "| clients | requests | p50 | p99 | max | requests/s |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {f.clients} | {f.requests} | {f.p50_ms:.1f} ms | {f.p99_ms:.1f} ms | {f.max_ms:.1f} ms |"
            f" {f.per_second:,.0f} |\n"
            for f in rows
        )
    )


async def audit(database_url: str) -> str:
    engine = create_engine(database_url, "ledger", pool_size=1)
    try:
        report = await audit_ledger(engine)
    finally:
        await engine.dispose()
    if report.ok:
        return f"`payrecon ledger verify` afterwards: {report.entries:,} entries, chains and balances intact."
    return f"`payrecon ledger verify` afterwards FAILED: {report.breach}"


def throughput_section(stack: Stack) -> str:
    env = stack.env
    # The ledger's event consumers run elsewhere in production; here they would take the same two
    # cores from the ledger, so they are stopped (their events wait in their queues).
    for name in ("ingest", "reconciliation"):
        stack.children[name].stop()
    # Three runs each, reported as the median and the range: this machine is shared and noisy.
    batches = [
        asyncio.run(batch_api_throughput(env["PAYRECON_LEDGER_ADDRESS"], clients=4, calls_per_client=6, batch=2000))
        for _ in range(RUNS)
    ]
    workers = [
        asyncio.run(
            worker_drain_throughput(
                env["PAYRECON_SQS_ENDPOINT_URL"],
                env["PAYRECON_TRANSFERS_QUEUE"],
                env["PAYRECON_DATABASE_URL"],
                stop_worker=stack.stop_worker,
                start_worker=stack.start_worker,
                messages=100,
                per_message=500,
            )
        )
        for _ in range(RUNS)
    ]
    verified = asyncio.run(audit(env["PAYRECON_DATABASE_URL"]))
    baseline = pgbench_baseline(env["PAYRECON_DATABASE_URL"], clients=8, seconds=15)

    def row(name: str, how: str, runs: list[Throughput]) -> str:
        ordered = sorted(runs, key=lambda t: t.per_second)
        median = ordered[len(ordered) // 2]
        ratio = median.per_second / baseline.per_second
        meets = "yes" if median.per_second >= TARGET_PER_SECOND and ratio >= TARGET_RATIO else "no"
        spread = " / ".join(f"{t.per_second:,.0f}" for t in runs)
        return (
            f"| {name} | {how} | {median.transfers:,} | **{median.per_second:,.0f}** ({spread}) | {ratio:.1f}x"
            f" | {meets} |\n"
        )

    return (
        "## Ledger posting throughput\n\n"
        "Same PostgreSQL, same run. The ledger service, its worker, its event relay and the SQS server run;"
        " ingest and reconciliation (the event consumers) are stopped so they do not share the two cores.\n\n"
        "| path | how | transfers per run | transfers/s: median (runs) | median vs baseline | ≥ 10k/s and ≥ 3x |\n"
        "|---|---|---|---|---|---|\n"
        + row(
            "batch API", "gRPC PostTransfers, 4 clients x 2,000 transfers per call, one transaction per call", batches
        )
        + row(
            "SQS worker",
            "drains a backlog of 100 TransferBatch messages x 500 transfers on transfers.fifo"
            " (16 message groups), up to 10 messages per transaction; from its first transaction"
            " to its last commit",
            workers,
        )
        + f"| baseline | pgbench, 8 clients, {baseline.seconds:.0f} s, the same SQL one transfer per transaction |"
        f" {baseline.transfers:,} | {baseline.per_second:,.0f} | 1.0x | |\n\n" + verified + "\n"
    )


def statement_import_section(stack: Stack) -> str:
    # Import only needs PostgreSQL: it creates (and drops) fresh databases on the stack's server.
    server = stack.admin_database_url or stack.env["PAYRECON_DATABASE_URL"]
    figures = run_benchmark(server, DEFAULT_ENTRIES)
    return statement_import_table(figures, "make bench (or python -m tests.bench.statement_import)")


def reconcile_section(stack: Stack) -> str:
    # The reconcile runs against a fresh database of its own on the stack's server, in a child process.
    server = stack.admin_database_url or stack.env["PAYRECON_DATABASE_URL"]
    figures = run_reconcile_benchmark(server, DEFAULT_LINES)
    return reconcile_table(figures, "make bench (or python -m tests.bench.reconcile_scale)")


def main() -> int:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the stack below is stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    options = StackOptions(
        http_port=free_port(),
        database_url=os.environ.get("PAYRECON_DATABASE_URL"),
        redis_url=os.environ.get("PAYRECON_REDIS_URL"),
        state_dir=default_state_dir() / "bench",
        isolated=True,
    )
    stack = Stack(options).start()
    sections = [
        f"# Benchmark results\n\nRun {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()} with `make bench`."
        " One run on a shared machine: compare figures from the same run, not across runs.\n"
    ]
    try:
        for measure in (latency_section, throughput_section, statement_import_section, reconcile_section):
            section = measure(stack)
            print(section, flush=True)
            sections.append(section)
    finally:
        stack.stop()
    RESULTS.write_text("\n".join(sections))
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
