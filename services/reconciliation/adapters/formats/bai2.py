"""BAI2 cash-management balance reports → ParsedFile: one statement per 03 account record.

Records are tokenized here rather than by the `bai2` library (0.15.0), which cannot read real bank
files: it takes each physical line as one record, so it crashes on several `/`-separated records
on one line and misses a 16 record wrapped onto the next line; it glues an 88 continuation to the
last field of the record it continues (the specification's own example becomes type code
190500000); it raises on inconsistent trailer counts, which real bank files have; and it stops at
the first problem without a line number. Only its table of type codes is used, for the direction
of detail codes outside 100-699.

Format, as read here: records end with `/` or at the end of the line; `88` continues the previous
record (a 16's text continues with a space, other records with their next field); text is the last
field of a 16 and may hold commas. Amounts are integers in the currency's minor units; detail type
codes 100-399 credit the account, 400-699 debit it. The currency is the 03's, else the 02's, else
USD. Opening/closing balances are the 010/015 pair (ledger), else 040/045 (available).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

from bai2.constants import TypeCodes, TypeCodeTransaction  # type: ignore[import-untyped]

from services.kernel.money import MoneyError, exponent_of
from services.reconciliation.adapters.formats.decoding import decode_text, physical_lines
from services.reconciliation.domain.statements import (
    ParsedFile,
    RowError,
    Statement,
    StatementFileError,
    StatementFormat,
    StatementLine,
)

DEFAULT_CURRENCY = "USD"  # the specification's default when neither 02 nor 03 names one

_RECORD_CODES = frozenset({"01", "02", "03", "16", "49", "88", "98", "99"})
_RECORD_START = re.compile(r"\s*(?P<code>\d{2}),")
# A '/' ends a record only where a record could end: before the end of the line or before the next
# record's code. A '/' inside 16 text ("A/C 123", "1/2") stays text.
_RECORD_END = re.compile(r"/[ \t]*(?=$|(?:0[123]|16|49|88|98|99),)")
_SIGNED_INTEGER = re.compile(r"^[+-]?\d+$")
_UNSIGNED_INTEGER = re.compile(r"^\+?\d+$")

# Funds type → how many fields follow it before the references (D: a count, then that many pairs).
_FIXED_AVAILABILITY_FIELDS = {"": 0, "0": 0, "1": 0, "2": 0, "Z": 0, "V": 2, "S": 3}
_BALANCE_PAIRS = (("010", "015"), ("040", "045"))  # ledger, then available
_NON_MONETARY = "890"


@dataclass
class _Record:
    """One logical record: its own fields and those of the 88 records that continue it."""

    code: str
    line: int
    fields: list[str]
    physical_records: int = 1
    open_at_line_end: bool = False  # ended at a newline rather than '/', so a wrapped line may follow


@dataclass
class _Account:
    record: _Record
    account: str
    currency: str
    summaries: dict[str, int]
    control_total: int
    lines: list[StatementLine] = field(default_factory=list)
    records: int = 1


@dataclass
class _Group:
    record: _Record
    as_of: date | None
    currency: str | None
    control_total: int = 0
    accounts: int = 0
    records: int = 1


@dataclass
class _File:
    record: _Record
    control_total: int = 0
    groups: int = 0
    records: int = 1


@dataclass
class _Reader:
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    file: _File | None = None
    group: _Group | None = None
    account: _Account | None = None
    closed: bool = False


def parse_bai2(content: bytes) -> ParsedFile:
    """Every account of a BAI2 file, or StatementFileError listing each problem found.

    Inconsistent trailer counts and control totals are warnings: real bank files carry them.
    """
    reader = _Reader()
    records = _tokenize(physical_lines(decode_text(content)), reader.errors)
    if not records:
        raise StatementFileError([*reader.errors, RowError(1, "not a BAI2 file: no valid records")])
    if records[0].code != "01":
        reader.errors.append(
            RowError(records[0].line, f"a BAI2 file starts with an 01 header, not {records[0].code!r}")
        )
    for record in records:
        _read_record(reader, record)
    if not reader.errors:
        _check_closed(reader, records[-1])
    if reader.errors:
        raise StatementFileError(reader.errors)
    return ParsedFile(format=StatementFormat.BAI2, statements=tuple(reader.statements), warnings=tuple(reader.warnings))


def _tokenize(lines: list[str], errors: list[RowError]) -> list[_Record]:
    records: list[_Record] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        position = 0
        if _RECORD_START.match(text) is None:
            previous = records[-1] if records else None
            if previous is None or not previous.open_at_line_end or not _text_started(previous):
                errors.append(RowError(number, f"expected a record code such as '16,' at the start: {text[:20]!r}"))
                continue
            # A 16's text wrapped onto the next line without an 88: it is still that text.
            end = _RECORD_END.search(text)
            _continue_text(previous, text[: end.start() if end else len(text)])
            previous.open_at_line_end = end is None
            position = end.end() if end else len(text)
        while position < len(text):
            start = _RECORD_START.match(text, position)
            if start is None:
                if text[position:].strip():
                    errors.append(RowError(number, f"text after the end of a record: {text[position:][:20]!r}"))
                break
            end = _RECORD_END.search(text, start.end())
            body = text[start.end() : end.start() if end else len(text)]
            position = end.end() if end else len(text)
            if start["code"] not in _RECORD_CODES:
                errors.append(RowError(number, f"invalid record code {start['code']!r}"))
                continue
            if start["code"] == "88":
                _continue(records, body, number, errors)
            else:
                records.append(_Record(code=start["code"], line=number, fields=body.split(",")))
            if records:
                records[-1].open_at_line_end = end is None
    return records


def _text_started(record: _Record) -> bool:
    """Whether the record is a 16 that has reached its text, so whatever continues it is more text."""
    return record.code == "16" and len(record.fields) > _detail_text_index(record.fields)


def _continue(records: list[_Record], body: str, line: int, errors: list[RowError]) -> None:
    if not records:
        errors.append(RowError(line, "88 continuation record with nothing before it to continue"))
        return
    record = records[-1]
    record.physical_records += 1
    if _text_started(record):
        _continue_text(record, body)
    else:
        record.fields.extend(body.split(","))


def _continue_text(record: _Record, text: str) -> None:
    record.fields[-1] = f"{record.fields[-1].rstrip()} {text.strip()}".strip()


def _detail_text_index(fields: list[str]) -> int:
    """Where a 16 record's text starts: type, amount, funds type, availability, bank ref, customer ref."""
    funds_type = fields[2].strip().upper() if len(fields) > 2 else ""
    return 3 + (_availability_length(funds_type, fields[3:]) or 0) + 2


