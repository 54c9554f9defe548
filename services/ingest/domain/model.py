"""Ingest's domain: what a valid transfer submission is, its fingerprint, and its message group.

Pure Python, no IO. Every rule raises a typed error naming the offending field.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from services.ingest.domain.errors import InvalidSubmission
from services.kernel.money import (
    Money,
    MoneyError,
    decimal_from_number,
    decimal_from_text,
    to_minor_units,
)

IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,255}$")
ACCOUNT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_VALUE = 512


class RequestStatus(StrEnum):
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


# A JSON amount as it arrived: a number (float), a decimal string, or absent/other.
RawAmount = float | int | str | Decimal | None | object


@dataclass(frozen=True)
class SubmitTransaction:
    """The command as the API received it, before validation."""

    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: RawAmount
    currency: str
    metadata: dict[str, str] = field(default_factory=dict)
    has_transaction: bool = True


@dataclass(frozen=True)
class TransferSubmission:
    """A validated submission."""

    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: Money
    metadata: dict[str, str]

    def fingerprint(self) -> str:
        """Identifies the request's content: same key + same fingerprint is a replay."""
        canonical = json.dumps(
            {
                "source": self.source_account_id,
                "destination": self.destination_account_id,
                "amount": self.amount.minor_units,
                "currency": self.amount.currency,
                "metadata": self.metadata,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Acceptance:
    """What the caller is told when a submission is accepted (or replayed)."""

    idempotency_key: str
    message_id: str
    expires_at: datetime
    replayed: bool


@dataclass(frozen=True)
class TransferOutcome:
    """The ledger's verdict on one transfer, as ingest records it."""

    transfer_id: str
    status: RequestStatus
    completed_at: datetime
    error_code: str = ""
    error_message: str = ""


def _parse_amount(raw: RawAmount, currency: str) -> Money:
    try:
        if raw is None:
            raise InvalidSubmission("transaction.amount is required", field="transaction.amount",
                                    code="MISSING_FIELD")
        if isinstance(raw, bool):
            raise MoneyError("INVALID_AMOUNT", "amount must be a number or a decimal string")
        if isinstance(raw, Decimal):
            value = raw
        elif isinstance(raw, int):
            value = Decimal(raw)
        elif isinstance(raw, float):
            value = decimal_from_number(raw)
        elif isinstance(raw, str):
            value = decimal_from_text(raw)
        else:
            raise MoneyError("INVALID_AMOUNT", "amount must be a number or a decimal string")
        minor = to_minor_units(value, currency)
    except MoneyError as error:
        field_name = "transaction.currency" if error.code in {"UNKNOWN_CURRENCY", "INVALID_CURRENCY"} \
            else "transaction.amount"
        raise InvalidSubmission(f"{field_name}: {error.message}", field=field_name, code=error.code) from None
    if minor <= 0:
        raise InvalidSubmission("transaction.amount must be greater than zero", field="transaction.amount",
                                code="INVALID_AMOUNT")
    return Money(minor, currency)


def _require_id(value: str, field_name: str, pattern: re.Pattern[str], code: str, limit: int) -> str:
    if not value:
        raise InvalidSubmission(f"{field_name} is required", field=field_name, code="MISSING_FIELD")
    if not pattern.match(value):
        raise InvalidSubmission(
            f"{field_name} must be 1-{limit} characters of letters, digits and . _ : -",
            field=field_name,
            code=code,
        )
    return value


def validate_idempotency_key(key: str) -> str:
    """Raises InvalidSubmission unless `key` is 1-255 characters of letters, digits and . _ : -"""
    return _require_id(key, "idempotencyKey", IDEMPOTENCY_KEY_PATTERN, "INVALID_IDEMPOTENCY_KEY", 255)


def validate_submission(command: SubmitTransaction, *, default_currency: str) -> TransferSubmission:
    """Checks every rule; raises InvalidSubmission (a ValidationError) with a code and the field."""
    key = validate_idempotency_key(command.idempotency_key)
    if not command.has_transaction:
        raise InvalidSubmission("transaction is required", field="transaction", code="MISSING_FIELD")
    source = _require_id(command.source_account_id, "transaction.source_account_id", ACCOUNT_ID_PATTERN,
                         "INVALID_ACCOUNT_ID", 128)
    destination = _require_id(command.destination_account_id, "transaction.destination_account_id",
                              ACCOUNT_ID_PATTERN, "INVALID_ACCOUNT_ID", 128)
    if source == destination:
        raise InvalidSubmission("transaction.destination_account_id must differ from source_account_id",
                                field="transaction.destination_account_id", code="SAME_ACCOUNT")
    currency = (command.currency or default_currency).strip().upper()
    amount = _parse_amount(command.amount, currency)
    if len(command.metadata) > MAX_METADATA_ENTRIES:
        raise InvalidSubmission(f"transaction.metadata has more than {MAX_METADATA_ENTRIES} entries",
                                field="transaction.metadata", code="INVALID_METADATA")
    for name, value in command.metadata.items():
        if not name or len(name) > 64 or len(value) > MAX_METADATA_VALUE:
            raise InvalidSubmission(
                f"transaction.metadata keys must be 1-64 characters and values at most {MAX_METADATA_VALUE}",
                field="transaction.metadata", code="INVALID_METADATA")
    return TransferSubmission(key, source, destination, amount, dict(command.metadata))


def message_group_for(account_id: str, groups: int) -> str:
    """The SQS message group of an account: stable, so one account's movements stay ordered."""
    return f"accounts-{zlib.crc32(account_id.encode()) % groups:04d}"
