"""The shape every public identifier (account ids, idempotency keys, hold and transfer ids) shares:
letters, digits and . _ : - only, so ids are safe in URLs, logs and SQS attributes."""

from __future__ import annotations

import re

from services.kernel.errors import ValidationError

_SHAPE = re.compile(r"^[A-Za-z0-9._:\-]+$")


def require_identifier(value: str, field: str, *, code: str, limit: int,
                       error: type[ValidationError] = ValidationError) -> str:
    """`value` when it is 1-`limit` characters of the allowed set; else `error` (MISSING_FIELD when empty)."""
    if not value:
        raise error(f"{field} is required", field=field, code="MISSING_FIELD")
    if len(value) > limit or not _SHAPE.match(value):
        raise error(f"{field} must be 1-{limit} characters of letters, digits and . _ : -", field=field, code=code)
    return value
