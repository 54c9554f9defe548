"""Dates and instants in request fields, read the same way on every route (README: "Dates and windows").

A window is half-open, [start, end). A start is inclusive. An end given as an instant is exclusive.
An end given as a date is inclusive of that whole day, so its exclusive bound is the next day's
00:00 UTC. Dates are UTC days. An instant must carry an offset or Z: without one it is refused,
because guessing a time zone could move the window by hours. Pure value parsing, no policy.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from services.kernel.errors import ValidationError

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# RFC 3339 date-time; the offset is optional here only so that a missing one gets its own message.
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$")
_FRACTION = re.compile(r"\.(\d{1,9})")


def _invalid(field: str, value: str) -> ValidationError:
    return ValidationError(
        f"{field} must be a date (2026-01-31) or an RFC 3339 instant with an offset"
        f" (2026-01-31T12:00:00Z), got {value[:64]!r}",
        field=field,
        code="INVALID_DATE",
    )


def parse_bound(value: str, field: str, *, end: bool) -> datetime:
    """The window bound `value` names, in UTC: a start's first instant, or an end's exclusive bound.

    Raises ValidationError (INVALID_DATE) naming `field`."""
    text = value.strip()
    try:
        if _DATE.match(text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC) + (timedelta(days=1) if end else timedelta())
        shape = _INSTANT.match(text)
        if shape is None:
            raise _invalid(field, value)
        if shape.group("offset") is None:
            raise ValidationError(
                f"{field} must carry a time zone offset or Z (2026-01-31T12:00:00Z), got {value[:64]!r}",
                field=field,
                code="INVALID_DATE",
            )
        # datetime keeps microseconds: finer fractions are cut, never rounded up across a bound.
        normalized = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text)
        normalized = re.sub(r"[Zz]$", "+00:00", normalized)
        return datetime.fromisoformat(normalized).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(field, value) from None


def parse_window(start: str, end: str, *, start_field: str, end_field: str) -> tuple[datetime | None, datetime | None]:
    """[start, end) in UTC; an empty bound is open (None).

    Raises ValidationError: INVALID_DATE, INVALID_DATE_RANGE (end not after start)."""
    first = parse_bound(start, start_field, end=False) if start.strip() else None
    after = parse_bound(end, end_field, end=True) if end.strip() else None
    if first is not None and after is not None and after <= first:
        raise ValidationError(f"{end_field} must be after {start_field}", field=end_field, code="INVALID_DATE_RANGE")
    return first, after


def parse_closed_window(start: str, end: str, *, start_field: str, end_field: str) -> tuple[datetime, datetime]:
    """Like parse_window, with both bounds required. Raises ValidationError (also MISSING_FIELD)."""
    first, after = parse_window(start, end, start_field=start_field, end_field=end_field)
    if first is None:
        raise ValidationError(f"{start_field} is required", field=start_field, code="MISSING_FIELD")
    if after is None:
        raise ValidationError(f"{end_field} is required", field=end_field, code="MISSING_FIELD")
    return first, after
