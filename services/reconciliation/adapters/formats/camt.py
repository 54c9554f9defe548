"""ISO 20022 bank-to-customer messages — camt.053 statements, camt.052 reports, camt.054 notifications —
read into the statement domain model.

Elements are matched by local name, so every version from .001.02 on and any namespace prefix
read the same; the XML parser loads no DTD, resolves no entity and never touches the network.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache

from lxml import etree

from services.kernel.money import MoneyError, decimal_from_text, exponent_of, to_minor_units
from services.reconciliation.domain.statements import (
    EntryDetail,
    EntryStatus,
    ParsedFile,
    RowError,
    Statement,
    StatementFileError,
    StatementFormat,
    StatementLine,
)

# message element → (format, the element holding one account's entries)
_MESSAGES: dict[str, tuple[StatementFormat, str]] = {
    "BkToCstmrStmt": (StatementFormat.CAMT053, "Stmt"),
    "BkToCstmrAcctRpt": (StatementFormat.CAMT052, "Rpt"),
    "BkToCstmrDbtCdtNtfctn": (StatementFormat.CAMT054, "Ntfctn"),
}
_MESSAGE_OF_STATEMENT = {statement: message for message, (_, statement) in _MESSAGES.items()}
_WATCHED_TAGS = tuple(f"{{*}}{name}" for name in ("Ntry", *_MESSAGE_OF_STATEMENT))

_OPENING_BALANCE_CODES = ("OPBD", "PRCD")  # PRCD (previously closed booked) stands in when OPBD is absent
_CLOSING_BALANCE_CODES = ("CLBD",)  # CLAV is the available balance, not the booked one
_SIGN_OF_INDICATOR = {"CRDT": 1, "DBIT": -1}
_STATUS_OF_CODE = {
    "BOOK": EntryStatus.BOOKED,
    "PDNG": EntryStatus.PENDING,
    "INFO": EntryStatus.PENDING,  # information only: shown, never part of the balance
    "FUTR": EntryStatus.PENDING,
}
_NO_REFERENCE = "NOTPROVIDED"  # what SEPA puts in mandatory reference fields the payer left empty
_TRUE_TEXTS = ("true", "1")  # xs:boolean

# Feeding the parser in slices lets each Ntry be dropped once read, so the tree never holds a whole
# large statement.
_FEED_BYTES = 1 << 20
_LINES_KEPT_EXACTLY = 65535  # libxml2 stores element lines below this as they are
_SNIFF_BYTES = 1 << 16

_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._:-]*)["']""")
_DAY_PREFIX = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T.*|Z|[+-]\d{2}:\d{2})?$")
_SNIFFED_MESSAGE = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?(BkToCstmrStmt|BkToCstmrAcctRpt|BkToCstmrDbtCdtNtfctn)[\s/>]")
_SNIFFED_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:camt\.05([234])\.")
_FORMAT_OF_MESSAGE_NUMBER = {
    "2": StatementFormat.CAMT052,
    "3": StatementFormat.CAMT053,
    "4": StatementFormat.CAMT054,
}


def looks_like_camt(content: bytes) -> StatementFormat | None:
    """The camt message kind the file's head names (message element, else namespace), without parsing."""
    head = _decoded_head(content[:_SNIFF_BYTES])
    if not head.lstrip().startswith("<"):
        return None
    message = _SNIFFED_MESSAGE.search(head)
    if message is not None:
        return _MESSAGES[message[1]][0]
    namespace = _SNIFFED_NAMESPACE.search(head)
    if namespace is not None:
        return _FORMAT_OF_MESSAGE_NUMBER[namespace[1]]
    return None


def parse_camt(content: bytes) -> ParsedFile:
    """Every Stmt / Rpt / Ntfctn of a camt.053, camt.052 or camt.054 file, one Statement each.

    Raises StatementFileError listing every problem found (line numbers from the XML source) when the
    file is not well-formed XML, declares a DTD, holds no statement, or has an entry or balance whose
    amount, currency, credit/debit indicator or date cannot be read; nothing is returned then.
    """
    reader = _MessageReader()
    reader.read(_as_utf8_when_declared_otherwise(content))
    return reader.parsed_file()


