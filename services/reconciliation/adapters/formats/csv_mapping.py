"""CSV bank exports → ParsedFile, read through a saved column mapping (every bank's CSV differs).

A `CsvMapping` says where the date, the amount (signed, or with a C/D column, or split into debit
and credit columns), the references and the account are, and how numbers and dates are written.
It is saved as JSON (`to_dict`/`from_dict`) so a bank's mapping is configured once. With a running
balance column, the opening and closing balances are derived and every step of the chain is
checked: a break means a missing or altered row, and the file is refused at that row.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from services.kernel.money import (
    MoneyError,
    decimal_from_text,
    exponent_of,
    format_minor,
    plain_decimal_to_minor_units,
    to_minor_units,
)
from services.reconciliation.adapters.formats.decoding import decode_text
from services.reconciliation.domain.statements import (
    ParsedFile,
    RowError,
    Statement,
    StatementFileError,
    StatementFormat,
    StatementLine,
)

Column = str | int  # a header name, or a 0-based index (the only way into a headerless file)

DEFAULT_ENCODINGS: tuple[str, ...] = ("utf-8", "cp1252")  # cp852/cp1257 cannot be told apart: name them
_SNIFFED_DELIMITERS = (",", ";", "\t", "|")
_SNIFF_ROWS = 20
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what decoding.physical_lines splits on
# Per-file caches of dates and repeated texts stop growing here: past it, texts are simply not shared.
_MOST_TEXTS_SHARED = 100_000
_DECIMAL_SEPARATORS = (".", ",")
_THOUSANDS_SEPARATORS = ("", ".", ",", " ", "'", "\u00a0")
_COLUMN_FIELDS = (
    "date",
    "value_date",
    "amount",
    "debit",
    "credit",
    "direction",
    "account_column",
    "currency_column",
    "reference",
    "end_to_end_id",
    "counterparty",
    "balance",
)


@dataclass(frozen=True)
class CsvMapping:
    """Where each statement field is in one bank's CSV export, and how it is written.

    Amounts come from exactly one of: `amount` (signed), `amount` + `direction` (a C/D column,
    compared case-insensitively with `credit_markers`/`debit_markers`), or `debit` + `credit`.
    `balance` is a running balance after each row, or before it with `balance_before_entry`;
    `newest_first` says the rows run backwards in time, which the balance chain needs to know.
    Raises ValueError when the mapping contradicts itself.
    """

    date: Column
    date_format: str = "%Y-%m-%d"
    value_date: Column | None = None
    value_date_format: str | None = None  # defaults to date_format
    amount: Column | None = None
    debit: Column | None = None
    credit: Column | None = None
    direction: Column | None = None
    credit_markers: tuple[str, ...] = ("C", "CR", "CREDIT")
    debit_markers: tuple[str, ...] = ("D", "DR", "DEBIT")
    decimal_separator: str = "."
    thousands_separator: str = ""
    delimiter: str | None = None  # None: sniffed from the first rows
    quotechar: str = '"'
    has_header: bool = True
    skip_rows: int = 0  # rows before the header (or the data), such as a bank's title line
    encoding: str | None = None  # None: UTF-8 (with or without BOM), else cp1252
    account: str | None = None
    account_column: Column | None = None
    currency: str | None = None
    currency_column: Column | None = None
    reference: Column | None = None
    end_to_end_id: Column | None = None
    description: tuple[Column, ...] = ()  # joined with spaces
    counterparty: Column | None = None
    balance: Column | None = None
    balance_before_entry: bool = False
    newest_first: bool = False

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError("invalid CSV mapping: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.amount is None and (self.debit is None or self.credit is None):
            problems.append("give an amount column, or both debit and credit columns")
        if self.amount is not None and (self.debit is not None or self.credit is not None):
            problems.append("give an amount column or debit/credit columns, not both")
        if self.direction is not None and self.amount is None:
            problems.append("a direction (C/D) column needs an amount column")
        if not self.credit_markers or not self.debit_markers:
            problems.append("credit and debit markers must not be empty")
        if {m.upper() for m in self.credit_markers} & {m.upper() for m in self.debit_markers}:
            problems.append("a marker cannot mean both credit and debit")
        if (self.account is None) == (self.account_column is None):
            problems.append("give exactly one of account and account_column")
        if (self.currency is None) == (self.currency_column is None):
            problems.append("give exactly one of currency and currency_column")
        if self.currency is not None:
            try:
                exponent_of(self.currency)
            except MoneyError as error:
                problems.append(error.message)
        if self.decimal_separator not in _DECIMAL_SEPARATORS:
            problems.append("decimal_separator must be '.' or ','")
        if self.thousands_separator not in _THOUSANDS_SEPARATORS or self.thousands_separator == self.decimal_separator:
            problems.append("thousands_separator must be empty, '.', ',', ' ' or \"'\" and differ from the decimal one")
        if self.delimiter is not None and len(self.delimiter) != 1:
            problems.append("delimiter must be one character")
        if len(self.quotechar) != 1:
            problems.append("quotechar must be one character")
        if self.skip_rows < 0:
            problems.append("skip_rows cannot be negative")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                problems.append(f"unknown encoding {self.encoding!r}")
        named = [name for name in self.referenced_columns() if isinstance(name, str)]
        if named and not self.has_header:
            problems.append(f"columns named {named} need a header row; use 0-based indexes")
        if any(isinstance(c, int) and (isinstance(c, bool) or c < 0) for c in self.referenced_columns()):
            problems.append("column indexes are 0-based and not negative")
        return problems

    def referenced_columns(self) -> list[Column]:
        """Every column the mapping reads, by name or index."""
        single = [getattr(self, name) for name in _COLUMN_FIELDS]
        return [c for c in single if c is not None] + list(self.description)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists) that `from_dict` reads back to an equal mapping."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CsvMapping:
        """A mapping saved by `to_dict`. Raises ValueError for unknown keys or wrong value types."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"invalid CSV mapping: unknown keys {unknown}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("description", "credit_markers", "debit_markers"):
                items = [value] if isinstance(value, str | int) else value
                if not isinstance(items, list | tuple):
                    raise ValueError(f"invalid CSV mapping: {key} must be a list")
                value = tuple(items)
            if (
                key in _COLUMN_FIELDS
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, str | int))
            ):
                raise ValueError(f"invalid CSV mapping: {key} must be a column name or index")
            values[key] = value
        return cls(**values)