def _read_record(reader: _Reader, record: _Record) -> None:
    if reader.closed:
        reader.errors.append(RowError(record.line, f"{record.code} record after the 99 file trailer"))
        return
    match record.code:
        case "01":
            _read_file_header(reader, record)
        case "02":
            _read_group_header(reader, record)
        case "03":
            _read_account(reader, record)
        case "16":
            _read_detail(reader, record)
        case "49":
            _read_account_trailer(reader, record)
        case "98":
            _read_group_trailer(reader, record)
        case "99":
            _read_file_trailer(reader, record)


def _read_file_header(reader: _Reader, record: _Record) -> None:
    if reader.file is not None:
        reader.errors.append(RowError(record.line, "a second 01 file header"))
        return
    version = _field(record, 7)
    if version and version != "2":
        reader.errors.append(RowError(record.line, f"BAI version {version} is not supported, only version 2"))
    reader.file = _File(record=record, records=record.physical_records)


def _read_group_header(reader: _Reader, record: _Record) -> None:
    if reader.file is None or reader.group is not None:
        reader.errors.append(RowError(record.line, "02 group header outside a file, or before the last group's 98"))
        return
    as_of = _yymmdd(_field(record, 3))
    if as_of is None:
        reader.errors.append(RowError(record.line, f"02 as-of date {_field(record, 3)!r} is not a YYMMDD date"))
    code = _field(record, 5).upper()
    currency = _currency(code, record, reader.errors) if code else None
    reader.group = _Group(record=record, as_of=as_of, currency=currency, records=record.physical_records)


def _read_account(reader: _Reader, record: _Record) -> None:
    group = reader.group
    if group is None or reader.account is not None:
        reader.errors.append(RowError(record.line, "03 account record outside a group, or before the last 49"))
        return
    account = _field(record, 0)
    if not account:
        reader.errors.append(RowError(record.line, "03 record without an account number"))
    currency_text = _field(record, 1).upper()
    currency = _currency(currency_text, record, reader.errors) if currency_text else group.currency or DEFAULT_CURRENCY
    summaries, control_total = _summaries(record, reader.errors)
    reader.account = _Account(
        record=record,
        account=account,
        currency=currency or DEFAULT_CURRENCY,
        summaries=summaries,
        control_total=control_total,
        records=record.physical_records,
    )


