"""Against the real SQS-compatible server: FIFO queues with a dead-letter queue, batches, attributes."""

from __future__ import annotations

import pytest

from services.kernel.queues import dead_letter_queue_name
from services.kernel.sqs import OutgoingMessage, SqsClient, decode_body

pytestmark = pytest.mark.integration


async def test_fifo_round_trip_keeps_group_order_and_deduplicates(sqs_endpoint: str) -> None:
    async with SqsClient.connect(endpoint_url=sqs_endpoint, region="us-east-1") as sqs:
        await sqs.ensure_fifo_queue("it-roundtrip.fifo", visibility_timeout=30)
        messages = [OutgoingMessage(f"m{i}".encode(), "group-a", f"dedup-{i}", {}) for i in range(5)]
        await sqs.send_batch("it-roundtrip.fifo", messages)
        await sqs.send_batch("it-roundtrip.fifo", messages[:2])  # duplicates: dropped by deduplication id
        attrs = await sqs.attributes("it-roundtrip.fifo")
        assert attrs.fifo and attrs.messages == 5
        received = []
        while len(received) < 5:
            batch = await sqs.receive("it-roundtrip.fifo", wait_seconds=1)
            assert batch, "expected more messages"
            received += batch
            await sqs.delete_batch("it-roundtrip.fifo", [m["ReceiptHandle"] for m in batch])
        assert [decode_body(m) for m in received] == [f"m{i}".encode() for i in range(5)]
        dlq = await sqs.attributes(dead_letter_queue_name("it-roundtrip.fifo"))
        assert dlq.fifo and dlq.messages == 0


async def test_a_long_batch_keeps_its_messages_invisible_until_it_is_done(sqs_endpoint: str) -> None:
    """The consumer extends visibility while a handler runs past the queue's visibility timeout, so no
    other receiver gets the messages meanwhile; they are deleted once handled."""
    import asyncio

    from services.kernel.consumer import consume

    async with SqsClient.connect(endpoint_url=sqs_endpoint, region="us-east-1") as sqs:
        queue = "it-heartbeat.fifo"
        await sqs.ensure_fifo_queue(queue, visibility_timeout=2)
        await sqs.send_batch(queue, [OutgoingMessage(b"slow", "g", "slow-1", {})])
        stop = asyncio.Event()
        handled: list[bytes] = []
        stolen: list[int] = []

        async def slow_handler(messages):  # type: ignore[no-untyped-def]
            await asyncio.sleep(5)  # well past the 2 s visibility timeout
            handled.extend(decode_body(m) for m in messages)
            return messages

        async def rival() -> None:
            for _ in range(4):
                await asyncio.sleep(1)
                stolen.append(len(await sqs.receive(queue, wait_seconds=0)))

        consumer = asyncio.create_task(consume(sqs, queue, slow_handler, stop, receivers=1, visibility_seconds=2))
        await asyncio.sleep(0.5)
        await rival()
        await asyncio.sleep(2)
        stop.set()
        await asyncio.wait_for(consumer, 10)
        assert handled == [b"slow"]
        assert stolen == [0, 0, 0, 0]  # never visible to anyone else while being handled
        assert (await sqs.attributes(queue)).messages == 0


async def test_a_stopping_consumer_finishes_the_receive_in_flight_instead_of_abandoning_it(sqs_endpoint: str) -> None:
    """Stop arrives while a long poll is waiting and a message lands before the poll ends: the
    consumer (given its grace) handles and deletes it. Abandoned, the poll would still take the
    message, leaving it invisible for the visibility timeout and its FIFO group held back."""
    import asyncio

    from services.kernel.consumer import consume
    from services.kernel.runtime import background

    async with SqsClient.connect(endpoint_url=sqs_endpoint, region="us-east-1") as sqs:
        queue = "it-graceful-stop.fifo"
        await sqs.ensure_fifo_queue(queue, visibility_timeout=30)
        stop = asyncio.Event()
        handled: list[bytes] = []

        async def handler(messages):  # type: ignore[no-untyped-def]
            handled.extend(decode_body(m) for m in messages)
            return messages

        async with background(consume(sqs, queue, handler, stop, receivers=1, wait_seconds=4), grace_seconds=5):
            await asyncio.sleep(1)  # the receive is now waiting on the empty queue
            stop.set()
            await sqs.send_batch(queue, [OutgoingMessage(b"late", "g", "late-1", {})])
        assert handled == [b"late"]
        attributes = await sqs.attributes(queue)
        assert (attributes.messages, attributes.in_flight) == (0, 0)