@dataclass(frozen=True)
class _Row:
    line: int
    account: str
    currency: str
    amount_minor: int
    booking_date: date
    value_date: date | None
    reference: str | None
    end_to_end_id: str | None
    description: str
    counterparty: str | None
    balance_minor: int | None


class _Entry(NamedTuple):
    """A row read: its statement line, and what grouping and the balance chain need besides."""

    account: str
    balance_minor: int | None
    line: StatementLine


class _RowReader:
    """Reads the common row — every mapped cell present, plain figures, known dates and currency —
    with as little work per row as a million-row file needs; None for any other row, which
    `_read_row` then reads with every check and message. Both give the same line for a row they
    both read.

    Dates, currencies, accounts and counterparties repeat down a file: each is read once and the
    lines share one object.
    """

    def __init__(self, mapping: CsvMapping, indexes: dict[str, int]) -> None:
        def index(column: Column | None) -> int:
            """The 0-based position of a mapped column; -1 for one the mapping leaves out."""
            if column is None:
                return -1
            return indexes[column] if isinstance(column, str) else column

        self.mapping = mapping
        self.date = index(mapping.date)
        self.value_date = index(mapping.value_date)
        self.value_date_format = mapping.value_date_format or mapping.date_format
        self.amount = index(mapping.amount)
        self.debit = index(mapping.debit)
        self.credit = index(mapping.credit)
        self.direction = index(mapping.direction)
        self.account = index(mapping.account_column)
        self.currency = index(mapping.currency_column)
        self.reference = index(mapping.reference)
        self.end_to_end_id = index(mapping.end_to_end_id)
        self.counterparty = index(mapping.counterparty)
        self.balance = index(mapping.balance)
        self.description = tuple(index(column) for column in mapping.description)
        self.fields_needed = 1 + max(
            self.date,
            self.value_date,
            self.amount,
            self.debit,
            self.credit,
            self.direction,
            self.account,
            self.currency,
            self.reference,
            self.end_to_end_id,
            self.counterparty,
            self.balance,
            *self.description,
        )
        self.credit_markers = frozenset(marker.upper() for marker in mapping.credit_markers)
        self.debit_markers = frozenset(marker.upper() for marker in mapping.debit_markers)
        self.exponents: dict[str, int] = {}
        self.days: dict[tuple[str, str], date] = {}
        self.shared: dict[str, str] = {}

    def read(self, line: int, cells: list[str]) -> _Entry | None:
        if len(cells) < self.fields_needed:
            return None
        mapping = self.mapping
        currency = mapping.currency or cells[self.currency].strip().upper()
        exponent = self.exponents.get(currency)
        if exponent is None:
            try:
                exponent = exponent_of(currency)
            except MoneyError:
                return None
            currency = self._shared(currency)
            self.exponents[currency] = exponent
        account = mapping.account or self._shared(cells[self.account].strip())
        if not account:
            return None
        booking_date = self._day(cells[self.date].strip(), mapping.date_format)
        if booking_date is None:
            return None
        value_date = None
        if self.value_date >= 0:
            value_date = self._day(cells[self.value_date].strip(), self.value_date_format)
            if value_date is None:
                return None
        amount = self._signed_amount(cells, exponent)
        if amount is None:
            return None
        balance = None
        if self.balance >= 0 and cells[self.balance].strip():
            balance = self._minor(cells[self.balance].strip(), exponent)
            if balance is None:
                return None
        if len(self.description) == 1:
            description = cells[self.description[0]].strip()
        else:
            description = " ".join([part for part in [cells[i].strip() for i in self.description] if part])
        reference = cells[self.reference].strip() or None if self.reference >= 0 else None
        end_to_end_id = cells[self.end_to_end_id].strip() or None if self.end_to_end_id >= 0 else None
        counterparty = None
        if self.counterparty >= 0:
            counterparty = self._shared(cells[self.counterparty].strip()) or None
        return _Entry(
            account,
            balance,
            StatementLine(
                line=line,
                amount_minor=amount,
                currency=currency,
                booking_date=booking_date,
                value_date=value_date or booking_date,
                reference=reference,
                end_to_end_id=end_to_end_id,
                description=description,
                counterparty=counterparty,
            ),
        )

    def _signed_amount(self, cells: list[str], exponent: int) -> int | None:
        """`_signed_amount` in minor units, for rows it can read without a word to say."""
        if self.amount >= 0:
            amount = self._minor(cells[self.amount].strip(), exponent)
            if amount is None or self.direction < 0:
                return amount
            marker = cells[self.direction].strip().upper()
            if marker in self.credit_markers:
                return None if amount < 0 else amount
            if marker in self.debit_markers:
                return -abs(amount)
            return None
        debit_text = cells[self.debit].strip()
        credit_text = cells[self.credit].strip()
        debit = self._minor(debit_text, exponent) if debit_text else None
        credit = self._minor(credit_text, exponent) if credit_text else None
        if (debit_text and debit is None) or (credit_text and credit is None):
            return None
        if (debit and credit) or (debit is None and credit is None):
            return None
        # A debit column holds the amount taken, whether the bank writes it as 12.00 or -12.00.
        return abs(credit) if credit else -abs(debit or 0)

    def _minor(self, text: str, exponent: int) -> int | None:
        """`_number` + `to_minor_units` for a plain figure (`-1.234,50` as the mapping writes numbers)."""
        mapping = self.mapping
        plain = text.replace("\u00a0", "").strip()
        if mapping.thousands_separator:
            plain = plain.replace(mapping.thousands_separator, "")
        if mapping.decimal_separator == ",":
            plain = plain.replace(",", ".")
        if plain[:1] == "-":
            minor = plain_decimal_to_minor_units(plain[1:], exponent)
            return None if minor is None else -minor
        return plain_decimal_to_minor_units(plain, exponent)

    def _day(self, text: str, date_format: str) -> date | None:
        key = (text, date_format)
        day = self.days.get(key)
        if day is None:
            try:
                day = datetime.strptime(text, date_format).date()
            except ValueError:
                return None
            if len(self.days) < _MOST_TEXTS_SHARED:
                self.days[key] = day
        return day

    def _shared(self, text: str) -> str:
        kept = self.shared.get(text)
        if kept is None:
            if len(self.shared) >= _MOST_TEXTS_SHARED:
                return text
            kept = self.shared[text] = text
        return kept