class _MessageReader:
    """Collects statements, errors and warnings while the XML streams past."""

    def __init__(self) -> None:
        self.format: StatementFormat | None = None
        self.statements: list[Statement] = []
        self.statement_elements_seen = 0
        self.lines_of_open_statement: list[StatementLine] = []
        self.errors: list[RowError] = []
        self.warnings: list[RowError] = []

    def read(self, content: bytes) -> None:
        parser = etree.XMLPullParser(
            events=("end",),
            tag=_WATCHED_TAGS,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,  # keeps libxml2's limits on depth and text size
            remove_comments=True,
            remove_pis=True,
        )
        try:
            for start in range(0, len(content), _FEED_BYTES):
                parser.feed(content[start : start + _FEED_BYTES])
                self._take(_ended_elements(parser))
            root = parser.close()
            self._take(_ended_elements(parser))
        except etree.XMLSyntaxError as error:
            self.errors.append(RowError(error.lineno or 0, f"not well-formed XML: {error.msg}"))
            return
        if root.getroottree().docinfo.internalDTD is not None:
            # camt files never carry one; with entities left unresolved the rest would read wrong anyway
            self.errors = [RowError(1, "the file declares a DTD (<!DOCTYPE>), which camt files never carry")]
        elif self.statement_elements_seen == 0:
            self.errors.append(_nothing_to_import(root))

    def parsed_file(self) -> ParsedFile:
        if self.errors or self.format is None:
            raise StatementFileError(sorted(self.errors, key=lambda error: error.line))
        return ParsedFile(
            format=self.format,
            statements=tuple(self.statements),
            warnings=tuple(sorted(self.warnings, key=lambda warning: warning.line)),
        )

    def _take(self, elements: Iterator[etree._Element]) -> None:
        for element in elements:
            parent = element.getparent()
            if parent is None:
                continue
            if _local_name(element) == "Ntry":
                if _is_statement(parent):
                    self._take_entry(element)
                    # read: free it (emptied first, or lxml moves the whole subtree to a new document)
                    element.clear()
                    parent.remove(element)
            elif _is_statement(element):
                self._take_statement(element, _MESSAGES[_local_name(parent)][0])
                element.clear()
                parent.remove(element)

    def _take_entry(self, entry: etree._Element) -> None:
        line = _line_of(entry)
        problems: list[str] = []
        read = _read_entry(entry, problems)
        self.errors.extend(RowError(line, problem) for problem in problems)
        if read is None:
            return
        statement_line, notes = read
        self.warnings.extend(RowError(line, note) for note in notes)
        self.lines_of_open_statement.append(statement_line)

    def _take_statement(self, statement: etree._Element, message_format: StatementFormat) -> None:
        self.statement_elements_seen += 1
        lines, self.lines_of_open_statement = self.lines_of_open_statement, []
        if self.format is None:
            self.format = message_format
        line = _line_of(statement)
        problems: list[str] = []
        notes: list[str] = []
        read = _read_statement(statement, tuple(lines), problems, notes)
        self.errors.extend(RowError(line, problem) for problem in problems)
        self.warnings.extend(RowError(line, note) for note in notes)
        if read is not None:
            self.statements.append(read)


@dataclass(frozen=True)
class _Balance:
    amount_minor: int
    currency: str
    day: date | None


