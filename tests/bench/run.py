"""`make bench`: starts an isolated stack, measures, prints the figures and writes them to
tests/bench/RESULTS.md. Timings are never asserted; they are reported with the machine they ran on."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions, default_state_dir
from tests.bench.post_latency import measure_post_latency

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def main() -> int:
    options = StackOptions(http_port=free_port(), database_url=os.environ.get("PAYRECON_DATABASE_URL"),
                           redis_url=os.environ.get("PAYRECON_REDIS_URL"), state_dir=default_state_dir() / "bench",
                           isolated=True)
    stack = Stack(options).start()
    lines = [f"# Benchmark results\n\nRun {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()} with `make bench`."
             " One run on a shared machine: compare figures from the same run, not across runs.\n"]
    try:
        rows = [asyncio.run(measure_post_latency(stack.base_url, clients=c, per_client=n))
                for c, n in ((1, 300), (32, 60))]
        section = (
            "## POST /api/v1/transactions through Envoy\n\n"
            "Each client sends its next request when the 202 of the previous one arrives; the 202 covers validation,"
            " the Redis check and the PostgreSQL commit of request + outbox row. The relay, the ledger worker and"
            " the SQS server keep running on the same two cores meanwhile.\n\n"
            "| clients | requests | p50 | p99 | max | requests/s |\n|---|---|---|---|---|---|\n"
            + "".join(f"| {f.clients} | {f.requests} | {f.p50_ms:.1f} ms | {f.p99_ms:.1f} ms | {f.max_ms:.1f} ms |"
                      f" {f.per_second:,.0f} |\n" for f in rows)
        )
        print(section)
        lines.append(section)
    finally:
        stack.stop()
    RESULTS.write_text("\n".join(lines))
    print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
