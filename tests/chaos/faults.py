"""What goes wrong, on a schedule: processes SIGKILLed and restarted, Redis flushed, the stack's own
PostgreSQL crashed and restarted on its data directory, the SQS server restarted empty; and processes
stopped the way a supervisor stops them, SIGTERM (a drain) then a restart. Each fault brings back what
it took away before the next one starts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack.processes import grpc_serving, port_open, wait_until
from services.devstack.stack import SERVICE_NAMES, Stack
from services.ledger.api.errors import WORKER_SERVICE_NAME

# The order faults come in; a run cycles through it, spread evenly over the load.
FULL_CYCLE = (
    "kill-worker",
    "flush-redis",
    "kill-ingest-replica",
    "restart-sqs",
    "kill-worker",
    "restart-postgres",
    "kill-ingest",
    "flush-redis",
    "kill-worker",
    "restart-sqs",
    "restart-postgres",
    "kill-ingest-replica",
    "kill-ledger",
    "kill-worker",
)
SHORT_CYCLE = ("kill-worker", "flush-redis", "restart-sqs")


@dataclass(frozen=True)
class FaultDone:
    at: float  # seconds into the load
    name: str
    seconds: float  # from the fault to everything back
    note: str = ""


def _kill_worker(stack: Stack, down: float) -> str:
    stack.kill("ledger-worker")
    time.sleep(down)
    stack.start_worker()
    return ""


def _kill_service(stack: Stack, name: str, down: float) -> str:
    stack.kill(name)
    time.sleep(down)
    stack.start_service(name)
    child = stack.children[name]
    port = int(stack.addresses[name].rsplit(":", 1)[1])
    wait_until(lambda: port_open(port), timeout=60, what=name, process=child.process, log=child.log)
    return ""


@dataclass(frozen=True)
class Drained:
    """How a process stopped on SIGTERM."""

    name: str
    exit_code: int
    seconds: float  # from SIGTERM to exit
    # What a health Watch on its service saw: SERVING, then NOT_SERVING once the drain began.
    statuses: list[str] = field(default_factory=list)
    log: str = ""  # what it logged from SIGTERM to exit

    @property
    def clean(self) -> bool:
        """Exited 0, said NOT_SERVING before it stopped serving, and finished its work within the
        grace periods (nothing was cancelled)."""
        return (
            self.exit_code == 0
            and self.statuses == ["SERVING", "NOT_SERVING"]
            and '"stopped"' in self.log
            and "still running after the grace period" not in self.log
        )


def health_target(stack: Stack, name: str) -> tuple[str, str]:
    """(address, health service name) of a process of the stack: `ledger-worker`, `ingest-2`, …"""
    if name == "ledger-worker":
        return stack.worker_address, WORKER_SERVICE_NAME
    return stack.addresses[name], SERVICE_NAMES[name.split("-")[0]]


def sigterm(stack: Stack, name: str, *, frozen_seconds: float = 0.0, exit_seconds: float = 30) -> Drained:
    """Stops a process as a supervisor does (SIGTERM) and waits for it to exit, watching its health
    on the way. A process still running after `exit_seconds` is SIGKILLed (exit code -9).

    With `frozen_seconds`, the process is first frozen (SIGSTOP) that long and the SIGTERM is waiting
    for it when it thaws: meanwhile work piles up at its door (a worker's long polls are answered
    with messages, a server's connections fill with calls), so the drain has work in hand."""
    child = stack.children[name]
    address, service = health_target(stack, name)
    offset = child.log.stat().st_size if child.log.exists() else 0
    statuses: list[str] = []

    def note(update: health_pb2.HealthCheckResponse) -> None:
        statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(update.status))

    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        updates = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=exit_seconds)
        try:
            note(next(updates))
        except grpc.RpcError:
            pass
        if frozen_seconds:
            os.killpg(child.process.pid, signal.SIGSTOP)
            time.sleep(frozen_seconds)
        began = time.monotonic()
        child.terminate()
        if frozen_seconds:
            os.killpg(child.process.pid, signal.SIGCONT)
        try:
            # The next update, if the drain announces itself; else the stream breaks as the server goes.
            note(next(updates))
        except (grpc.RpcError, StopIteration):
            pass
        updates.cancel()  # a Watch left open would hold the draining server for its whole grace
    try:
        code = child.process.wait(exit_seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.process.wait()
    seconds = round(time.monotonic() - began, 2)
    with child.log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return Drained(name, code, seconds, statuses, text)


def restart(stack: Stack, name: str) -> None:
    """Starts a stopped process again on its address and waits until it reports SERVING."""
    if name == "ledger-worker":
        stack.start_worker()
        stack.wait_for_worker()
        return
    stack.start_service(name)
    child = stack.children[name]
    address, service = health_target(stack, name)
    wait_until(lambda: grpc_serving(address, service), timeout=60, what=name, process=child.process, log=child.log)


def _sigterm_and_restart(stack: Stack, name: str, down: float) -> str:
    drained = sigterm(stack, name)
    time.sleep(down)
    restart(stack, name)
    return f"exit {drained.exit_code} after {drained.seconds}s{'' if drained.clean else ' NOT CLEAN'}"


def _flush_redis(stack: Stack, down: float) -> str:
    # Only ever the stack's own redis-server: the machine's Redis is not ours to empty.
    if stack.redis is None:
        return "skipped: Redis is not the stack's own"
    client = redis.Redis.from_url(stack.redis.url)
    try:
        keys = client.dbsize()
        client.flushdb()
    finally:
        client.close()
    return f"{keys} keys"


def _restart_postgres(stack: Stack, down: float) -> str:
    if stack.postgres is None:
        return "skipped: PostgreSQL is not the stack's own"
    stack.stop_postgres("immediate")
    time.sleep(down)
    stack.start_postgres()
    return "crash (immediate), WAL recovery"


def _restart_sqs(stack: Stack, down: float) -> str:
    assert stack.sqs is not None
    port = stack.sqs.port
    stack.sqs.child.kill()  # a crash; the local server keeps nothing either way
    time.sleep(down)
    stack.restart_sqs(port)
    return "SIGKILL, queues back empty"


FAULTS: dict[str, Callable[[Stack, float], str]] = {
    "kill-worker": _kill_worker,
    "kill-ingest": lambda stack, down: _kill_service(stack, "ingest", down),  # the one Envoy routes to
    "kill-ingest-replica": lambda stack, down: _kill_service(stack, "ingest-2", down),
    # Holds, balances and the relay of the ledger's events.
    "kill-ledger": lambda stack, down: _kill_service(stack, "ledger", down),
    # A drain: SIGTERM, the process finishes what it has in hand and exits 0; then a restart.
    "term-worker": lambda stack, down: _sigterm_and_restart(stack, "ledger-worker", down),
    "term-ingest": lambda stack, down: _sigterm_and_restart(stack, "ingest", down),
    "term-ledger": lambda stack, down: _sigterm_and_restart(stack, "ledger", down),
    "flush-redis": _flush_redis,
    "restart-postgres": _restart_postgres,
    "restart-sqs": _restart_sqs,
}


def schedule(cycle: Sequence[str], first_at: float, last_at: float) -> list[tuple[float, str]]:
    """`cycle`'s faults spread evenly from `first_at` to `last_at` seconds into the load."""
    step = max(0.0, last_at - first_at) / max(1, len(cycle) - 1)
    return [(first_at + i * step, name) for i, name in enumerate(cycle)]


def applicable(stack: Stack, cycle: Sequence[str]) -> list[str]:
    """The faults this stack can take: no replica to kill without one, no restart of a PostgreSQL or
    Redis that is not the stack's own."""
    names = []
    for name in cycle:
        if name == "kill-ingest-replica" and "ingest-2" not in stack.children:
            continue
        if name == "restart-postgres" and stack.postgres is None:
            continue
        if name == "flush-redis" and stack.redis is None:
            continue
        names.append(name)
    return names


def run_faults(
    stack: Stack, plan: Sequence[tuple[float, str]], started: float, stop: threading.Event, down: float = 2.0
) -> list[FaultDone]:
    """Applies `plan` (seconds after `started`, fault) one fault at a time until `stop` is set; blocks."""
    done = []
    for at, name in plan:
        if stop.wait(max(0.0, started + at - time.monotonic())):
            break
        began = time.monotonic()
        note = FAULTS[name](stack, down)
        done.append(FaultDone(round(began - started, 1), name, round(time.monotonic() - began, 1), note))
    return done