def _read_statement(
    statement: etree._Element, lines: tuple[StatementLine, ...], problems: list[str], notes: list[str]
) -> Statement | None:
    kind = _local_name(statement)
    account = _text(statement, "Acct/Id/IBAN") or _text(statement, "Acct/Id/Othr/Id")
    if account is None:
        problems.append(f"{kind} has no account id (Acct/Id/IBAN or Acct/Id/Othr/Id)")
    balances = _read_balances(statement, problems)
    currency = _text(statement, "Acct/Ccy") or _first_balance_currency(statement)
    if currency is None and lines:
        currency = lines[0].currency
    if currency is None:
        problems.append(f"{kind} names no currency: no Acct/Ccy, balance or entry")
    elif not _is_known_currency(currency):
        problems.append(f"{kind} currency {currency!r} is not an ISO 4217 code")
    if problems or account is None or currency is None:
        return None
    opening = _balance_in(balances, _OPENING_BALANCE_CODES, currency, notes)
    closing = _balance_in(balances, _CLOSING_BALANCE_CODES, currency, notes)
    return Statement(
        account=account,
        currency=currency,
        lines=lines,
        statement_id=_text(statement, "Id"),
        opening_balance_minor=opening.amount_minor if opening else None,
        closing_balance_minor=closing.amount_minor if closing else None,
        opening_date=opening.day if opening else None,
        closing_date=closing.day if closing else None,
        line=_line_of(statement),
    )


def _read_balances(statement: etree._Element, problems: list[str]) -> dict[str, _Balance]:
    """The first balance of each type the statement uses; the others (CLAV, ITBD, …) are not read."""
    wanted = (*_OPENING_BALANCE_CODES, *_CLOSING_BALANCE_CODES)
    balances: dict[str, _Balance] = {}
    for balance in _find_all(statement, "Bal"):
        code = _text(balance, "Tp/CdOrPrtry/Cd")
        if code not in wanted or code in balances:
            continue
        what = f"{code} balance (line {_line_of(balance)})"
        amount = _amount(_find(balance, "Amt"), what, problems)
        sign = _sign(balance, what, problems)
        day = _day(_find(balance, "Dt"), f"{what} date", problems)
        if amount is not None and sign is not None:
            balances[code] = _Balance(sign * amount[0], amount[1], day)
    return balances


def _balance_in(
    balances: dict[str, _Balance], codes: tuple[str, ...], currency: str, notes: list[str]
) -> _Balance | None:
    for code in codes:
        balance = balances.get(code)
        if balance is None:
            continue
        if balance.currency != currency:
            # a balance in another currency would make the balance check meaningless
            notes.append(f"{code} balance is in {balance.currency}, the account in {currency}: left out")
            return None
        return balance
    return None


def _first_balance_currency(statement: etree._Element) -> str | None:
    for amount in _find_all(statement, "Bal/Amt"):
        currency = (amount.get("Ccy") or "").strip()
        if currency:
            return currency
    return None


def _read_entry(entry: etree._Element, problems: list[str]) -> tuple[StatementLine, list[str]] | None:
    """One Ntry as a statement line plus warnings, or None with `problems` saying why not."""
    notes: list[str] = []
    amount = _amount(_find(entry, "Amt"), "entry amount (Amt)", problems)
    sign = _sign(entry, "entry", problems)
    # RvslInd only flags the entry: its CdtDbtInd already says which way the money moved
    reversal = (_text(entry, "RvslInd") or "").lower() in _TRUE_TEXTS
    status = _status(entry, notes)
    booking_date = _day(_find(entry, "BookgDt"), "booking date (BookgDt)", problems)
    value_date = _day(_find(entry, "ValDt"), "value date (ValDt)", problems)
    transactions = _find_all(entry, "NtryDtls/TxDtls")
    details = [
        _read_detail(transaction, index, sign or 1, reversal, problems)
        for index, transaction in enumerate(transactions, start=1)
    ]
    if amount is None or sign is None:
        return None
    amount_minor, currency = sign * amount[0], amount[1]
    original = _original_amount(entry, transactions, sign, (amount_minor, currency), problems)
    if problems:
        return None
    only = details[0] if len(details) == 1 else None
    only_transaction = transactions[0] if len(transactions) == 1 else None
    entry_reference = _reference(entry, "NtryRef")
    reference = _reference(entry, "AcctSvcrRef") or entry_reference
    if reference is None and only_transaction is not None:
        reference = _reference(only_transaction, "Refs/AcctSvcrRef")
    bank_code = _bank_code(entry)
    if bank_code is None and only_transaction is not None:
        bank_code = _bank_code(only_transaction)
    description = _prose(entry, "AddtlNtryInf") or " ".join(d.description for d in details if d.description)
    return (
        StatementLine(
            line=_line_of(entry),
            amount_minor=amount_minor,
            currency=currency,
            booking_date=booking_date,
            value_date=value_date,
            reference=reference,
            end_to_end_id=only.end_to_end_id if only else None,
            description=description,
            counterparty=only.counterparty if only else None,
            reversal=reversal,
            status=status,
            bank_code=bank_code,
            original_amount_minor=original[0] if original else None,
            original_currency=original[1] if original else None,
            details=tuple(details),
            entry_reference=entry_reference,
        ),
        notes,
    )