def parse_csv(content: bytes, mapping: CsvMapping) -> ParsedFile:
    """One statement per account and currency in the file, or StatementFileError listing every bad row."""
    text = decode_text(content, (mapping.encoding,) if mapping.encoding else DEFAULT_ENCODINGS)
    end = _end_of_last_line(text)  # trailing blank lines are no part of the file
    delimiter = mapping.delimiter or _sniff_delimiter(_head_lines(text, end, mapping), mapping)
    rows, errors = _read_rows(_records(text, end, delimiter, mapping), mapping, text, end)
    statements = [] if errors else _statements(rows, mapping, errors)
    if errors:
        raise StatementFileError(errors)
    return ParsedFile(format=StatementFormat.CSV, statements=tuple(statements))


def _physical_lines(text: str, end: int) -> Iterator[str]:
    """The lines of text[:end] as an editor numbers them (CR, LF and CRLF end a line), each ending in
    LF as the csv module reads them; one at a time, so a large file is never copied whole."""
    if end == 0:
        return
    start = 0
    for line_break in _LINE_BREAK.finditer(text, 0, end):
        yield text[start : line_break.start()] + "\n"
        start = line_break.end()
    yield text[start:end] + "\n"


def _end_of_last_line(text: str) -> int:
    """Where the text ends once blank lines at its end are dropped."""
    end = len(text)
    while end > 0:
        start = max(text.rfind("\n", 0, end), text.rfind("\r", 0, end)) + 1
        if text[start:end].strip():
            break
        end = max(start - 1, 0)
    return end


