"""SQS consumer loop: several receivers, a handler per received batch, delete what it handled.

The handler returns the messages it finished with; the rest (or the whole batch, if it raises) stay
undeleted: SQS redelivers them after the visibility timeout and, after the queue's maxReceiveCount,
moves them to the dead-letter queue. Handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry import trace

from services.kernel.sqs import SqsClient
from services.kernel.telemetry import extract_message_context

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Message = dict[str, Any]
BatchHandler = Callable[[Sequence[Message]], Awaitable[Sequence[Message]]]


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
    wait_seconds: int = 1,
    visibility_seconds: int = 60,
) -> None:
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
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            if not messages:
                continue
            context = extract_message_context(messages[0])
            links = [
                trace.Link(trace.get_current_span(extract_message_context(m)).get_span_context()) for m in messages[1:]
            ]
            with tracer.start_as_current_span(
                f"{queue} process", context=context, links=links, kind=trace.SpanKind.CONSUMER
            ) as span:
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
            if not done:
                continue
            try:
                await sqs.delete_batch(queue, [m["ReceiptHandle"] for m in done])
            except Exception as error:
                log.warning(
                    "delete failed; messages will be redelivered (handlers are idempotent)",
                    extra={"fields": {"queue": queue, "error": repr(error)}},
                )

    await asyncio.gather(*(receive_loop(i) for i in range(receivers)))
