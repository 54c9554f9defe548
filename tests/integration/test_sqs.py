"""Against the real SQS-compatible server: FIFO queues with a dead-letter queue, batches, attributes."""

from __future__ import annotations

import pytest

from services.kernel.sqs import OutgoingMessage, SqsClient, dead_letter_queue_name, decode_body

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
