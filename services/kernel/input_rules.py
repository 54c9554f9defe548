"""Mechanisms for checking public input: a bounded identifier of a given shape, a bounded string map
without control characters (PostgreSQL's jsonb refuses NUL), a positive exact amount. Policy-free:
each context's domain says which shapes and limits its identifiers and metadata have."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.kernel.errors import ValidationError
from services.kernel.money import MoneyError, minor_units_from_json


@dataclass(frozen=True)
class IdentifierShape:
    """Which characters an identifier may hold (`pattern`, described for people by `described`)."""

    pattern: re.Pattern[str]
    described: str


def require_identifier(
    value: str,
    field: str,
    *,
    shape: IdentifierShape,
    code: str,
    limit: int,
    error: type[ValidationError] = ValidationError,
) -> str:
    """`value` when it is 1-`limit` characters of `shape`; else `error` (MISSING_FIELD when empty)."""
    if not value:
        raise error(f"{field} is required", field=field, code="MISSING_FIELD")
    if len(value) > limit or not shape.pattern.fullmatch(value):  # not match: `$` lets a final \n through
        raise error(f"{field} must be 1-{limit} characters of {shape.described}", field=field, code=code)
    return value


@dataclass(frozen=True)
class MapLimits:
    entries: int
    key_length: int
    value_length: int


def require_string_map(
    metadata: dict[str, str], field: str, *, limits: MapLimits, error: type[ValidationError] = ValidationError
) -> dict[str, str]:
    """`metadata` when it is within `limits` and has no control characters; else `error` with code
    INVALID_METADATA."""
    if len(metadata) > limits.entries:
        raise error(f"{field} has more than {limits.entries} entries", field=field, code="INVALID_METADATA")
    for name, value in metadata.items():
        if not 1 <= len(name) <= limits.key_length or len(value) > limits.value_length:
            raise error(
                f"{field} keys must be 1-{limits.key_length} characters and values at most {limits.value_length}",
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
