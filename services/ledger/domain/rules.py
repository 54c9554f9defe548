"""The ledger's input rules: what its identifiers and metadata may look like, and its amounts.

Ids (accounts, transfers, holds — a transfer's id is the caller's idempotency key) are letters,
digits and . _ : - only, so they are safe in URLs, logs and SQS attributes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from services.kernel.errors import ValidationError
from services.kernel.input_rules import (
    IdentifierShape,
    MapLimits,
    require_identifier,
    require_positive_amount,
    require_string_map,
)
from services.kernel.money import INT64_MAX, MoneyError, exponent_of

if TYPE_CHECKING:  # the model checks its transfers with these rules; only the type is needed here
    from services.ledger.domain.model import TransferInstruction

ID_SHAPE = IdentifierShape(re.compile(r"^[A-Za-z0-9._:\-]+$"), "letters, digits and . _ : -")
ACCOUNT_ID_LIMIT = 128
TRANSFER_ID_LIMIT = 255
METADATA_LIMITS = MapLimits(entries=32, key_length=64, value_length=512)
REASON_LIMIT = 500
# A transfer type's code in the schema (services.ledger.domain.schema).
TRANSFER_TYPE_SHAPE = IdentifierShape(
    re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"), "letters, digits and _ . - (not first)"
)
TRANSFER_TYPE_LIMIT = 64


def account_id(value: str, field: str) -> str:
    """Raises ValidationError (MISSING_FIELD, INVALID_ACCOUNT_ID)."""
    return require_identifier(value, field, shape=ID_SHAPE, code="INVALID_ACCOUNT_ID", limit=ACCOUNT_ID_LIMIT)


def transfer_id(value: str, field: str) -> str:
    """Raises ValidationError (MISSING_FIELD, INVALID_IDEMPOTENCY_KEY)."""
    return require_identifier(value, field, shape=ID_SHAPE, code="INVALID_IDEMPOTENCY_KEY", limit=TRANSFER_ID_LIMIT)


def transfer_type(value: str, field: str = "code") -> str:
    """A transfer type code, or '' for none. Raises ValidationError (INVALID_TRANSFER_TYPE)."""
    if not value:
        return ""
    return require_identifier(
        value, field, shape=TRANSFER_TYPE_SHAPE, code="INVALID_TRANSFER_TYPE", limit=TRANSFER_TYPE_LIMIT
    )


def is_transfer_type(value: str) -> bool:
    return 0 < len(value) <= TRANSFER_TYPE_LIMIT and TRANSFER_TYPE_SHAPE.pattern.fullmatch(value) is not None


def is_transfer_id(value: str) -> bool:
    return 0 < len(value) <= TRANSFER_ID_LIMIT and ID_SHAPE.pattern.fullmatch(value) is not None


def is_account_id(value: str) -> bool:
    return 0 < len(value) <= ACCOUNT_ID_LIMIT and ID_SHAPE.pattern.fullmatch(value) is not None


def metadata(value: dict[str, str], field: str = "metadata") -> dict[str, str]:
    """Raises ValidationError (INVALID_METADATA)."""
    return require_string_map(value, field, limits=METADATA_LIMITS)


def currency(value: str, field: str = "currency") -> str:
    """An ISO 4217 code the ledger knows, upper-cased. Raises ValidationError (INVALID_CURRENCY, UNKNOWN_CURRENCY)."""
    code = value.strip().upper()
    try:
        exponent_of(code)
    except MoneyError as error:
        raise ValidationError(f"{field}: {error.message}", field=field, code=error.code) from None
    return code


def positive_amount(raw: object, currency_code: str, field: str = "amount") -> int:
    """Exact minor units > 0. Raises ValidationError (MISSING_FIELD, INVALID_AMOUNT, AMOUNT_PRECISION, ...)."""
    return require_positive_amount(raw, currency_code, field)


def reason(value: str) -> str:
    if len(value) > REASON_LIMIT:
        raise ValidationError(
            f"reason must be at most {REASON_LIMIT} characters", field="reason", code="INVALID_REASON"
        )
    return value


def instruction_problem(transfer: TransferInstruction) -> ValidationError | None:
    """The first input rule a transfer instruction breaks, or None. Applied to every transfer the
    ledger is asked to post, whoever sends it (the batch RPC, the queue, holds): the ledger trusts no
    caller's validation. Exact, not normalized: between services a currency is already an upper-case
    ISO 4217 code, so `usd` is refused like `ZZZ`.

    Codes: MISSING_FIELD, INVALID_IDEMPOTENCY_KEY (the transfer id), INVALID_ACCOUNT_ID,
    SAME_ACCOUNT, INVALID_CURRENCY, UNKNOWN_CURRENCY, INVALID_AMOUNT, AMOUNT_OUT_OF_RANGE,
    INVALID_METADATA, INVALID_TRANSFER_TYPE."""
    try:
        transfer_id(transfer.transfer_id, "transfer_id")
        account_id(transfer.debit_account_id, "debit_account_id")
        account_id(transfer.credit_account_id, "credit_account_id")
        if transfer.debit_account_id == transfer.credit_account_id:
            raise ValidationError(
                "credit_account_id must differ from debit_account_id", field="credit_account_id", code="SAME_ACCOUNT"
            )
        try:
            exponent_of(transfer.amount.currency)
        except MoneyError as error:
            raise ValidationError(f"currency: {error.message}", field="currency", code=error.code) from None
        if transfer.amount.minor_units <= 0:
            raise ValidationError("amount must be greater than zero", field="amount", code="INVALID_AMOUNT")
        if transfer.amount.minor_units > INT64_MAX:
            raise ValidationError("amount exceeds 64-bit minor units", field="amount", code="AMOUNT_OUT_OF_RANGE")
        if transfer.metadata:
            metadata(transfer.metadata)
        if transfer.code:
            transfer_type(transfer.code)
    except ValidationError as problem:
        return problem
    return None
