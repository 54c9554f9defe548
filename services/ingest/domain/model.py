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
from services.kernel.input_rules import (
    IdentifierShape,
    MapLimits,
    require_identifier,
    require_positive_amount,
    require_string_map,
)
from services.kernel.money import Money

# Keys and account ids: letters, digits and . _ : - only, safe in URLs, logs and SQS attributes.
ID_SHAPE = IdentifierShape(re.compile(r"^[A-Za-z0-9._:\-]+$"), "letters, digits and . _ : -")
KEY_LIMIT = 255
# A transfer type code of the ledger's schema (the ledger owns the rule; ingest checks its shape only).
TRANSFER_TYPE_SHAPE = IdentifierShape(
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"), "letters, digits and _ . - (not first)"
)
TRANSFER_TYPE_LIMIT = 64
ACCOUNT_ID_LIMIT = 128
METADATA_LIMITS = MapLimits(entries=32, key_length=64, value_length=512)


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
    code: str = ""


@dataclass(frozen=True)
class TransferSubmission:
    """A validated submission."""

    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: Money
    metadata: dict[str, str]
    # The ledger schema's transfer type it names ('' for none); the ledger enforces it.
    code: str = ""

    def fingerprint(self) -> str:
        """Identifies the request's content: same key + same fingerprint is a replay. A request that
        names no transfer type fingerprints as it did before types existed."""
        canonical = json.dumps(
            {
                "source": self.source_account_id,
                "destination": self.destination_account_id,
                "amount": self.amount.minor_units,
                "currency": self.amount.currency,
                "metadata": self.metadata,
                **({"code": self.code} if self.code else {}),
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


def validate_idempotency_key(key: str) -> str:
    """Raises InvalidSubmission unless `key` is 1-255 characters of letters, digits and . _ : -"""
    return require_identifier(
        key, "idempotencyKey", shape=ID_SHAPE, code="INVALID_IDEMPOTENCY_KEY", limit=KEY_LIMIT, error=InvalidSubmission
    )


def validate_account_id(value: str, field: str) -> str:
    """Raises InvalidSubmission unless `value` is 1-128 characters of letters, digits and . _ : -"""
    return require_identifier(
        value, field, shape=ID_SHAPE, code="INVALID_ACCOUNT_ID", limit=ACCOUNT_ID_LIMIT, error=InvalidSubmission
    )


def validate_submission(command: SubmitTransaction, *, default_currency: str) -> TransferSubmission:
    """Checks every rule; raises InvalidSubmission (a ValidationError) with a code and the field."""
    key = validate_idempotency_key(command.idempotency_key)
    if not command.has_transaction:
        raise InvalidSubmission("transaction is required", field="transaction", code="MISSING_FIELD")
    source = require_identifier(
        command.source_account_id,
        "transaction.source_account_id",
        shape=ID_SHAPE,
        code="INVALID_ACCOUNT_ID",
        limit=ACCOUNT_ID_LIMIT,
        error=InvalidSubmission,
    )
    destination = require_identifier(
        command.destination_account_id,
        "transaction.destination_account_id",
        shape=ID_SHAPE,
        code="INVALID_ACCOUNT_ID",
        limit=ACCOUNT_ID_LIMIT,
        error=InvalidSubmission,
    )
    if source == destination:
        raise InvalidSubmission(
            "transaction.destination_account_id must differ from source_account_id",
            field="transaction.destination_account_id",
            code="SAME_ACCOUNT",
        )
    currency = (command.currency or default_currency).strip().upper()
    amount = Money(
        require_positive_amount(
            command.amount,
            currency,
            "transaction.amount",
            currency_field="transaction.currency",
            error=InvalidSubmission,
        ),
        currency,
    )
    metadata = require_string_map(
        command.metadata, "transaction.metadata", limits=METADATA_LIMITS, error=InvalidSubmission
    )
    code = command.code
    if code:
        code = require_identifier(
            code,
            "transaction.code",
            shape=TRANSFER_TYPE_SHAPE,
            code="INVALID_TRANSFER_TYPE",
            limit=TRANSFER_TYPE_LIMIT,
            error=InvalidSubmission,
        )
    return TransferSubmission(key, source, destination, amount, metadata, code)


def message_group_for(account_id: str, groups: int) -> str:
    """The SQS message group of an account: stable, so one account's movements stay ordered."""
    return f"accounts-{zlib.crc32(account_id.encode()) % groups:04d}"


@dataclass(frozen=True)
class PendingRequest:
    """An accepted request still waiting for the ledger's outcome."""

    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: Money
    accepted_at: datetime
    redrive_count: int


@dataclass(frozen=True)
class StoredRequest:
    idempotency_key: str
    fingerprint: str
    message_id: str
    source_account_id: str
    destination_account_id: str
    amount: Money
    status: RequestStatus
    error_code: str | None
    error_message: str | None
    accepted_at: datetime
    expires_at: datetime
    completed_at: datetime | None