def _head_lines(text: str, end: int, mapping: CsvMapping) -> list[str]:
    """The first lines the delimiter is sniffed from: up to _SNIFF_ROWS non-blank ones after skip_rows."""
    head: list[str] = []
    for number, line in enumerate(_physical_lines(text, end)):
        if number >= mapping.skip_rows and line.strip():
            head.append(line[:-1])
            if len(head) == _SNIFF_ROWS:
                break
    return head


def _records(text: str, end: int, delimiter: str, mapping: CsvMapping) -> Iterator[tuple[int, list[str]]]:
    """Each non-empty CSV record after the skipped rows, with the line it starts on.

    Raises StatementFileError for the first record the csv module cannot read: that is then the
    file's only error, whatever was found in the rows before it.
    """
    reader = csv.reader(_physical_lines(text, end), delimiter=delimiter, quotechar=mapping.quotechar, strict=True)
    consumed = 0
    index = -1
    skip_rows = mapping.skip_rows
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise StatementFileError([RowError(consumed + 1, f"unreadable CSV: {error}")]) from None
        index += 1
        start, consumed = consumed + 1, reader.line_num
        if index < skip_rows:
            continue
        for cell in cells:
            if cell and not cell.isspace():
                yield start, cells
                break


def _read_rows(
    records: Iterator[tuple[int, list[str]]], mapping: CsvMapping, text: str, end: int
) -> tuple[list[_Entry], list[RowError]]:
    """The rows of the file and the problems of each one that cannot be read, in file order.

    Raises StatementFileError for a file without a header (when one is expected) or whose header
    lacks a mapped column, and for a record the csv module cannot read, which takes precedence.
    """
    errors: list[RowError] = []
    rows: list[_Entry] = []
    if mapping.has_header:
        first = next(records, None)
        if first is None:
            raise StatementFileError([RowError(mapping.skip_rows + 1, "no header row")])
        header_line, header = first
        try:
            indexes = _resolve_columns(mapping, header, header_line)
        except StatementFileError:
            for _ in records:  # an unreadable record further down is reported instead
                pass
            raise
    else:
        indexes = {}
    reader = _RowReader(mapping, indexes)
    for line, cells in records:
        entry = reader.read(line, cells)
        if entry is None:  # the row needs a closer look: read it the thorough way, problems and all
            row = _read_row(mapping, indexes, line, cells, errors)
            if row is not None:
                entry = _Entry(row.account, row.balance_minor, _statement_line(row))
        if entry is not None:
            rows.append(entry)
    if not rows and not errors:
        errors.append(RowError(sum(1 for _ in _physical_lines(text, end)), "no transaction rows"))
    return rows, errors