def _read_detail(
    transaction: etree._Element, index: int, entry_sign: int, reversal: bool, problems: list[str]
) -> EntryDetail:
    """One TxDtls: its own references, counterparty, remittance text and, when given, amount."""
    where = f"TxDtls {index} (line {_line_of(transaction)})"
    detail_problems: list[str] = []
    sign = entry_sign
    if _find(transaction, "CdtDbtInd") is not None:
        sign = _sign(transaction, where, detail_problems) or entry_sign
    amount_element = _find_first(transaction, "Amt", "AmtDtls/TxAmt/Amt")
    amount = None if amount_element is None else _amount(amount_element, f"{where} amount", detail_problems)
    problems.extend(detail_problems)
    # a reversal keeps the original parties: the payer of a reversed credit is still the Dbtr
    credits_account = (sign > 0) != reversal
    return EntryDetail(
        amount_minor=sign * amount[0] if amount else None,
        currency=amount[1] if amount else None,
        end_to_end_id=_reference(transaction, "Refs/EndToEndId"),
        reference=_first_reference(
            transaction, "Refs/AcctSvcrRef", "Refs/TxId", "Refs/InstrId", "Refs/Prtry/Ref", "Refs/PmtInfId"
        ),
        counterparty=_counterparty(transaction, credits_account),
        description=_remittance_text(transaction),
    )


def _original_amount(
    entry: etree._Element,
    transactions: list[etree._Element],
    sign: int,
    booked: tuple[int, str],
    problems: list[str],
) -> tuple[int, str] | None:
    """The instructed (else transaction) amount from AmtDtls, signed like the entry, when it says more
    than the entry amount itself: another currency or another figure."""
    holders = [entry, transactions[0]] if len(transactions) == 1 else [entry]
    for holder in holders:
        element = _find_first(holder, "AmtDtls/InstdAmt/Amt", "AmtDtls/TxAmt/Amt")
        if element is None:
            continue
        amount = _amount(element, f"instructed amount (line {_line_of(element)})", problems)
        if amount is None:
            return None
        original = (sign * amount[0], amount[1])
        return None if original == booked else original
    return None


def _status(entry: etree._Element, notes: list[str]) -> EntryStatus:
    # Sts is a bare code up to .001.06 and Sts/Cd (or Sts/Prtry) from .001.07 on
    code = _text(entry, "Sts/Cd") or _text(entry, "Sts/Prtry") or _text(entry, "Sts")
    if code is None:
        notes.append("entry has no status (Sts): read as booked")
        return EntryStatus.BOOKED
    status = _STATUS_OF_CODE.get(code.upper())
    if status is None:
        notes.append(f"entry status {code!r} is not BOOK, PDNG, INFO or FUTR: read as pending")
        return EntryStatus.PENDING
    return status


def _bank_code(holder: etree._Element) -> str | None:
    """BkTxCd as DOMAIN/FAMILY/SUBFAMILY (e.g. PMNT/RCDT/DMCT), else the proprietary code."""
    domain = _text(holder, "BkTxCd/Domn/Cd")
    if domain is not None:
        family = _text(holder, "BkTxCd/Domn/Fmly/Cd")
        sub_family = _text(holder, "BkTxCd/Domn/Fmly/SubFmlyCd")
        return "/".join(code for code in (domain, family, sub_family) if code)
    return _text(holder, "BkTxCd/Prtry/Cd")


