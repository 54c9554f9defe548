"""SQS on aiobotocore: queue provisioning (FIFO + dead-letter), batched send, receive, delete, stats."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from services.kernel.queues import QueueAttributes, dead_letter_queue_name

MAX_BATCH = 10  # SQS's limit for SendMessageBatch / DeleteMessageBatch / ReceiveMessage


@dataclass(frozen=True)
class OutgoingMessage:
    body: bytes
    group_id: str
    deduplication_id: str
    attributes: dict[str, dict[str, str]]


class SqsClient:
    """One aiobotocore client plus resolved queue URLs. Use `async with SqsClient.connect(...)`."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._urls: dict[str, str] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, *, endpoint_url: str | None, region: str) -> AsyncIterator[SqsClient]:
        session = get_session()
        config = AioConfig(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30, max_pool_connections=32
        )
        kwargs: dict[str, Any] = {"region_name": region, "config": config}
        if endpoint_url:
            # Local SQS-compatible servers accept any credentials.
            kwargs.update(endpoint_url=endpoint_url, aws_access_key_id="test", aws_secret_access_key="test")
        async with session.create_client("sqs", **kwargs) as client:
            yield cls(client)

    async def url(self, queue_name: str) -> str:
        if queue_name not in self._urls:
            response = await self._client.get_queue_url(QueueName=queue_name)
            self._urls[queue_name] = response["QueueUrl"]
        return self._urls[queue_name]

    async def ensure_fifo_queue(self, name: str, *, visibility_timeout: int = 60, max_receives: int = 5) -> str:
        """Creates `name` (FIFO) and `<name minus .fifo>-dlq.fifo` with a redrive policy; idempotent."""
        if not name.endswith(".fifo"):
            raise ValueError(f"FIFO queue names end in .fifo: {name!r}")
        dlq_name = dead_letter_queue_name(name)
        dlq = await self._client.create_queue(
            QueueName=dlq_name,
            Attributes={"FifoQueue": "true", "MessageRetentionPeriod": "1209600"},
        )
        dlq_attrs = await self._client.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])
        redrive = {"deadLetterTargetArn": dlq_attrs["Attributes"]["QueueArn"], "maxReceiveCount": str(max_receives)}
        created = await self._client.create_queue(
            QueueName=name,
            Attributes={
                "FifoQueue": "true",
                "ContentBasedDeduplication": "false",
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps(redrive),
            },
        )
        self._urls[name] = created["QueueUrl"]
        self._urls[dlq_name] = dlq["QueueUrl"]
        return str(created["QueueUrl"])

    async def send_batch(self, queue_name: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Sends up to 10 messages in one call; returns their SQS message ids. Raises on any failure."""
        if not messages:
            return []
        if len(messages) > MAX_BATCH:
            raise ValueError("at most 10 messages per batch")
        entries = [
            {
                "Id": str(i),
                "MessageBody": base64.b64encode(m.body).decode(),
                "MessageGroupId": m.group_id,
                "MessageDeduplicationId": m.deduplication_id,
                "MessageAttributes": {
                    **m.attributes,
                    "content-type": {"DataType": "String", "StringValue": "application/x-protobuf;base64"},
                },
            }
            for i, m in enumerate(messages)
        ]
        response = await self._client.send_message_batch(QueueUrl=await self.url(queue_name), Entries=entries)
        failed = response.get("Failed") or []
        if failed:
            raise RuntimeError(f"SQS rejected {len(failed)} of {len(entries)} messages: {failed[0]}")
        by_id = {s["Id"]: s["MessageId"] for s in response.get("Successful", [])}
        return [by_id[str(i)] for i in range(len(entries))]

    async def receive(
        self,
        queue_name: str,
        *,
        max_messages: int = MAX_BATCH,
        wait_seconds: int = 1,
        visibility_timeout: int | None = None,
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": await self.url(queue_name),
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageAttributeNames": ["All"],
            "AttributeNames": ["ApproximateReceiveCount", "MessageGroupId", "MessageDeduplicationId"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        response = await self._client.receive_message(**kwargs)
        return list(response.get("Messages") or [])

    async def delete_batch(self, queue_name: str, receipt_handles: Sequence[str]) -> None:
        url = await self.url(queue_name)
        for start in range(0, len(receipt_handles), MAX_BATCH):
            chunk = receipt_handles[start : start + MAX_BATCH]
            await self._client.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            )

    async def change_visibility_batch(self, queue_name: str, receipt_handles: Sequence[str], seconds: int) -> None:
        url = await self.url(queue_name)
        for start in range(0, len(receipt_handles), MAX_BATCH):
            chunk = receipt_handles[start : start + MAX_BATCH]
            await self._client.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds} for i, h in enumerate(chunk)],
            )

    async def change_visibility(self, queue_name: str, receipt_handle: str, seconds: int) -> None:
        await self._client.change_message_visibility(
            QueueUrl=await self.url(queue_name), ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    async def attributes(self, queue_name: str) -> QueueAttributes:
        url = await self.url(queue_name)
        response = await self._client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        attrs = response["Attributes"]
        return QueueAttributes(
            url=url,
            messages=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            visibility_timeout=int(attrs.get("VisibilityTimeout", 0)),
            fifo=attrs.get("FifoQueue", "false") == "true",
            content_deduplication=attrs.get("ContentBasedDeduplication", "false") == "true",
        )


def decode_body(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message["Body"])
