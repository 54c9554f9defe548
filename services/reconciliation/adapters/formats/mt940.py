"""SWIFT MT940 customer statements → ParsedFile, read by the mt-940 library with its defects corrected.

mt-940 5.1.1 splits the tags and reads the :60:/:61:/:62: fields soundly; what it gets wrong is
corrected here, each with a test:
- `RC` (reversal of a credit) comes back positive: signs are taken from the raw mark instead
  (C and RD credit the account, D and RC debit it) and reversals are flagged.
- an impossible date (30 February) is silently moved to the month's last day: dates are checked
  from the raw text first, and the library's fix-up processor is switched off.
- a file that is not MT940 yields 0 transactions and no error: a file without a `:20:` statement
  is refused.
It keeps no line numbers either, so this module scans the tags itself to say where each statement
and entry starts, and to keep the raw `:86:` text the library rewrites when it is structured.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import mt940

from services.kernel.money import MoneyError, exponent_of, to_minor_units
from services.reconciliation.adapters.formats.decoding import decode_text, physical_lines
from services.reconciliation.domain.statements import (
    ParsedFile,
    RowError,
    Statement,
    StatementFileError,
    StatementFormat,
    StatementLine,
)

# The SWIFT envelope around the text block: `{1:…}{2:…}{3:{108:…}}{4:` before it, `-}` and `{5:…}` after.
_ENVELOPE_HEAD = re.compile(r"^(?:\{[1-3]:(?:[^{}]|\{[^{}]*\})*\})*\{4:")
_ENVELOPE_TAIL = re.compile(r"^(?:-\}|\{5:|-\s*$)")
_TAG = re.compile(r"^:(?P<number>\d{2}|NS)(?P<letter>[A-Z])?:")
# Tag numbers the library knows; any other `:nn:` at a line start is text of the previous tag, as
# the library treats it, so both sides count the same tags.
_KNOWN_NUMBERS = frozenset(str(key) for key in mt940.tags.TAG_BY_ID if isinstance(key, int)) | {"NS"}
_STATEMENT_LINE_DATES = re.compile(r"^(?P<value>\d{6})(?P<entry>\d{4})?")
_BALANCE = re.compile(r"^[CD](?P<date>\d{6})(?P<currency>[A-Z]{3})")

_CREDIT_MARKS = frozenset({"C", "RD"})  # RD: a debit reversed puts the money back
_DEBIT_MARKS = frozenset({"D", "RC"})  # RC: a credit reversed takes it away again
_NO_REFERENCE = "NONREF"

# The library logs every field it cannot match, whole, at ERROR: account numbers and payment details
# would land in our logs. The StatementFileError raised here already names the line.
logging.getLogger(mt940.__name__).setLevel(logging.CRITICAL)

_LIBRARY_OPTIONS = mt940.Options(
    case_insensitive_marks=True,
    unbounded_details=True,
    merge_keeps_values=True,
    applicant_iban=True,
    non_swift_free_text=True,
)


@dataclass
class _Tag:
    line: int
    number: str
    letter: str
    value: str


@dataclass
class _Block:
    """One statement: the tags from a `:20:` up to the next, and the source lines they span."""

    start: int
    end: int
    tags: list[_Tag] = field(default_factory=list)

    def first(self, number: str) -> _Tag | None:
        return next((t for t in self.tags if t.number == number), None)


@dataclass
class _EntryDates:
    value: date
    booking: date | None


def parse_mt940(content: bytes) -> ParsedFile:
    """Every statement of an MT940 file (one per `:20:`), or StatementFileError listing each problem."""
    lines = _without_envelope(physical_lines(decode_text(content)))
    blocks = _split_blocks(_scan_tags(lines), len(lines))
    if not blocks:
        raise StatementFileError([RowError(1, "not an MT940 file: no :20: statement reference found")])
    errors: list[RowError] = []
    statements: list[Statement] = []
    for block in blocks:
        statement = _read_statement(block, lines, errors)
        if statement is not None:
            statements.append(statement)
    if errors:
        raise StatementFileError(errors)
    return ParsedFile(format=StatementFormat.MT940, statements=tuple(statements))


def _without_envelope(lines: list[str]) -> list[str]:
    """The lines with the SWIFT envelope blanked out, so line numbers stay those of the file."""
    cleaned = []
    for raw in lines:
        text = raw.rstrip()
        head = _ENVELOPE_HEAD.match(text)
        if head:
            text = text[head.end() :]
        cleaned.append("" if _ENVELOPE_TAIL.match(text) else text)
    return cleaned


def _scan_tags(lines: list[str]) -> list[_Tag]:
    tags: list[_Tag] = []
    for number, text in enumerate(lines, start=1):
        match = _TAG.match(text)
        if match and match["number"] in _KNOWN_NUMBERS:
            tags.append(_Tag(number, match["number"], match["letter"] or "", text[match.end() :]))
        elif tags and text:
            tags[-1].value += "\n" + text
    return tags


def _split_blocks(tags: list[_Tag], line_count: int) -> list[_Block]:
    blocks: list[_Block] = []
    for tag in tags:
        if tag.number == "20":
            if blocks:
                blocks[-1].end = tag.line
            blocks.append(_Block(start=tag.line, end=line_count + 1))
        if blocks:
            blocks[-1].tags.append(tag)
    return blocks


def _read_statement(block: _Block, lines: list[str], errors: list[RowError]) -> Statement | None:
    """One statement, or None with its problems added to `errors`."""
    found = len(errors)
    account = block.first("25")
    if account is None or not account.value.strip():
        errors.append(RowError(block.start, "statement has no :25: account identification"))
    opening_tag = block.first("60")
    currency = _balance_currency(opening_tag, errors) if opening_tag else None
    if opening_tag is None:
        errors.append(RowError(block.start, "statement has no :60F:/:60M: opening balance, so no currency"))
    closing_tag = block.first("62")
    closing_currency = _balance_currency(closing_tag, errors) if closing_tag else None
    if closing_tag and currency and closing_currency and closing_currency != currency:
        errors.append(RowError(closing_tag.line, f"closing balance in {closing_currency}, opening in {currency}"))
    entry_tags = [tag for tag in block.tags if tag.number == "61"]
    entries = [(tag, dates) for tag in entry_tags if (dates := _entry_dates(tag, errors)) is not None]
    if len(errors) > found or account is None or currency is None:
        return None  # the library would stop at the first of these, or silently change a date

    transactions = mt940.models.Transactions(
        # Without the default pre-processor that moves 30 February to the 29th (dates are checked above).
        processors={"pre_statement": []},
        options=_LIBRARY_OPTIONS,
    )
    try:
        transactions.parse("\n".join(lines[block.start - 1 : block.end - 1]))
    except (RuntimeError, ValueError, InvalidOperation) as error:
        errors.append(_library_error(block, error))
        return None
    if len(transactions) != len(entries):
        errors.append(RowError(block.start, f"read {len(transactions)} of the {len(entries)} :61: entries"))
        return None

    data: dict[str, Any] = transactions.data
    opening = _balance(data, ("final_opening_balance", "intermediate_opening_balance", "opening_balance"))
    closing = _balance(data, ("final_closing_balance", "intermediate_closing_balance", "closing_balance"))
    statement_lines = []
    for (tag, dates), transaction in zip(entries, transactions, strict=True):
        line = _statement_line(tag, dates, transaction.data, currency, _details_after(block, tag), errors)
        if line is not None:
            statement_lines.append(line)
    try:
        opening_minor = to_minor_units(opening[0], currency) if opening else None
        closing_minor = to_minor_units(closing[0], currency) if closing else None
    except MoneyError as error:
        errors.append(RowError(block.start, f"balance: {error.message}"))
        return None
    if len(errors) > found:
        return None
    return Statement(
        account=account.value.strip(),
        currency=currency,
        lines=tuple(statement_lines),
        statement_id=str(data.get("transaction_reference") or "").strip() or None,
        opening_balance_minor=opening_minor,
        closing_balance_minor=closing_minor,
        opening_date=opening[1] if opening else None,
        closing_date=closing[1] if closing else None,
        line=block.start,
    )


def _balance_currency(tag: _Tag, errors: list[RowError]) -> str | None:
    label = f":{tag.number}{tag.letter}:"
    match = _BALANCE.match(tag.value.strip())
    if match is None:
        errors.append(RowError(tag.line, f"{label} is not a balance (C/D mark, YYMMDD date, currency, amount)"))
        return None
    if _yymmdd(match["date"]) is None:
        errors.append(RowError(tag.line, f"{label} date {match['date']} does not exist"))
        return None
    try:
        exponent_of(match["currency"])
    except MoneyError as error:
        errors.append(RowError(tag.line, f"{label} {error.message}"))
        return None
    return match["currency"]


def _entry_dates(tag: _Tag, errors: list[RowError]) -> _EntryDates | None:
    match = _STATEMENT_LINE_DATES.match(tag.value)
    if match is None:
        errors.append(RowError(tag.line, ":61: does not start with a YYMMDD value date"))
        return None
    value = _yymmdd(match["value"])
    if value is None:
        # The library would turn 30 February into 29 February without a word.
        errors.append(RowError(tag.line, f":61: value date {match['value']} does not exist"))
        return None
    booking = None
    if match["entry"]:
        booking = _entry_date_near(value, match["entry"])
        if booking is None:
            errors.append(RowError(tag.line, f":61: entry date {match['entry']} (MMDD) does not exist"))
            return None
    return _EntryDates(value=value, booking=booking)


def _yymmdd(text: str) -> date | None:
    try:
        return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:6]))
    except ValueError:
        return None


def _entry_date_near(value: date, mmdd: str) -> date | None:
    """The entry date carries no year: the one closest to the value date (31 Dec ↔ 2 Jan rolls over)."""
    candidates = []
    for year in (value.year - 1, value.year, value.year + 1):
        try:
            candidates.append(date(year, int(mmdd[:2]), int(mmdd[2:])))
        except ValueError:
            continue
    return min(candidates, key=lambda d: abs((d - value).days), default=None)


def _library_error(block: _Block, error: Exception) -> RowError:
    # The library raises RuntimeError(message, tag, value) for a field that does not match its pattern.
    value = error.args[2] if len(error.args) >= 3 and isinstance(error.args[2], str) else None
    tag = next((t for t in block.tags if value is not None and t.value.strip() == value.strip()), None)
    label = f":{tag.number}{tag.letter}: " if tag else ""
    reason = error.args[0] if error.args else error
    return RowError(tag.line if tag else block.start, f"{label}cannot be read as MT940 ({reason})")


def _balance(data: dict[str, Any], keys: tuple[str, ...]) -> tuple[Decimal, date | None] | None:
    balance = next((data[k] for k in keys if data.get(k) is not None), None)
    if balance is None or not isinstance(balance.amount, mt940.models.Amount):
        return None
    on = date(balance.date.year, balance.date.month, balance.date.day) if balance.date else None
    return balance.amount.amount, on


def _details_after(block: _Block, entry: _Tag) -> list[str]:
    """The `:86:` texts that follow one `:61:`, before the next entry or balance."""
    texts = []
    for tag in block.tags[block.tags.index(entry) + 1 :]:
        if tag.number != "86":
            break
        texts.append(tag.value)
    return texts


def _statement_line(
    tag: _Tag,
    dates: _EntryDates,
    data: dict[str, Any],
    currency: str,
    details: list[str],
    errors: list[RowError],
) -> StatementLine | None:
    mark = str(data.get("status") or "").upper()
    if mark not in _CREDIT_MARKS | _DEBIT_MARKS:
        errors.append(RowError(tag.line, f":61: debit/credit mark {mark!r} is not C, D, RC or RD"))
        return None
    try:
        # The library's own sign is wrong for RC; only the magnitude is taken from it.
        magnitude = to_minor_units(abs(data["amount"].amount), currency)
    except MoneyError as error:
        errors.append(RowError(tag.line, f":61: {error.message}"))
        return None
    customer_reference = str(data.get("customer_reference") or "").strip()
    bank_reference = str(data.get("bank_reference") or "").strip()
    supplementary = str(data.get("extra_details") or "").strip()
    description = " ".join(line.strip() for text in details for line in text.split("\n") if line.strip())
    if data.get("purpose"):
        # A structured :86: (?20…?29 subfields): the library's joined purpose reads better than raw codes.
        description = str(data["purpose"]).strip()
    return StatementLine(
        line=tag.line,
        amount_minor=magnitude if mark in _CREDIT_MARKS else -magnitude,
        currency=currency,
        booking_date=dates.booking,
        value_date=dates.value,
        reference=bank_reference or None,
        end_to_end_id=None if customer_reference.upper() in ("", _NO_REFERENCE) else customer_reference,
        description=" ".join(part for part in (description, supplementary) if part),
        counterparty=str(data.get("applicant_name") or "").strip() or None,
        reversal=mark.startswith("R"),
        bank_code=str(data.get("id") or "").strip() or None,
    )