def _counterparty(transaction: etree._Element, credits_account: bool) -> str | None:
    # names sit in Dbtr/Nm up to .001.07 and in Dbtr/Pty/Nm from .001.08 on
    debtor = _prose(transaction, "RltdPties/Dbtr/Nm") or _prose(transaction, "RltdPties/Dbtr/Pty/Nm")
    creditor = _prose(transaction, "RltdPties/Cdtr/Nm") or _prose(transaction, "RltdPties/Cdtr/Pty/Nm")
    return (debtor or creditor) if credits_account else (creditor or debtor)


def _remittance_text(transaction: etree._Element) -> str:
    """Unstructured remittance lines and structured creditor references (QRR, SCOR), else AddtlTxInf."""
    parts = [_collapse(element.text) for element in _find_all(transaction, "RmtInf/Ustrd")]
    parts += [_collapse(element.text) for element in _find_all(transaction, "RmtInf/Strd/CdtrRefInf/Ref")]
    text = " ".join(part for part in parts if part)
    return text or _prose(transaction, "AddtlTxInf") or ""


def _amount(element: etree._Element | None, what: str, problems: list[str]) -> tuple[int, str] | None:
    """An unsigned camt amount (the sign lives in CdtDbtInd) in exact minor units of its Ccy."""
    if element is None:
        problems.append(f"{what} is missing")
        return None
    text = (element.text or "").strip()
    currency = (element.get("Ccy") or "").strip()
    if not currency:
        problems.append(f"{what} {text!r} has no currency (Ccy)")
        return None
    try:
        value = decimal_from_text(text)
        if value < 0:
            problems.append(f"{what} {text!r} is negative; the sign belongs in CdtDbtInd")
            return None
        return to_minor_units(value, currency), currency
    except MoneyError as error:
        problems.append(f"{what}: {error.message}")
        return None


def _sign(holder: etree._Element, what: str, problems: list[str]) -> int | None:
    indicator = _text(holder, "CdtDbtInd")
    if indicator is None:
        problems.append(f"{what} has no credit/debit indicator (CdtDbtInd)")
        return None
    sign = _SIGN_OF_INDICATOR.get(indicator)
    if sign is None:
        problems.append(f"{what} CdtDbtInd {indicator!r} is neither CRDT nor DBIT")
    return sign


def _day(holder: etree._Element | None, what: str, problems: list[str]) -> date | None:
    """Dt or DtTm as the calendar day written, offset or time of day dropped (2017-04-03+02:00)."""
    if holder is None:
        return None
    text = _text(holder, "Dt") or _text(holder, "DtTm")
    if text is None:
        return None
    match = _DAY_PREFIX.match(text)
    try:
        if match is None:
            raise ValueError(text)
        return date.fromisoformat(match[1])
    except ValueError:
        problems.append(f"{what} {text!r} is not a valid date")
        return None


def _is_known_currency(currency: str) -> bool:
    try:
        exponent_of(currency)
    except MoneyError:
        return False
    return True


def _as_utf8_when_declared_otherwise(content: bytes) -> bytes:
    """Files in an 8-bit encoding, decoded by the encoding they declare and handed on as UTF-8.

    libxml2 as lxml ships it misses common names (`latin-1`, `CP852`) that Python's codecs know.
    The declaration is rewritten in place, so line numbers stay those of the original file.
    """
    declared = _DECLARED_ENCODING.match(content)
    if declared is None:
        return content
    try:
        codec = codecs.lookup(declared[1].decode("ascii"))
    except LookupError:
        return content  # libxml2 will name the unknown encoding in its error
    if codec.name.startswith(("utf-8", "utf-16", "utf-32")):
        return content
    try:
        text = content.decode(codec.name)
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        byte = content[error.start : error.start + 1].hex()
        raise StatementFileError(
            [RowError(line, f"byte 0x{byte} is not valid in the declared encoding {declared[1].decode()}")]
        ) from None
    start, end = declared.span(1)
    return (text[:start] + "UTF-8" + text[end:]).encode("utf-8")