def _summaries(record: _Record, errors: list[RowError]) -> tuple[dict[str, int], int]:
    """The 03's type code → amount items (status and summary), and the sum of their amounts."""
    summaries: dict[str, int] = {}
    total = 0
    rest = record.fields[2:]
    while rest and any(value.strip() for value in rest):
        type_code, amount, _count, funds_type = [*rest, "", "", "", ""][:4]
        rest = rest[4:]
        extra = _availability_length(funds_type.strip().upper(), rest)
        if extra is None:
            errors.append(RowError(record.line, f"03 funds type {funds_type!r} is not one of 0 1 2 Z V S D"))
            break
        rest = rest[extra:]
        if not type_code.strip():
            continue  # an empty item, as some banks pad the record with
        if amount.strip() and not _SIGNED_INTEGER.match(amount.strip()):
            errors.append(RowError(record.line, f"03 amount {amount!r} for type {type_code} is not an integer"))
            continue
        value = int(amount) if amount.strip() else 0
        summaries.setdefault(type_code.strip(), value)
        total += value
    return summaries, total


def _availability_length(funds_type: str, rest: list[str]) -> int | None:
    if funds_type == "D":
        count = rest[0].strip() if rest else ""
        return 1 + 2 * int(count) if count.isdigit() else None
    return _FIXED_AVAILABILITY_FIELDS.get(funds_type)


def _read_detail(reader: _Reader, record: _Record) -> None:
    account, group = reader.account, reader.group
    if account is None or group is None:
        reader.errors.append(RowError(record.line, "16 detail record outside an account (no 03 before it)"))
        return
    account.records += record.physical_records
    fields = record.fields
    type_code, amount_text = _field(record, 0), _field(record, 1)
    funds_type = _field(record, 2).upper()
    amount_ok = _UNSIGNED_INTEGER.match(amount_text) is not None
    account.control_total += int(amount_text) if amount_ok else 0
    direction = _direction(type_code)
    if direction == 0:
        reader.warnings.append(RowError(record.line, "16 record of type 890 (non-monetary information) not imported"))
        return
    if direction is None:
        reader.errors.append(RowError(record.line, f"16 type code {type_code!r} is neither a credit nor a debit"))
        return
    if not amount_ok:
        reader.errors.append(RowError(record.line, f"16 amount {amount_text!r} is not an unsigned integer"))
        return
    availability = _availability_length(funds_type, fields[3:])
    if availability is None:
        reader.errors.append(RowError(record.line, f"16 funds type {funds_type!r} is not one of 0 1 2 Z V S D"))
        return
    value_date = group.as_of
    if funds_type == "V":
        value_date = _yymmdd(_field(record, 3))
        if value_date is None:
            reader.errors.append(RowError(record.line, f"16 value date {_field(record, 3)!r} is not a YYMMDD date"))
            return
    references = 3 + availability
    bank_reference, customer_reference = _field(record, references), _field(record, references + 1)
    account.lines.append(
        StatementLine(
            line=record.line,
            amount_minor=direction * int(amount_text),
            currency=account.currency,
            booking_date=group.as_of,
            value_date=value_date,
            reference=bank_reference or None,
            end_to_end_id=customer_reference or None,
            description=",".join(fields[references + 2 :]).strip(),
            bank_code=type_code,
        )
    )


def _direction(type_code: str) -> int | None:
    """+1 credit, -1 debit, 0 non-monetary, None unknown. The specification's ranges, then the library's table."""
    if not type_code.isdigit() or len(type_code) != 3:
        return None
    if 100 <= int(type_code) <= 399:
        return 1
    if 400 <= int(type_code) <= 699:
        return -1
    if type_code == _NON_MONETARY:
        return 0
    known = TypeCodes.get(type_code)
    transaction = getattr(known, "transaction", None)
    if transaction is TypeCodeTransaction.credit:
        return 1
    if transaction is TypeCodeTransaction.debit:
        return -1
    return None


