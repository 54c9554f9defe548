"""CPU per accepted POST /api/v1/transactions, per process, beside its latency: starts an isolated stack
from this checkout, runs tests/bench/post_latency.py's closed loop (each client sends its next request
when the 202 of the previous one arrives) and reads utime + stime from /proc/<pid>/stat of every stack
process (and its children) and of the PostgreSQL backends serving the stack's database, before and
after each round. Processes also burn CPU while idle (polling loops, health checks): that rate is
measured first, with no load, and ingest's CPU beyond it is reported too, since at a low request
rate the idle share would swamp the per-request cost. Linux only.

    python -m tests.bench.post_cpu [--clients 32] [--per-client 125] [--rounds 3] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions, default_state_dir
from tests.bench.cpu import CpuMeter, spent
from tests.bench.post_latency import measure_post_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--per-client", type=int, default=125)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="environment of the stack")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    stack = Stack(
        StackOptions(
            http_port=free_port(),
            database_url=os.environ.get("PAYRECON_DATABASE_URL"),
            redis_url=os.environ.get("PAYRECON_REDIS_URL"),
            state_dir=default_state_dir() / "bench-cpu",
            isolated=True,
            extra_env=dict(setting.split("=", 1) for setting in args.set),
        )
    ).start()
    try:
        meter = CpuMeter(stack)
        time.sleep(3)  # past start-up work
        before = asyncio.run(meter.snapshot())
        time.sleep(args.idle_seconds)
        idle = {
            name: seconds / args.idle_seconds
            for name, seconds in spent(before, asyncio.run(meter.snapshot())).seconds.items()
        }
        print("idle CPU per second: " + ", ".join(f"{name} {rate * 1000:.0f} ms" for name, rate in idle.items()))
        for _ in range(args.rounds):
            before = asyncio.run(meter.snapshot())
            started = time.monotonic()
            figures = asyncio.run(
                measure_post_latency(stack.base_url, clients=args.clients, per_client=args.per_client)
            )
            elapsed = time.monotonic() - started
            accepted = figures.requests + 5 * args.clients  # with the warm-up round
            per_process = spent(before, asyncio.run(meter.snapshot())).seconds
            print(
                f"{args.clients} clients, {figures.requests} requests: p50 {figures.p50_ms:.1f} ms,"
                f" p99 {figures.p99_ms:.1f} ms, {figures.per_second:,.0f}/s; CPU per accepted request: "
                + ", ".join(f"{name} {seconds / accepted * 1000:.2f} ms" for name, seconds in per_process.items())
                + f"; all {sum(per_process.values()) / accepted * 1000:.2f} ms; ingest beyond its idle rate"
                f" {(per_process['ingest'] - idle['ingest'] * elapsed) / accepted * 1000:.2f} ms",
                flush=True,
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
