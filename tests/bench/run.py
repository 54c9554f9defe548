"""`make bench`: starts an isolated stack, measures, prints the figures and writes them to
tests/bench/RESULTS.md. Timings are never asserted; they are reported with the machine they ran on."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import signal
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions, default_state_dir
from services.kernel.db import create_engine
from services.ledger.adapters.audit import audit_ledger
from tests.bench.cpu import GENERATOR, CpuMeter, CpuUse, cpu_table, process_order, spent
from tests.bench.ledger_throughput import (
    Throughput,
    batch_api_throughput,
    pgbench_baseline,
    worker_drain_throughput,
)
from tests.bench.open_loop import OpenLoopFigures, open_loop
from tests.bench.post_latency import measure_post_latency
from tests.bench.reconcile_scale import DEFAULT_LINES
from tests.bench.reconcile_scale import run_benchmark as run_reconcile_benchmark
from tests.bench.reconcile_scale import section as reconcile_table
from tests.bench.statement_import import DEFAULT_ENTRIES, run_benchmark
from tests.bench.statement_import import section as statement_import_table
from tests.bench.wrk import WrkFigures, find_wrk, run_wrk

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGET_PER_SECOND = 10_000
TARGET_RATIO = 3.0
SECTIONS = ("http", "open-loop", "throughput", "import", "reconcile")
DRAIN_TIMEOUT = 180.0


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def when() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_average()} (1/5/15 min)"


async def wait_drained(database_url: str, limit: float = DRAIN_TIMEOUT) -> float | None:
    """Seconds until no request is PROCESSING in ingest (the stack's database is the bench's own)."""
    conn = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < limit:
            if not await conn.fetchval("SELECT count(*) FROM ingest.requests WHERE status = 'PROCESSING'"):
                return time.perf_counter() - started
            await asyncio.sleep(0.1)
        return None
    finally:
        await conn.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _with_generator(use: CpuUse, seconds: float) -> CpuUse:
    return CpuUse({**use.seconds, GENERATOR: seconds}, use.vanished)


def _measured(
    stack: Stack, load: Callable[[], object], generator_cpu: Callable[[], float]
) -> tuple[object, CpuUse, float | None]:
    """Runs `load`, waits until its requests are posted and told to ingest, and returns what it
    returned, the CPU every process spent from its start to the drain, and the drain's seconds."""
    asyncio.run(wait_drained(stack.env["PAYRECON_DATABASE_URL"]))  # what came before is not charged here
    meter = CpuMeter(stack)
    processes = asyncio.run(meter.processes())
    before, generator_before = asyncio.run(meter.snapshot()), generator_cpu()
    result = load()
    generator = generator_cpu() - generator_before
    drained = asyncio.run(wait_drained(stack.env["PAYRECON_DATABASE_URL"]))
    after = asyncio.run(meter.snapshot(also=processes))
    return result, _with_generator(spent(before, after), generator), drained


def http_section(stack: Stack, args: argparse.Namespace) -> str:
    started = when()
    wrk = None if args.generator == "python" else find_wrk()
    if wrk is None and args.generator == "wrk":
        raise RuntimeError("wrk was asked for but could not be found or fetched")
    run = f"wrk{uuid.uuid4().hex[:6]}"
    rows: list[str] = []
    cpu: dict[str, tuple[CpuUse, int]] = {}
    if wrk is not None:
        generator = f"wrk ({wrk.version()}; {wrk.source}), 2 threads, Lua script: the seed's body, a new idempotency key per request"
        run_wrk(wrk, stack.base_url, connections=8, seconds=5, run=f"{run}-warm")  # warm-up, not reported
    else:
        why = "as asked (--generator python)" if args.generator == "python" else "wrk could not be found or fetched"
        generator = (
            f"the bench's own Python client (tests/bench/http_load.py, one raw keep-alive connection per client), {why}"
        )
        asyncio.run(measure_post_latency(stack.base_url, clients=8, per_client=20))
    for connections in args.connections:
        if wrk is not None:
            figures, use, drained = _measured(
                stack,
                lambda c=connections: run_wrk(
                    wrk, stack.base_url, connections=c, seconds=args.http_seconds, run=f"{run}-{c}"
                ),
                _children_cpu,
            )
            assert isinstance(figures, WrkFigures)
            accepted, per_second = figures.accepted, figures.accepted_per_second
            p50, p99, worst, errors = figures.p50_ms, figures.p99_ms, figures.max_ms, figures.errors
            requests = figures.requests
        else:
            latency, use, drained = _measured(
                stack,
                lambda c=connections: asyncio.run(
                    measure_post_latency(stack.base_url, clients=c, seconds=args.http_seconds)
                ),
                _own_cpu,
            )
            accepted = requests = latency.requests  # type: ignore[attr-defined]
            per_second = latency.per_second  # type: ignore[attr-defined]
            p50, p99, worst, errors = latency.p50_ms, latency.p99_ms, latency.max_ms, 0  # type: ignore[attr-defined]
        drain = "not within 180 s" if drained is None else f"{drained:.1f} s"
        rows.append(
            f"| {connections} | {requests:,} | **{per_second:,.0f}** | {p50:.1f} ms | **{p99:.1f} ms** | {worst:.1f} ms"
            f" | {errors:,} | {drain} |\n"
        )
        cpu[f"{connections} connections"] = (use, accepted)
        print(rows[-1], end="", flush=True)
    return (
        "## POST /api/v1/transactions through Envoy, closed loop\n\n"
        f"Run {started}. Generator: {generator}. Each connection sends its next request when the answer to"
        f" the previous one arrives, for {args.http_seconds} s per row (after a warm-up at 8 connections)."
        " The 202 covers validation, the idempotency check and the PostgreSQL commit of request + outbox row;"
        " the relay, the ledger worker, the event consumers and the SQS server run on the same two cores"
        " meanwhile. Errors: any answer other than 202, and socket errors or timeouts (10 s).\n\n"
        "| connections | requests | accepted/s | p50 | p99 | max | errors | backlog posted and told after the load |\n"
        "|---|---|---|---|---|---|---|---|\n" + "".join(rows) + "\n"
        "CPU per accepted transfer (ms), by process, from the start of each run until its last request was"
        " COMPLETED in ingest (so the relay, the worker and the events it caused are in it):\n\n"
        + cpu_table(cpu)
        + f"\nLoad average at the end: {load_average()}.\n"
    )


