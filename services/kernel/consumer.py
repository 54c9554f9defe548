"""SQS consumer loop: several receivers, a handler per received batch, delete what it handled.

The handler returns the messages it finished with; the rest (or the whole batch, if it raises) stay
undeleted: SQS redelivers them after the visibility timeout and, after the queue's maxReceiveCount,
moves them to the dead-letter queue. Handlers must be idempotent.

What the queue costs: each receive long-polls (the server holds it until a message arrives or
`wait_seconds` pass, so an idle receiver makes a call every few seconds rather than spinning), asks
for up to 10 messages, and what was handled goes in one DeleteMessageBatch. With `linger_seconds`, a
receiver that got less than a full batch waits that long before asking again, so the next receive
finds more messages: fewer, bigger receives and deletes, for that much more latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry import trace

from services.kernel.runtime import sleep_or_stop
from services.kernel.sqs import MAX_BATCH, SqsClient
from services.kernel.telemetry import batch_span, extract_message_context

log = logging.getLogger(__name__)

Message = dict[str, Any]
BatchHandler = Callable[[Sequence[Message]], Awaitable[Sequence[Message]]]

# How long a receive waits for a message (SQS allows up to 20 s); also the longest a stopping
# consumer takes to finish the receive it has in flight.
LONG_POLL_SECONDS = 5


async def _keep_invisible(sqs: SqsClient, queue: str, messages: Sequence[Message], seconds: int) -> None:
    """While a batch is being handled, pushes its visibility timeout out every half period, so a
    long batch is not redelivered to another receiver mid-way."""
    while True:
        await asyncio.sleep(seconds / 2)
        try:
            await sqs.change_visibility_batch(queue, [m["ReceiptHandle"] for m in messages], seconds)
        except Exception as error:
            log.warning("extending visibility failed", extra={"fields": {"queue": queue, "error": repr(error)}})


async def consume(
    sqs: SqsClient,
    queue: str,
    handle: BatchHandler,
    stop: asyncio.Event,
    *,
    receivers: int = 2,
    wait_seconds: int = LONG_POLL_SECONDS,
    visibility_seconds: int = 60,
    linger_seconds: float = 0.0,
) -> None:
    """Receives until `stop` is set. A receive in flight then is let finish and its messages are
    handled (so give the task `wait_seconds` to end before cancelling it): a receive abandoned
    mid-poll can still be handed messages, which would stay invisible until their visibility
    timeout, holding back their FIFO message group."""

    async def receive_loop(index: int) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                messages = await sqs.receive(queue, wait_seconds=wait_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                backoff = min(5.0, max(0.1, backoff * 2))
                log.warning("receive failed", extra={"fields": {"queue": queue, "error": repr(error)}})
                await sleep_or_stop(stop, backoff)  # a stopping consumer does not sleep its backoff out
                continue
            backoff = 0.0
            if not messages:
                continue
            # One span for the batch: the child of the first message's trace, linked to the others'.
            with batch_span(
                f"{queue} process", (extract_message_context(m) for m in messages), kind=trace.SpanKind.CONSUMER
            ) as span:
                if span.is_recording():
                    span.set_attribute("messaging.system", "aws_sqs")
                    span.set_attribute("messaging.batch.message_count", len(messages))
                heartbeat = asyncio.create_task(_keep_invisible(sqs, queue, messages, visibility_seconds))
                try:
                    done = await handle(messages)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    span.record_exception(error)
                    log.exception(
                        "message batch failed; left for redelivery",
                        extra={"fields": {"queue": queue, "count": len(messages)}},
                    )
                    continue
                finally:
                    heartbeat.cancel()
            if done:
                try:
                    await sqs.delete_batch(queue, [m["ReceiptHandle"] for m in done])
                except Exception as error:
                    log.warning(
                        "delete failed; messages will be redelivered (handlers are idempotent)",
                        extra={"fields": {"queue": queue, "error": repr(error)}},
                    )
            if linger_seconds and len(messages) < MAX_BATCH:
                await sleep_or_stop(stop, linger_seconds)

    await asyncio.gather(*(receive_loop(i) for i in range(receivers)))
