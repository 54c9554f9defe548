"""Shapes of public input every context shares: identifiers (account ids, idempotency keys, hold and
transfer ids: letters, digits and . _ : - only, safe in URLs, logs and SQS attributes), metadata
maps (bounded, no control characters — PostgreSQL's jsonb refuses NUL) and positive amounts."""

from __future__ import annotations

import re

from services.kernel.errors import ValidationError
from services.kernel.money import MoneyError, minor_units_from_json

_SHAPE = re.compile(r"^[A-Za-z0-9._:\-]+$")


def require_identifier(
    value: str, field: str, *, code: str, limit: int, error: type[ValidationError] = ValidationError
) -> str:
    """`value` when it is 1-`limit` characters of the allowed set; else `error` (MISSING_FIELD when empty)."""
    if not value:
        raise error(f"{field} is required", field=field, code="MISSING_FIELD")
    if len(value) > limit or not _SHAPE.match(value):
        raise error(f"{field} must be 1-{limit} characters of letters, digits and . _ : -", field=field, code=code)
    return value


MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def require_metadata(
    metadata: dict[str, str], field: str, *, error: type[ValidationError] = ValidationError
) -> dict[str, str]:
    """`metadata` when it has at most 32 entries, keys of 1-64 and values of at most 512 characters,
    and no control characters; else `error` with code INVALID_METADATA."""
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise error(f"{field} has more than {MAX_METADATA_ENTRIES} entries", field=field, code="INVALID_METADATA")
    for name, value in metadata.items():
        if not 1 <= len(name) <= MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise error(
                f"{field} keys must be 1-{MAX_METADATA_KEY} characters and values at most {MAX_METADATA_VALUE}",
                field=field,
                code="INVALID_METADATA",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in name + value):
            raise error(f"{field} must not contain control characters", field=field, code="INVALID_METADATA")
    return dict(metadata)


_CURRENCY_CODES = frozenset({"UNKNOWN_CURRENCY", "INVALID_CURRENCY"})


def require_positive_amount(
    raw: object,
    currency: str,
    field: str,
    *,
    currency_field: str | None = None,
    error: type[ValidationError] = ValidationError,
) -> int:
    """`raw` (a JSON number or decimal string) in exact minor units of `currency`, greater than zero;
    else `error`: MISSING_FIELD, INVALID_AMOUNT, AMOUNT_PRECISION, AMOUNT_OUT_OF_RANGE, or a currency
    code named after `currency_field` (when given)."""
    if raw is None:
        raise error(f"{field} is required", field=field, code="MISSING_FIELD")
    try:
        minor = minor_units_from_json(raw, currency)
    except MoneyError as problem:
        name = currency_field if currency_field and problem.code in _CURRENCY_CODES else field
        raise error(f"{name}: {problem.message}", field=name, code=problem.code) from None
    if minor <= 0:
        raise error(f"{field} must be greater than zero", field=field, code="INVALID_AMOUNT")
    return minor