def _read_account_trailer(reader: _Reader, record: _Record) -> None:
    account, group = reader.account, reader.group
    if account is None or group is None:
        reader.errors.append(RowError(record.line, "49 account trailer without an open 03 account"))
        return
    account.records += record.physical_records
    total, count = _trailer_numbers(record, reader.errors, 2)
    if total is not None and total != account.control_total:
        reader.warnings.append(
            RowError(
                record.line, f"49 control total {total} differs from the account's amounts ({account.control_total})"
            )
        )
    if count is not None and count != account.records:
        reader.warnings.append(RowError(record.line, f"49 says {count} records, the account has {account.records}"))
    group.control_total += total if total is not None else account.control_total
    group.accounts += 1
    group.records += account.records
    reader.statements.append(_statement(account, group))
    reader.account = None


def _statement(account: _Account, group: _Group) -> Statement:
    opening = closing = None
    for opening_code, closing_code in _BALANCE_PAIRS:
        if opening_code in account.summaries and closing_code in account.summaries:
            opening, closing = account.summaries[opening_code], account.summaries[closing_code]
            break
    return Statement(
        account=account.account,
        currency=account.currency,
        lines=tuple(account.lines),
        opening_balance_minor=opening,
        closing_balance_minor=closing,
        opening_date=group.as_of if opening is not None else None,
        closing_date=group.as_of if closing is not None else None,
        line=account.record.line,
    )


def _read_group_trailer(reader: _Reader, record: _Record) -> None:
    group, file = reader.group, reader.file
    if group is None or file is None or reader.account is not None:
        reader.errors.append(RowError(record.line, "98 group trailer without an open 02 group, or before the last 49"))
        return
    group.records += record.physical_records
    total, accounts, count = _trailer_numbers(record, reader.errors, 3)
    if total is not None and total != group.control_total:
        reader.warnings.append(
            RowError(record.line, f"98 control total {total} differs from its accounts' totals ({group.control_total})")
        )
    if accounts is not None and accounts != group.accounts:
        reader.warnings.append(RowError(record.line, f"98 says {accounts} accounts, the group has {group.accounts}"))
    if count is not None and count != group.records:
        reader.warnings.append(RowError(record.line, f"98 says {count} records, the group has {group.records}"))
    file.control_total += total if total is not None else group.control_total
    file.groups += 1
    file.records += group.records
    reader.group = None


def _read_file_trailer(reader: _Reader, record: _Record) -> None:
    file = reader.file
    if file is None or reader.group is not None:
        reader.errors.append(RowError(record.line, "99 file trailer without an 01 header, or before the last 98"))
        return
    file.records += record.physical_records
    total, groups, count = _trailer_numbers(record, reader.errors, 3)
    if total is not None and total != file.control_total:
        reader.warnings.append(
            RowError(record.line, f"99 control total {total} differs from its groups' totals ({file.control_total})")
        )
    if groups is not None and groups != file.groups:
        reader.warnings.append(RowError(record.line, f"99 says {groups} groups, the file has {file.groups}"))
    if count is not None and count != file.records:
        reader.warnings.append(RowError(record.line, f"99 says {count} records, the file has {file.records}"))
    reader.closed = True


def _trailer_numbers(record: _Record, errors: list[RowError], count: int) -> list[int | None]:
    numbers: list[int | None] = []
    for index in range(count):
        text = _field(record, index)
        if text and not _SIGNED_INTEGER.match(text):
            errors.append(RowError(record.line, f"{record.code} trailer field {index + 1} {text!r} is not an integer"))
        numbers.append(int(text) if _SIGNED_INTEGER.match(text) else None)
    return numbers


def _check_closed(reader: _Reader, last: _Record) -> None:
    # A missing trailer means a cut-off file: importing part of it would look complete.
    if reader.account is not None:
        reader.errors.append(RowError(last.line, f"file ends inside account {reader.account.account} (no 49)"))
    if reader.group is not None:
        reader.errors.append(RowError(last.line, "file ends inside a group (no 98 trailer)"))
    if not reader.closed:
        reader.errors.append(RowError(last.line, "file ends without its 99 trailer"))


def _field(record: _Record, index: int) -> str:
    return record.fields[index].strip() if index < len(record.fields) else ""


def _yymmdd(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%y%m%d").date()
    except ValueError:
        return None


def _currency(code: str, record: _Record, errors: list[RowError]) -> str | None:
    try:
        exponent_of(code)
    except MoneyError as error:
        errors.append(RowError(record.line, f"{record.code} {error.message}"))
        return None
    return code