def open_loop_section(stack: Stack, args: argparse.Namespace) -> str:
    started = when()
    rows: list[str] = []
    cpu: dict[str, tuple[CpuUse, int]] = {}
    for rate in args.rates:
        asyncio.run(wait_drained(stack.env["PAYRECON_DATABASE_URL"]))
        meter = CpuMeter(stack)
        processes = asyncio.run(meter.processes())
        before, own = asyncio.run(meter.snapshot()), _own_cpu()
        f = asyncio.run(open_loop(stack.base_url, stack.env["PAYRECON_DATABASE_URL"], rate=rate, seconds=args.duration))
        assert isinstance(f, OpenLoopFigures)
        use = _with_generator(spent(before, asyncio.run(meter.snapshot(also=processes))), _own_cpu() - own)
        cpu[f"{rate}/s"] = (use, f.accepted)
        sent = (
            f"{f.sent:,}"
            if f.sent == f.planned
            else f"{f.sent:,} of {f.planned:,} (stopped: 10 s of arrivals waiting for a connection)"
        )
        drain = f"yes, {f.drain_seconds:.1f} s" if f.drain_seconds is not None else "**no** (not within 120 s)"
        rows.append(
            f"| {rate:,}/s | {sent} | {f.accepted:,} | {f.errors:,} | {f.accept_p50_ms:.1f} ms | **{f.accept_p99_ms:.1f} ms**"
            f" | {f.completed:,} / {f.failed:,} | {f.completed_p50_ms:.0f} ms | **{f.completed_p99_ms:.0f} ms**"
            f" | {f.completed_max_ms:.0f} ms | {f.peak_processing:,} | {drain} | {f.connections} |\n"
        )
        print(rows[-1], end="", flush=True)
    return (
        "## Open loop: a fixed arrival rate\n\n"
        f"Run {started}. The bench's own Python generator (tests/bench/open_loop.py) sends request i at"
        f" start + i/rate for {args.duration:g} s, whatever the answers' pace, on up to 256 keep-alive connections;"
        " accept latency counts from when a request was due (a late answer delays no later request's clock)."
        " accept → COMPLETED is ingest's `completed_at - accepted_at` (completed_at is the ledger's posting"
        " instant carried by its event). The backlog is the count of requests still PROCESSING, sampled every"
        " second; it drained when none was left, counted from the last arrival and observed in ingest (so the"
        " outcome event's trip back is in it).\n\n"
        "| rate | sent | accepted | errors | accept p50 | accept p99 | COMPLETED / FAILED | accept→COMPLETED p50"
        " | p99 | max | peak PROCESSING | drained after the last arrival | connections used |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "".join(rows) + "\n"
        "CPU per accepted transfer (ms), by process, from the first arrival until the backlog drained (the"
        " load generator is this Python process):\n\n"
        + cpu_table(cpu)
        + f"\nLoad average at the end: {load_average()}.\n"
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


def throughput_section(stack: Stack, args: argparse.Namespace) -> str:
    started = when()
    env = stack.env
    # The ledger's event consumers run elsewhere in production; here they would take the same two
    # cores from the ledger, so they are stopped (their events wait in their queues).
    for name in [n for n in stack.children if n.startswith(("ingest", "reconciliation"))]:
        stack.children[name].stop()
    # Several runs each (--runs), reported as the median and the range: this machine is shared and noisy.
    batches = [
        asyncio.run(batch_api_throughput(env["PAYRECON_LEDGER_ADDRESS"], clients=4, calls_per_client=6, batch=2000))
        for _ in range(args.runs)
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
                processes=CpuMeter(stack).processes,
            )
        )
        for _ in range(args.runs)
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
        f"Run {started}; load average at the end {load_average()}. Same PostgreSQL, same run. The ledger service, its worker, its event relay and the SQS server run;"
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
        f" {baseline.transfers:,} | {baseline.per_second:,.0f} | 1.0x | |\n\n" + worker_cpu(workers) + verified + "\n"
    )