def _sniff_delimiter(sample: list[str], mapping: CsvMapping) -> str:
    """The candidate that splits the first rows into the same number (>1) of fields most often."""
    best: tuple[int, int, str] | None = None
    for candidate in _SNIFFED_DELIMITERS:
        try:
            counts = [len(cells) for cells in csv.reader(sample, delimiter=candidate, quotechar=mapping.quotechar)]
        except csv.Error:
            continue
        if not counts:
            continue
        usual = max(set(counts), key=counts.count)
        score = (counts.count(usual), usual, candidate)
        if usual > 1 and (best is None or score[:2] > best[:2]):
            best = score
    if best is None:
        raise StatementFileError([RowError(mapping.skip_rows + 1, "cannot tell the delimiter; set it in the mapping")])
    return best[2]


def _resolve_columns(mapping: CsvMapping, header: list[str], line: int) -> dict[str, int]:
    names = [cell.strip().lstrip("\ufeff") for cell in header]
    folded = [name.casefold() for name in names]
    indexes: dict[str, int] = {}
    missing = []
    for column in mapping.referenced_columns():
        if isinstance(column, str):
            if column.strip() in names:
                indexes[column] = names.index(column.strip())
            elif column.strip().casefold() in folded:
                indexes[column] = folded.index(column.strip().casefold())
            else:
                missing.append(column)
    if missing:
        raise StatementFileError([RowError(line, f"columns {missing} are not in the header {names}")])
    return indexes


def _read_row(
    mapping: CsvMapping, indexes: dict[str, int], line: int, cells: list[str], errors: list[RowError]
) -> _Row | None:
    found = len(errors)

    def cell(column: Column | None) -> str:
        if column is None:
            return ""
        index = indexes[column] if isinstance(column, str) else column
        if index >= len(cells):
            errors.append(RowError(line, f"row has {len(cells)} fields, column {column!r} is missing"))
            return ""
        return cells[index].strip()

    currency = (mapping.currency or cell(mapping.currency_column)).upper()
    try:
        exponent_of(currency)
    except MoneyError as error:
        errors.append(RowError(line, error.message))
    account = mapping.account or cell(mapping.account_column)
    if not account:
        errors.append(RowError(line, "no account"))
    booking_date = _date(cell(mapping.date), mapping.date_format, "date", line, errors)
    value_date = None
    if mapping.value_date is not None:
        value_format = mapping.value_date_format or mapping.date_format
        value_date = _date(cell(mapping.value_date), value_format, "value date", line, errors)
    amount = _signed_amount(mapping, cell, line, errors)
    balance = None
    if mapping.balance is not None and cell(mapping.balance):
        balance = _number(cell(mapping.balance), mapping, "balance", line, errors)
    if len(errors) > found or booking_date is None or amount is None:
        return None
    try:
        amount_minor = to_minor_units(amount, currency)
        balance_minor = to_minor_units(balance, currency) if balance is not None else None
    except MoneyError as error:
        errors.append(RowError(line, error.message))
        return None
    description = " ".join(part for part in (cell(c) for c in mapping.description) if part)
    return _Row(
        line=line,
        account=account,
        currency=currency,
        amount_minor=amount_minor,
        booking_date=booking_date,
        value_date=value_date or booking_date,
        reference=cell(mapping.reference) or None,
        end_to_end_id=cell(mapping.end_to_end_id) or None,
        description=description,
        counterparty=cell(mapping.counterparty) or None,
        balance_minor=balance_minor,
    )


