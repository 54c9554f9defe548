"""Starts and stops the whole local stack, in dependency order, as child processes."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.devstack.envoy import REPO_ROOT, Envoy
from services.devstack.postgres import EmbeddedPostgres
from services.devstack.processes import Child, free_port, grpc_serving, spawn, wait_until
from services.devstack.redis_server import EmbeddedRedis
from services.devstack.sqs_server import SqsServer
from services.ingest.api.errors import SERVICE_NAME as INGEST_SERVICE
from services.ingest.config import ingest_process_count
from services.kernel.config import Env
from services.ledger.api.errors import SERVICE_NAME as LEDGER_SERVICE
from services.ledger.api.errors import WORKER_SERVICE_NAME
from services.provisioning import create_queues, migrate_all
from services.reconciliation.api.errors import SERVICE_NAME as RECONCILIATION_SERVICE

SERVICES = ("ingest", "ledger", "reconciliation")
# The gRPC health name each context's processes report SERVING on once they can serve.
SERVICE_NAMES = {"ingest": INGEST_SERVICE, "ledger": LEDGER_SERVICE, "reconciliation": RECONCILIATION_SERVICE}


def state_dir_for(repo_root: Path) -> Path:
    """One state dir per checkout, the same on every start (so `make run` finds its data again).
    Outside the work tree: embedded PostgreSQL runs as an unprivileged user that must reach it."""
    # A digest, not hash(): str hashes are salted per process.
    tag = hashlib.sha256(str(repo_root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"payrecon-{tag}"


def default_state_dir() -> Path:
    return state_dir_for(REPO_ROOT)


def create_database(admin_url: str, name: str) -> str:
    """Creates database `name` on the server of `admin_url`; returns its URL."""
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@dataclass
class StackOptions:
    http_port: int = 3000
    database_url: str | None = None
    redis_url: str | None = None
    # An SQS server already running, shared (isolated stacks name their queues apart); None: the
    # stack starts one of its own, which `stop_sqs`/`restart_sqs` can then take away.
    sqs_url: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    # Tests: a fresh database and key prefix per stack, dropped afterwards.
    isolated: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    # Ingest processes, each on its own port (`addresses["ingest"]`, `addresses["ingest-2"]`, …), all
    # endpoints of Envoy's ingest cluster; each runs the whole service, background jobs included.
    # None: INGEST_PROCESSES (from extra_env, then the environment), else one per two cores.
    ingest_processes: int | None = None
    # Each process serves Prometheus metrics on a port of its own (`metrics_addresses`).
    metrics: bool = True


@dataclass
class Stack:
    options: StackOptions
    env: dict[str, str] = field(default_factory=dict)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    sqs: SqsServer | None = None
    envoy: Envoy | None = None
    children: dict[str, Child] = field(default_factory=dict)
    database_name: str | None = None
    admin_database_url: str | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    worker_address: str = ""  # the ledger worker's health (grpc.health.v1) only
    # Where each process (`ingest`, …, `ledger-worker`) serves its metrics (PAYRECON_METRICS_ADDRESS).
    metrics_addresses: dict[str, str] = field(default_factory=dict)
    log_dir: Path = field(default_factory=Path)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.options.http_port}"

    @property
    def otlp_endpoint(self) -> str | None:
        """Where every process, Envoy included, exports its spans (PAYRECON_OTLP_ENDPOINT); None: nowhere."""
        return self.env.get("PAYRECON_OTLP_ENDPOINT") or None

    @property
    def ingest_names(self) -> list[str]:
        """The ingest processes' names: `ingest`, `ingest-2`, …"""
        return [name for name in self.addresses if name.split("-")[0] == "ingest"]

    @property
    def ingest_addresses(self) -> list[str]:
        return [self.addresses[name] for name in self.ingest_names]

    def _mark(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 2)

    def start(self) -> Stack:
        opts = self.options
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        log_dir = opts.state_dir / f"logs-{opts.http_port}"
        try:
            t = time.monotonic()
            database_url = opts.database_url
            if not database_url:
                self.postgres = EmbeddedPostgres.start(opts.state_dir)
                database_url = self.postgres.url
            self._mark("postgres", t)
            if opts.isolated:
                self.admin_database_url = database_url
                self.database_name = f"payrecon_test_{secrets.token_hex(4)}"
                database_url = create_database(database_url, self.database_name)
            t = time.monotonic()
            redis_url = opts.redis_url
            if not redis_url:
                self.redis = EmbeddedRedis.start(log_dir)
                redis_url = self.redis.url
            self._mark("redis", t)
            t = time.monotonic()
            sqs_url = opts.sqs_url
            if not sqs_url:
                self.sqs = SqsServer.start(opts.state_dir)
                sqs_url = self.sqs.url
            self._mark("sqs", t)

            self.addresses = {name: f"127.0.0.1:{free_port()}" for name in SERVICES}
            self.worker_address = f"127.0.0.1:{free_port()}"
            suffix = secrets.token_hex(3) if opts.isolated else ""
            self.env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "LEDGER_", "RECON_"))},
                "PAYRECON_ENV": "development",
                "PAYRECON_DATABASE_URL": database_url,
                "PAYRECON_REDIS_URL": redis_url,
                "PAYRECON_SQS_ENDPOINT_URL": sqs_url,
                "PAYRECON_INGEST_ADDRESS": self.addresses["ingest"],
                "PAYRECON_LEDGER_ADDRESS": self.addresses["ledger"],
                "PAYRECON_RECONCILIATION_ADDRESS": self.addresses["reconciliation"],
                "LEDGER_WORKER_ADDRESS": self.worker_address,
                "INGEST_CACHE_PREFIX": f"idempotency:{suffix}:" if suffix else "idempotency:",
                **(
                    {
                        "PAYRECON_TRANSFERS_QUEUE": f"payrecon-transfers-{suffix}.fifo",
                        "PAYRECON_INGEST_EVENTS_QUEUE": f"payrecon-ledger-events-ingest-{suffix}.fifo",
                        "PAYRECON_RECON_EVENTS_QUEUE": f"payrecon-ledger-events-recon-{suffix}.fifo",
                    }
                    if suffix
                    else {}
                ),
                **opts.extra_env,
            }
            t = time.monotonic()
            asyncio.run(migrate_all(self.env))
            asyncio.run(create_queues(self.env))
            self._mark("migrations+queues", t)

            t = time.monotonic()
            self.log_dir = log_dir
            processes = opts.ingest_processes
            if processes is None:
                processes = ingest_process_count(Env({**os.environ, **opts.extra_env}))
            for index in range(2, processes + 1):
                self.addresses[f"ingest-{index}"] = f"127.0.0.1:{free_port()}"
            if opts.metrics:
                self.metrics_addresses = {
                    name: f"127.0.0.1:{free_port()}" for name in [*self.addresses, "ledger-worker"]
                }
            for name in self.addresses:
                self.start_service(name)
            self.start_worker()
            # Ready means every process serves (its service SERVING on its own port), not just one.
            for name in self.addresses:
                child = self.children[name]
                wait_until(
                    functools.partial(grpc_serving, self.addresses[name], SERVICE_NAMES[name.split("-")[0]]),
                    timeout=60,
                    what=f"{name} service",
                    process=child.process,
                    log=child.log,
                )
            self.wait_for_worker()
            self._mark("services", t)
            t = time.monotonic()
            self.envoy = Envoy.start(
                opts.state_dir,
                http_port=opts.http_port,
                ingest=self.ingest_addresses,
                ledger=self.addresses["ledger"],
                reconciliation=self.addresses["reconciliation"],
                otlp_endpoint=self.otlp_endpoint,
            )
            wait_until(self.ready, timeout=60, what="/api/v1/ready", log=self.envoy.child.log)
            self._mark("envoy+ready", t)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self) -> None:
        """(Re)starts the ledger worker, e.g. after `stop_worker` to let a backlog build up."""
        self.children["ledger-worker"] = spawn(
            "ledger-worker",
            [sys.executable, "-m", "services.cli", "worker"],
            log_dir=self.log_dir,
            env={**self.env, **self._metrics_env("ledger-worker")},
            cwd=REPO_ROOT,
        )

    def wait_for_worker(self, timeout: float = 60) -> None:
        """Until the ledger worker reports SERVING: its database and queue are reachable."""
        child = self.children["ledger-worker"]
        wait_until(
            functools.partial(grpc_serving, self.worker_address, WORKER_SERVICE_NAME),
            timeout=timeout,
            what="ledger worker",
            process=child.process,
            log=child.log,
        )

    def stop_worker(self) -> None:
        self.children["ledger-worker"].stop()

    def start_service(self, name: str) -> None:
        """(Re)starts a service process — `ingest`, `ingest-2`, …, `ledger`, `reconciliation` — on
        its address, e.g. after `kill`."""
        context = name.split("-")[0]
        self.children[name] = spawn(
            name,
            [sys.executable, "-m", "services.cli", "serve", context],
            log_dir=self.log_dir,
            env={**self.env, f"PAYRECON_{context.upper()}_ADDRESS": self.addresses[name], **self._metrics_env(name)},
            cwd=REPO_ROOT,
        )

    def _metrics_env(self, name: str) -> dict[str, str]:
        address = self.metrics_addresses.get(name)
        return {"PAYRECON_METRICS_ADDRESS": address} if address else {}

    def kill(self, name: str) -> None:
        """SIGKILLs a child (`ledger-worker`, `ingest-2`, …) as a crash would: nothing of it cleans up."""
        self.children[name].kill()

    def stop_sqs(self) -> int:
        """Takes the SQS server away, for outage drills; returns its port for `restart_sqs`."""
        if self.sqs is None:
            raise RuntimeError("this stack uses a shared SQS server: it is not the stack's to stop")
        self.sqs.stop()
        return self.sqs.port

    def restart_sqs(self, port: int) -> None:
        """Brings SQS back on the same port. The local server keeps nothing across a restart, so the
        queues are created again, as an operator restoring it would."""
        self.sqs = SqsServer.start(self.options.state_dir, port=port)
        asyncio.run(create_queues(self.env))

    def stop_postgres(self, mode: str = "immediate") -> None:
        """Takes the stack's own embedded PostgreSQL away (by default as a crash would), for outage
        drills; `start_postgres` brings it back on the same data directory and port."""
        if self.postgres is None:
            raise RuntimeError("this stack uses an external PostgreSQL: it is not the stack's to stop")
        self.postgres.stop(mode)

    def start_postgres(self) -> None:
        assert self.postgres is not None
        self.postgres = EmbeddedPostgres.start(self.options.state_dir, port=self.postgres.port)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v1/ready", timeout=2) as response:
                return bool(response.status == 200 and json.load(response).get("status") == "READY")
        except OSError:
            return False

    def stop(self) -> None:
        if self.envoy:
            self.envoy.stop()
        # Every process at once (each may take a few seconds to finish a long poll), then the waits.
        children = list(reversed(list(self.children.values())))
        for child in children:
            child.terminate()
        for child in children:
            child.stop()
        if self.sqs:
            self.sqs.stop()
        if self.redis:
            self.redis.stop()
        if self.database_name and self.admin_database_url:
            try:
                drop_database(self.admin_database_url, self.database_name)
            except Exception:
                pass
        if self.postgres:
            self.postgres.stop()