def worker_cpu(runs: list[Throughput]) -> str:
    """CPU per transfer while the worker drains (median of the runs), by process: what limits the rate
    on two cores when the machine is busy with other work and the wall-clock figures move."""
    names = sorted({n for t in runs for n, us in t.cpu_us.items() if us >= 0.05}, key=process_order)
    if not names:
        return ""
    cells = []
    for name in names:
        values = sorted(t.cpu_us.get(name, 0.0) for t in runs)
        cells.append(f"{name} {values[len(values) // 2]:.1f}")
    total = sorted(sum(t.cpu_us.values()) for t in runs)
    return (
        "CPU per transfer while the SQS worker drains (µs, median of the runs, from its first commit to its"
        f" last): {', '.join(cells)}; all {total[len(total) // 2]:.1f}.\n\n"
    )


def statement_import_section(stack: Stack, args: argparse.Namespace) -> str:
    # Import only needs PostgreSQL: it creates (and drops) fresh databases on the stack's server.
    server = stack.admin_database_url or stack.env["PAYRECON_DATABASE_URL"]
    figures = run_benchmark(server, DEFAULT_ENTRIES)
    return statement_import_table(figures, "make bench (or python -m tests.bench.statement_import)")


def reconcile_section(stack: Stack, args: argparse.Namespace) -> str:
    # The reconcile runs against a fresh database of its own on the stack's server, in a child process.
    server = stack.admin_database_url or stack.env["PAYRECON_DATABASE_URL"]
    figures = run_reconcile_benchmark(server, DEFAULT_LINES)
    return reconcile_table(figures, "make bench (or python -m tests.bench.reconcile_scale)")


MEASURES: dict[str, Callable[[Stack, argparse.Namespace], str]] = {
    "http": http_section,
    "open-loop": open_loop_section,
    "throughput": throughput_section,
    "import": statement_import_section,
    "reconcile": reconcile_section,
}


def _numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run", description="make bench: figures written to tests/bench/RESULTS.md"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, in this order whatever is given: {','.join(SECTIONS)} (default: all);"
        " the others keep their figures in RESULTS.md",
    )
    parser.add_argument("--connections", type=_numbers, default=[8, 32, 128], help="http: connection counts (8,32,128)")
    parser.add_argument("--http-seconds", type=int, default=20, help="http: seconds per connection count (20)")
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto", help="http: wrk, or the Python client"
    )
    parser.add_argument("--rates", type=_numbers, default=[500, 1000], help="open-loop: arrival rates per second")
    parser.add_argument("--duration", type=float, default=60, help="open-loop: seconds of arrivals per rate (60)")
    parser.add_argument("--runs", type=int, default=3, help="throughput: runs of each ledger path (3)")
    args = parser.parse_args(argv)
    chosen = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    # The throughput section stops the event consumers: it runs after the sections that need them.
    args.sections = [x for x in SECTIONS if x in chosen]
    return args


def merge_results(previous: str, fresh: dict[str, str]) -> str:
    """RESULTS.md with the sections run now replaced and the others kept as they were."""
    kept: dict[str, str] = {}
    for chunk in previous.split("\n## ")[1:]:
        title = chunk.split("\n", 1)[0]
        kept[_section_key(title)] = "## " + chunk.rstrip("\n") + "\n"
    merged = {**kept, **fresh}
    return (
        f"# Benchmark results\n\n{machine()}, `make bench` (`python -m tests.bench.run`; `--only` reruns some"
        " sections, each says when it ran). A shared machine: compare figures of the same run, not across runs.\n\n"
        + "\n".join(merged[k] for k in SECTIONS if k in merged)
    )


def _section_key(title: str) -> str:
    if title.startswith("POST /api/v1/transactions"):
        return "http"
    if title.startswith("Open loop"):
        return "open-loop"
    if title.startswith("Ledger posting"):
        return "throughput"
    if title.startswith("Statement import"):
        return "import"
    if title.startswith("Reconcile through the service"):
        return "reconcile"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    fresh: dict[str, str] = {}
    try:
        for name in args.sections:
            section = MEASURES[name](stack, args)
            print(section, flush=True)
            fresh[name] = section
            previous = RESULTS.read_text() if RESULTS.exists() else ""
            RESULTS.write_text(merge_results(previous, fresh))
    finally:
        stack.stop()
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
