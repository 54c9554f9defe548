"""Queue facts every context may report, free of any SQS client: a queue's attributes and the name
of its dead-letter queue."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueAttributes:
    url: str
    messages: int
    in_flight: int
    visibility_timeout: int
    fifo: bool
    content_deduplication: bool


def dead_letter_queue_name(queue_name: str) -> str:
    return queue_name.removesuffix(".fifo") + "-dlq.fifo"