def _signed_amount(
    mapping: CsvMapping, cell: Callable[[Column | None], str], line: int, errors: list[RowError]
) -> Decimal | None:
    if mapping.amount is not None:
        amount = _number(cell(mapping.amount), mapping, "amount", line, errors)
        if amount is None or mapping.direction is None:
            return amount
        marker = cell(mapping.direction).upper()
        if marker in (m.upper() for m in mapping.credit_markers):
            if amount < 0:
                errors.append(RowError(line, f"amount {amount} is negative but marked as a credit ({marker})"))
                return None
            return amount
        if marker in (m.upper() for m in mapping.debit_markers):
            return -abs(amount)
        errors.append(
            RowError(
                line, f"credit/debit marker {marker!r} is none of {mapping.credit_markers + mapping.debit_markers}"
            )
        )
        return None
    debit_text, credit_text = cell(mapping.debit), cell(mapping.credit)
    debit = _number(debit_text, mapping, "debit", line, errors) if debit_text else None
    credit = _number(credit_text, mapping, "credit", line, errors) if credit_text else None
    if (debit_text and debit is None) or (credit_text and credit is None):
        return None
    if debit and credit:
        errors.append(RowError(line, "both a debit and a credit amount"))
        return None
    if debit is None and credit is None:
        errors.append(RowError(line, "neither a debit nor a credit amount"))
        return None
    # A debit column holds the amount taken, whether the bank writes it as 12.00 or -12.00.
    return abs(credit) if credit else -abs(debit or Decimal(0))


def _number(text: str, mapping: CsvMapping, label: str, line: int, errors: list[RowError]) -> Decimal | None:
    plain = text.replace("\u00a0", "").strip()
    if mapping.thousands_separator:
        plain = plain.replace(mapping.thousands_separator, "")
    if mapping.decimal_separator == ",":
        plain = plain.replace(",", ".")
    try:
        return decimal_from_text(plain)
    except MoneyError:
        errors.append(
            RowError(line, f"{label} {text!r} is not a number written with {mapping.decimal_separator!r} decimals")
        )
        return None


def _date(text: str, date_format: str, label: str, line: int, errors: list[RowError]) -> date | None:
    try:
        return datetime.strptime(text, date_format).date()
    except ValueError:
        errors.append(RowError(line, f"{label} {text!r} does not match the format {date_format!r}"))
        return None


def _statements(rows: list[_Entry], mapping: CsvMapping, errors: list[RowError]) -> list[Statement]:
    groups: dict[tuple[str, str], list[_Entry]] = {}
    for row in rows:
        groups.setdefault((row.account, row.line.currency), []).append(row)
    statements = []
    for (account, currency), group in groups.items():
        chronological = group[::-1] if mapping.newest_first else group
        opening, closing = _balance_chain(chronological, mapping.balance_before_entry, errors)
        statements.append(
            Statement(
                account=account,
                currency=currency,
                lines=tuple(row.line for row in group),
                opening_balance_minor=opening,
                closing_balance_minor=closing,
                opening_date=chronological[0].line.booking_date if opening is not None else None,
                closing_date=chronological[-1].line.booking_date if closing is not None else None,
                line=group[0].line.line,
            )
        )
    return statements


def _balance_chain(rows: list[_Entry], before_entry: bool, errors: list[RowError]) -> tuple[int | None, int | None]:
    """Opening and closing balances from a running-balance column, with each step checked."""
    if all(row.balance_minor is None for row in rows):
        return None, None
    first = rows[0]
    opening = None
    if first.balance_minor is not None:
        opening = first.balance_minor if before_entry else first.balance_minor - first.line.amount_minor
    running = opening
    for row in rows:
        amount = row.line.amount_minor
        if row.balance_minor is not None:
            stated = row.balance_minor if before_entry else row.balance_minor - amount
            if running is not None and stated != running:
                shown = running if before_entry else running + amount
                currency = row.line.currency
                errors.append(
                    RowError(
                        row.line.line,
                        f"balance {format_minor(row.balance_minor, currency)} breaks the chain: "
                        f"{format_minor(shown, currency)} follows from the rows before",
                    )
                )
            running = stated
        running = running + amount if running is not None else None
    return opening, running


def _statement_line(row: _Row) -> StatementLine:
    return StatementLine(
        line=row.line,
        amount_minor=row.amount_minor,
        currency=row.currency,
        booking_date=row.booking_date,
        value_date=row.value_date,
        reference=row.reference,
        end_to_end_id=row.end_to_end_id,
        description=row.description,
        counterparty=row.counterparty,
    )
