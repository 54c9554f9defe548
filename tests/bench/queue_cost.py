"""The queue's own cost: CPU seconds of the SQS server (and of every other process of the stack) over
a fixed load — N POSTs through Envoy at C clients, until every transfer is COMPLETED — and over an
idle interval. utime + stime from /proc/<pid>/stat, the process and its descendants.

    python -m tests.bench.queue_cost --requests 4000 --clients 32 --idle 20

Uses PAYRECON_DATABASE_URL / PAYRECON_REDIS_URL when set (a fresh database either way). Figures are
printed, never asserted; compare runs made back to back on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions, default_state_dir
from tests.bench.cpu import snapshot, spent, stack_processes
from tests.bench.post_latency import measure_post_latency


async def wait_until_completed(database_url: str, within: float = 300) -> float:
    conn = await asyncpg.connect(database_url)
    started = time.monotonic()
    try:
        while time.monotonic() - started < within:
            if not await conn.fetchval("SELECT count(*) FROM ingest.requests WHERE status = 'PROCESSING'"):
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise TimeoutError("transfers still PROCESSING")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement")
    args = parser.parse_args()
    stack = Stack(
        StackOptions(
            http_port=free_port(),
            database_url=os.environ.get("PAYRECON_DATABASE_URL"),
            redis_url=os.environ.get("PAYRECON_REDIS_URL"),
            state_dir=default_state_dir() / "queue-cost",
            isolated=True,
        )
    ).start()
    try:
        pids = stack_processes(stack)
        time.sleep(3)
        before = snapshot(pids)
        time.sleep(args.idle)
        idle = spent(before, snapshot(pids)).seconds
        before = snapshot(pids)
        started = time.monotonic()
        figures = asyncio.run(
            measure_post_latency(stack.base_url, clients=args.clients, per_client=args.requests // args.clients)
        )
        drain = asyncio.run(wait_until_completed(stack.env["PAYRECON_DATABASE_URL"]))
        elapsed = time.monotonic() - started
        load = spent(before, snapshot(stack_processes(stack))).seconds
    finally:
        stack.stop()
    transfers = figures.requests + 5 * args.clients  # the warm-up requests count too
    print(
        f"{figures.requests} POSTs at {args.clients} clients: {figures.per_second:.0f}/s, p50 {figures.p50_ms:.1f} ms,"
        f" p99 {figures.p99_ms:.1f} ms; all COMPLETED {drain:.1f} s after the last 202; {elapsed:.1f} s in all"
    )
    print(f"| process | CPU s under load | ms per transfer | CPU s idle ({args.idle:.0f} s) |\n|---|---|---|---|")
    for name in sorted(load, key=lambda n: -load[n]):
        print(f"| {name} | {load[name]:.2f} | {1000 * load[name] / transfers:.2f} | {idle.get(name, 0.0):.2f} |")
    total = sum(load.values())
    print(f"| all | {total:.2f} | {1000 * total / transfers:.2f} | {sum(idle.values()):.2f} |")


if __name__ == "__main__":
    main()