def _decoded_head(head: bytes) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head.decode("utf-16", errors="ignore")
    # element names and namespaces are ASCII, which every 8-bit encoding and UTF-8 share
    return head.removeprefix(codecs.BOM_UTF8).decode("latin-1")


def _nothing_to_import(root: etree._Element) -> RowError:
    message = next(root.iter(*(f"{{*}}{name}" for name in _MESSAGES)), None)
    if message is None:
        return RowError(_line_of(root), f"not a camt.052/053/054 message: root element is {_local_name(root)}")
    statement = _MESSAGES[_local_name(message)][1]
    return RowError(_line_of(message), f"{_local_name(message)} holds no {statement}: nothing to import")


@cache
def _steps(path: str) -> tuple[str, ...]:
    """A path such as Acct/Id/IBAN as child tags in any namespace, or none."""
    return tuple(f"{{*}}{step}" for step in path.split("/"))


# Paths are walked child by child: lxml's iterchildren(tag) runs in C, while find()/findtext() go
# through ElementPath at several times the cost per call, which shows on statements of 10⁵ entries.
def _find(holder: etree._Element, path: str) -> etree._Element | None:
    found = holder
    for step in _steps(path):
        child = next(found.iterchildren(step), None)
        if child is None:
            return None
        found = child
    return found


def _find_all(holder: etree._Element, path: str) -> list[etree._Element]:
    found = [holder]
    for step in _steps(path):
        found = [child for parent in found for child in parent.iterchildren(step)]
    return found


def _find_first(holder: etree._Element, *paths: str) -> etree._Element | None:
    for path in paths:
        element = _find(holder, path)
        if element is not None:  # never `or`: an lxml element without children is falsy
            return element
    return None


def _text(holder: etree._Element, path: str) -> str | None:
    """The element's text, stripped; None when the element is absent or empty."""
    element = _find(holder, path)
    return None if element is None else (element.text or "").strip() or None


def _prose(holder: etree._Element, path: str) -> str | None:
    """Free text with its line breaks and runs of blanks folded into single spaces."""
    element = _find(holder, path)
    return None if element is None else _collapse(element.text) or None


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def _reference(holder: etree._Element, path: str) -> str | None:
    text = _text(holder, path)
    return None if text is None or text.upper() == _NO_REFERENCE else text


def _first_reference(holder: etree._Element, *paths: str) -> str | None:
    for path in paths:
        reference = _reference(holder, path)
        if reference is not None:
            return reference
    return None


def _ended_elements(parser: etree.XMLPullParser) -> Iterator[etree._Element]:
    for _, element in parser.read_events():
        if isinstance(element, etree._Element):
            yield element


def _is_statement(element: etree._Element) -> bool:
    """A Stmt, Rpt or Ntfctn right inside its own message element (not a same-named element elsewhere)."""
    parent = element.getparent()
    expected_parent = _MESSAGE_OF_STATEMENT.get(_local_name(element))
    return parent is not None and expected_parent is not None and _local_name(parent) == expected_parent


def _local_name(element: etree._Element) -> str:
    return str(element.tag).rpartition("}")[2]


def _line_of(element: etree._Element) -> int:
    line = element.sourceline
    if not isinstance(line, int):
        return 0
    if line < _LINES_KEPT_EXACTLY:
        return line
    # libxml2 keeps an element's line in 16 bits; past that, lxml reports the line where the element's
    # first text ends, so step back over that text's newlines (the indentation after the start tag)
    first_text_holder = element
    while first_text_holder.text is None and len(first_text_holder) > 0:
        first_text_holder = first_text_holder[0]
    return line - (first_text_holder.text or "").count("\n")
