"""Against real PostgreSQL: two outbox relays draining one outbox, while rows keep arriving, deliver
every message group in outbox order, however long each send takes."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import create_engine
from services.kernel.outbox import OutboxRelay
from services.kernel.sqs import OutgoingMessage, SqsClient

pytestmark = pytest.mark.integration

GROUPS = 8
ROWS = 2400


class JitterySqs(SqsClient):
    """Records what reaches the queue, in arrival order; each send takes a random time, as real
    calls do, so concurrent sends can overtake each other."""

    def __init__(self, queue: list[OutgoingMessage]) -> None:
        super().__init__(client=None)
        self.queue = queue
        self.sent = 0

    async def send_batch(self, queue_name: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        await asyncio.sleep(random.uniform(0, 0.01))
        self.queue.extend(messages)
        self.sent += len(messages)
        return [m.deduplication_id for m in messages]


@pytest.fixture
async def outbox_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    schema = f"relay_{secrets.token_hex(4)}"
    engine = create_engine(database_url, schema)
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        await conn.execute(
            text(
                f"CREATE TABLE {schema}.outbox (id bigserial PRIMARY KEY, message_group text NOT NULL,"
                " payload bytea NOT NULL, traceparent text NOT NULL DEFAULT '', published_at timestamptz)"
            )
        )
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    await engine.dispose()


async def test_two_relays_deliver_each_group_in_outbox_order(outbox_engine: AsyncEngine) -> None:
    queue: list[OutgoingMessage] = []
    clients = [JitterySqs(queue), JitterySqs(queue)]
    relays = [
        OutboxRelay(
            outbox_engine,
            sqs,
            source="relay-test",
            queues=["q.fifo"],
            pack=b",".join,
            rows_per_poll=150,  # several polls, and several messages per group per poll
            rows_per_message=10,
            idle_seconds=0.001,
            max_idle_seconds=0.005,
        )
        for sqs in clients
    ]

    async def insert(start: int) -> None:
        async with outbox_engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outbox (message_group, payload)"
                    " SELECT 'g' || (n % :groups), convert_to(n::text, 'UTF8')"
                    " FROM generate_series(CAST(:start AS int), CAST(:stop AS int)) AS n ORDER BY n"
                ),
                {"groups": GROUPS, "start": start, "stop": start + 199},
            )

    # Each relay publishes one poll, one after the other, so that both take part whatever the timing
    # of what follows: the second continues every group where the first stopped.
    await insert(0)
    assert await relays[0].relay_once() == 150
    assert await relays[1].relay_once() == 50
    stop = asyncio.Event()
    running = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        for start in range(200, ROWS, 200):  # rows keep arriving while both relays publish
            await insert(start)
            await asyncio.sleep(0.01)
        async with asyncio.timeout(30):
            while True:
                async with outbox_engine.connect() as conn:
                    pending = (
                        await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
                    ).scalar_one()
                if pending == 0:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*running)

    assert all(sqs.sent > 0 for sqs in clients)  # both relays took part
    arrived: dict[str, list[int]] = {}
    for received in queue:
        arrived.setdefault(received.group_id, []).extend(int(n) for n in received.body.split(b","))
    assert sorted(n for ns in arrived.values() for n in ns) == list(range(ROWS))  # each row exactly once
    for group, numbers in arrived.items():
        assert numbers == sorted(numbers), f"group {group} arrived out of outbox order"


class GatedSqs(SqsClient):
    """Holds every send until `gate` opens, so a relay keeps its claim as long as the test wants."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__(client=None)
        self.gate = gate
        self.groups: set[str] = set()

    async def send_batch(self, queue_name: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        await self.gate.wait()
        self.groups.update(m.group_id for m in messages)
        return [m.deduplication_id for m in messages]


async def test_a_second_relay_publishes_other_groups_while_the_first_holds_its_own(
    outbox_engine: AsyncEngine,
) -> None:
    held = GatedSqs(asyncio.Event())
    free_gate = asyncio.Event()
    free_gate.set()
    free = GatedSqs(free_gate)

    def relay(sqs: SqsClient) -> OutboxRelay:
        return OutboxRelay(outbox_engine, sqs, source="relay-test", queues=["q.fifo"], pack=b",".join)

    async def insert(groups: list[str], rows: int) -> None:
        async with outbox_engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outbox (message_group, payload)"
                    " SELECT (CAST(:groups AS text[]))[1 + n % 2], convert_to(n::text, 'UTF8')"
                    " FROM generate_series(1, :rows) AS n ORDER BY n"
                ),
                {"groups": groups, "rows": rows},
            )

    await insert(["a", "b"], 10)
    first = asyncio.create_task(relay(held).relay_once())
    await asyncio.sleep(0.2)  # the first relay has claimed a and b and waits on its sends
    await insert(["a", "c"], 10)
    assert await relay(free).relay_once() == 5  # c's rows only: a stays with the first relay
    assert free.groups == {"c"}
    held.gate.set()
    assert await first == 10
    assert held.groups == {"a", "b"}


async def test_the_backlog_counts_the_rows_not_yet_published(outbox_engine: AsyncEngine) -> None:
    """What the payrecon_outbox_unpublished gauge reads."""
    relay = OutboxRelay(outbox_engine, JitterySqs([]), source="backlog-test", queues=["q.fifo"], pack=b",".join)
    assert await relay.unpublished() == 0
    async with outbox_engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO outbox (message_group, payload) SELECT 'g' || (n % 3), 'x' FROM generate_series(1, 7) n")
        )
    assert await relay.unpublished() == 7
    assert await relay.relay_once() == 7
    assert await relay.unpublished() == 0
