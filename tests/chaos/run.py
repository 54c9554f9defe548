"""`make chaos` (`python -m tests.chaos.run --help`): an isolated stack of its own — embedded
PostgreSQL and Redis it may crash and flush, LocalStack, two ingest replicas, the ledger worker,
Envoy — under a bounded load of transfers and holds while faults are injected on a schedule; then the
invariants table. Exits 1 when any invariant fails. Loopback only; stops by itself."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.devstack.processes import free_port
from services.devstack.stack import Stack, StackOptions
from tests.chaos.faults import FAULTS, FULL_CYCLE, SHORT_CYCLE, applicable, run_faults, schedule
from tests.chaos.verdict import Verdict, judge, wait_until_settled
from tests.chaos.workload import Clients


@dataclass(frozen=True)
class ChaosConfig:
    duration: float = 150.0
    transfer_clients: int = 16
    hold_clients: int = 4
    redrive_after: int = 10
    max_receives: int = 5  # PAYRECON_SQS_MAX_RECEIVES: lower makes a give-up on the last delivery likelier
    cycle: tuple[str, ...] = FULL_CYCLE
    # How long a fault keeps its part down.
    down_seconds: float = 2.0
    # When the first and the last fault start, in seconds into the load (the last: 8 s before its end).
    first_fault_at: float = 5.0
    last_fault_at: float | None = None
    seed: int = 0

    @property
    def settle_timeout(self) -> float:
        """Every accepted request has an outcome by then: a lost message is redriven within 1.25
        redrive ages, and may be lost once more by a late fault; the rest is margin for a busy machine."""
        return 3 * self.redrive_after + 45

    @property
    def rounds(self) -> int:
        """The cycle of faults comes once per 150 s of load: a longer run keeps their density."""
        return max(1, round(self.duration / 150))

    @classmethod
    def short(cls) -> ChaosConfig:
        """The version `make test` runs: one worker kill, one Redis flush, one SQS restart."""
        return cls(
            duration=20,
            transfer_clients=8,
            hold_clients=2,
            redrive_after=5,
            cycle=SHORT_CYCLE,
            down_seconds=1,
            # Early, so the SQS server (seconds to start on a busy machine) is back while the load runs.
            first_fault_at=2,
            last_fault_at=8,
        )

    def stack_env(self) -> dict[str, str]:
        # A message a crashed worker had received stays invisible, and (FIFO) holds back the rest of
        # its group, until its visibility timeout ends: kept no longer than the redrive age here, so
        # an outcome is owed within a few redrive ages whatever was killed.
        return {
            "INGEST_REDRIVE_AFTER_SECONDS": str(self.redrive_after),
            "PAYRECON_SQS_VISIBILITY_SECONDS": str(self.redrive_after),
            "PAYRECON_SQS_MAX_RECEIVES": str(self.max_receives),
        }


def chaos_stack_options(
    state_dir: Path, config: ChaosConfig, database_url: str | None = None, *, ingest_processes: int = 2
) -> StackOptions:
    """A stack whose Redis is always its own (flushed by the chaos) and whose PostgreSQL is its own
    unless `database_url` is given (then it is never restarted)."""
    return StackOptions(
        http_port=free_port(),
        database_url=database_url,
        redis_url=None,
        state_dir=state_dir,
        isolated=True,
        extra_env=config.stack_env(),
        ingest_processes=ingest_processes,
    )


async def run_chaos(stack: Stack, config: ChaosConfig) -> Verdict:
    """Load and faults together for `config.duration`, then the wait for outcomes, then the verdict."""
    run_id = f"chaos-{uuid.uuid4().hex[:6]}"
    clients = Clients(
        stack.base_url,
        stack.addresses.get("ingest-2"),
        run_id,
        transfer_clients=config.transfer_clients,
        hold_clients=config.hold_clients,
        seed=config.seed,
    )
    last_at = config.duration - 8 if config.last_fault_at is None else config.last_fault_at
    plan = schedule(applicable(stack, config.cycle) * config.rounds, config.first_fault_at, last_at)
    stop = threading.Event()
    started = time.monotonic()
    faults = asyncio.create_task(asyncio.to_thread(run_faults, stack, plan, started, stop, config.down_seconds))
    try:
        await clients.run(config.duration)
    finally:
        stop.set()
        done = await faults  # the fault under way finishes, and brings back what it took away
    load_seconds = time.monotonic() - started
    database_url = stack.env["PAYRECON_DATABASE_URL"]
    settled_after, _ = await wait_until_settled(database_url, config.settle_timeout)
    return await judge(
        clients.record,
        database_url,
        stack.env,
        duration=load_seconds,
        faults=done,
        settled_after=settled_after,
        settle_timeout=config.settle_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    defaults = ChaosConfig()
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds of load and faults")
    parser.add_argument("--clients", type=int, default=defaults.transfer_clients, help="concurrent transfer clients")
    parser.add_argument("--hold-clients", type=int, default=defaults.hold_clients, help="concurrent hold clients")
    parser.add_argument(
        "--redrive-after", type=int, default=defaults.redrive_after, help="INGEST_REDRIVE_AFTER_SECONDS"
    )
    parser.add_argument(
        "--faults",
        default=",".join(defaults.cycle),
        help=f"the cycle of faults, comma-separated, or 'none' (one of: {', '.join(FAULTS)})",
    )
    parser.add_argument("--max-receives", type=int, default=defaults.max_receives, help="PAYRECON_SQS_MAX_RECEIVES")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--short", action="store_true", help="the short version `make test` runs")
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs, data) afterwards")
    args = parser.parse_args(argv)
    cycle = () if args.faults == "none" else tuple(args.faults.split(","))
    if unknown := [name for name in cycle if name not in FAULTS]:
        parser.error(f"unknown faults: {', '.join(unknown)}")
    config = (
        ChaosConfig.short()
        if args.short
        else ChaosConfig(
            duration=args.duration,
            transfer_clients=args.clients,
            hold_clients=args.hold_clients,
            redrive_after=args.redrive_after,
            max_receives=args.max_receives,
            cycle=cycle,
            seed=args.seed,
        )
    )
    # Bounded whatever happens: SIGTERM (a CI timeout) and the alarm unwind like Ctrl-C, so the stack
    # below is stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(int(config.duration + 60 + config.settle_timeout + 600))

    state_dir = Path(tempfile.mkdtemp(prefix="payrecon-chaos-"))
    print(f"chaos: stack in {state_dir} ...", flush=True)
    stack = Stack(chaos_stack_options(state_dir, config))
    verdict: Verdict | None = None
    try:
        stack.start()
        print(
            f"chaos: {config.duration:.0f} s of load ({config.transfer_clients} transfer + {config.hold_clients} hold"
            f" clients) with faults: {', '.join(applicable(stack, config.cycle)) or 'none'}",
            flush=True,
        )
        verdict = asyncio.run(run_chaos(stack, config))
    finally:
        stack.stop()
        signal.alarm(0)
        kept = args.keep or verdict is None or not verdict.ok
        if kept:
            print(f"chaos: logs and data kept in {state_dir}", flush=True)
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    print(verdict.table())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
