"""Starts LocalStack 4.9.2 (the release for Python 3.11/3.12) with one upstream SQS fix backported.

In 4.9.2 a FIFO receipt handle expires at receive time + visibility timeout even after the consumer
extended the visibility (localstack/localstack#12954), so a batch handled longer than the timeout can
never be deleted and is redelivered. Later releases (2026.3.0, Python 3.13 only) check the extended
deadline, as AWS does; so does this. Run by the LocalStack venv's Python, never imported by payrecon.
"""

import runpy
from typing import Any

from localstack.services.sqs import models  # type: ignore[import-not-found]


def _pre_delete_checks(self: Any, message: Any, receipt_handle: str) -> None:
    # LocalStack 2026.3.0's rule: the handle has expired once the message is visible again.
    if message.is_visible:
        raise models.InvalidParameterValueException(
            f"Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
        )


models.FifoQueue._pre_delete_checks = _pre_delete_checks
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
