"""ISO 20022 bank-to-customer messages — camt.053 statements, camt.052 reports, camt.054 notifications —
read into the statement domain model.

Elements are matched by local name, so every version from .001.02 on and any namespace prefix
read the same; the XML parser loads no DTD, resolves no entity and never touches the network.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache

from lxml import etree

from services.kernel.money import (
    CURRENCY_EXPONENTS,
    MoneyError,
    decimal_from_text,
    exponent_of,
    plain_decimal_to_minor_units,
    to_minor_units,
)
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
# the statement children _read_header reads; the schema puts them all before the entries
_HEADER_ELEMENTS = frozenset(("Id", "Acct", "Bal"))
_NO_REFERENCE = "NOTPROVIDED"  # what SEPA puts in mandatory reference fields the payer left empty
_TRUE_TEXTS = ("true", "1")  # xs:boolean

# Feeding the parser in slices lets each Ntry be dropped once read, so the tree never holds a whole
# large statement.
_FEED_BYTES = 1 << 20
_LINES_KEPT_EXACTLY = 65535  # libxml2 stores element lines below this as they are
_SNIFF_BYTES = 1 << 16
# From here a file is read in parts, one per core (camt_parallel); below it a second process costs
# more than it saves (it starts in about a second).
_PARALLEL_FROM_BYTES = 32 << 20
# Per-file caches of tag names and of repeated texts (dates, currencies, codes, names) stop growing
# here, so a hostile file cannot make them large; past it, texts are simply not shared.
_MOST_NAMES_KEPT = 10_000
_MOST_TEXTS_SHARED = 100_000

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
    content = _as_utf8_when_declared_otherwise(content)
    if len(content) >= _PARALLEL_FROM_BYTES:
        # imported here: camt_parallel builds on this module's reader
        from services.reconciliation.adapters.formats import camt_parallel

        parsed = camt_parallel.read_in_parts(content, camt_parallel.parts_for_this_machine())
        if parsed is not None:
            return parsed
    reader = _MessageReader()
    reader.read(content)
    return reader.parsed_file()


class _MessageReader:
    """Collects statements, errors and warnings while the XML streams past.

    `line_offset` is added to every line the parser reports: a part of a large file (see
    camt_parallel) is parsed on its own and counts its lines from 1. With `pieces` set, statements
    are not built: each statement element that ends is kept as a `StatementPiece` (its header, its
    lines and their warnings) for the parts to be joined, since a statement cut in two is read half
    in each part.
    """

    def __init__(self, line_offset: int = 0, pieces: list[StatementPiece] | None = None) -> None:
        self.line_offset = line_offset
        self.pieces = pieces
        # part mode: the first statement to end continues one opened in the part before; statements
        # that end while the parser is closed off (`closing_off`) go on in the part after
        self.continues_first = False
        self.closing_off = False
        self.format: StatementFormat | None = None
        self.statements: list[Statement] = []
        self.statement_elements_seen = 0
        self.lines_of_open_statement: list[StatementLine] = []
        self.errors: list[RowError] = []
        self.warnings: list[RowError] = []
        self.entries = _EntryReader()
        # the statement element the last entry sat in, once checked, and the last entry read (kept
        # in the tree, emptied, until the next one ends: see _take)
        self._statement: etree._Element | None = None
        self._last_entry: etree._Element | None = None
        self.header_after_the_cut = False
        # part mode: the elements (qualified name, namespaces in scope) the closing tags closed
        self.open_at_close: tuple[tuple[str, dict[str | None, str]], ...] | None = None

    def read(self, content: bytes) -> None:
        self.read_slices(content[start : start + _FEED_BYTES] for start in range(0, len(content), _FEED_BYTES))

    def read_slices(self, slices: Iterable[bytes], closers: bytes = b"") -> etree._Element | None:
        """Parses the document the slices make, then `closers` (end tags that close a part off);
        returns the root element, None when the XML is broken (an error says where)."""
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
            for piece in slices:
                parser.feed(piece)
                self._take(parser.read_events())
            if closers:
                self.closing_off = True
                parser.feed(closers)
            root = parser.close()
            self._take(parser.read_events())
        except etree.XMLSyntaxError as error:
            self.errors.append(RowError((error.lineno or 0) + self.line_offset, f"not well-formed XML: {error.msg}"))
            return None
        if self.pieces is not None:
            return root  # a part: the file as a whole is judged when the parts are joined
        if root.getroottree().docinfo.internalDTD is not None:
            # camt files never carry one; with entities left unresolved the rest would read wrong anyway
            self.errors = [RowError(1, "the file declares a DTD (<!DOCTYPE>), which camt files never carry")]
        elif self.statement_elements_seen == 0:
            self.errors.append(_nothing_to_import(root))
        return root

    def parsed_file(self) -> ParsedFile:
        if self.errors or self.format is None:
            raise StatementFileError(sorted(self.errors, key=lambda error: error.line))
        return ParsedFile(
            format=self.format,
            statements=tuple(self.statements),
            warnings=tuple(sorted(self.warnings, key=lambda warning: warning.line)),
        )

    def _take(self, events: Iterator[tuple[str, object]]) -> None:
        """Reads each entry and statement that ended, then lets it go.

        An element read is emptied at once, but taken out of the tree only once the next one has
        ended: the parser may still be adding to the text that follows the newest element, so that
        one stays where it is. The tree never holds more than one (empty) entry per statement.
        """
        local_name = self.entries.local_name
        for _, element in events:
            if not isinstance(element, etree._Element):
                continue
            parent = element.getparent()
            if parent is None:
                continue
            if local_name(element.tag) == "Ntry":
                if parent is self._statement or _is_statement(parent):
                    self._statement = parent
                    self._take_entry(element)
                    element.clear(keep_tail=True)  # type: ignore[call-arg]  # lxml-stubs lag: keep_tail is lxml 4.4+
                    last = self._last_entry
                    if last is not None and last.getparent() is parent:
                        parent.remove(last)
                    self._last_entry = element
            elif _is_statement(element):
                self._take_statement(element, _MESSAGES[_local_name(parent)][0])
                element.clear(keep_tail=True)  # type: ignore[call-arg]
                self._statement = self._last_entry = None

    def _take_entry(self, entry: etree._Element) -> None:
        line = _line_of(entry) + self.line_offset
        problems: list[str] = []
        read = self.entries.read(entry, line, problems)
        if problems:
            self.errors.extend(RowError(line, problem) for problem in problems)
        if read is None:
            return
        statement_line, notes = read
        if notes:
            self.warnings.extend(RowError(line, note) for note in notes)
        self.lines_of_open_statement.append(statement_line)

    def _take_statement(self, statement: etree._Element, message_format: StatementFormat) -> None:
        self.statement_elements_seen += 1
        lines, self.lines_of_open_statement = self.lines_of_open_statement, []
        if self.format is None:
            self.format = message_format
        if self.pieces is not None:
            self._take_piece(statement, message_format, lines)
            return
        line = _line_of(statement) + self.line_offset
        problems: list[str] = []
        notes: list[str] = []
        header = _read_header(statement, line, problems)
        read = _statement_of(header, tuple(lines), problems, notes)
        self.errors.extend(RowError(line, problem) for problem in problems)
        self.warnings.extend(RowError(line, note) for note in notes)
        if read is not None:
            self.statements.append(read)

    def _take_piece(
        self, statement: etree._Element, message_format: StatementFormat, lines: list[StatementLine]
    ) -> None:
        assert self.pieces is not None
        continues = self.continues_first and not self.pieces
        header = None
        if continues:
            # the header was read in the part before; one here (out of the schema's order) would be missed
            self.header_after_the_cut = self.header_after_the_cut or any(
                _local_name(child) in _HEADER_ELEMENTS for child in statement if isinstance(child.tag, str)
            )
        else:
            problems: list[str] = []
            header = _read_header(statement, _line_of(statement) + self.line_offset, problems)
            self.errors.extend(RowError(header.line, problem) for problem in problems)
        if self.closing_off:
            self.open_at_close = tuple(
                (_qualified_name(element), dict(element.nsmap))
                for element in reversed((statement, *statement.iterancestors()))
            )
        warnings, self.warnings = self.warnings, []
        self.pieces.append(
            StatementPiece(message_format, header, lines, warnings, continues=continues, goes_on=self.closing_off)
        )


@dataclass(frozen=True)
class _Balance:
    amount_minor: int
    currency: str
    day: date | None


@dataclass(frozen=True)
class StatementHeader:
    """What a statement element says besides its entries (read where the element is, joined to its
    lines later: for a large file, in another process)."""

    kind: str  # Stmt, Rpt or Ntfctn
    account: str | None
    balances: dict[str, _Balance]
    currency: str | None  # Acct/Ccy, else the first balance's; None when neither is given
    statement_id: str | None
    line: int


@dataclass
class StatementPiece:
    """A statement element as one part of a file saw it: whole, or cut where a part begins or ends."""

    message_format: StatementFormat
    header: StatementHeader | None  # None when the statement began in the part before
    lines: list[StatementLine]
    warnings: list[RowError]  # its entries'
    continues: bool = False  # began in the part before
    goes_on: bool = False  # ends in the part after


def _read_header(statement: etree._Element, line: int, problems: list[str]) -> StatementHeader:
    kind = _local_name(statement)
    account = _text(statement, "Acct/Id/IBAN") or _text(statement, "Acct/Id/Othr/Id")
    if account is None:
        problems.append(f"{kind} has no account id (Acct/Id/IBAN or Acct/Id/Othr/Id)")
    balances = _read_balances(statement, problems)
    currency = _text(statement, "Acct/Ccy") or _first_balance_currency(statement)
    return StatementHeader(kind, account, balances, currency, _text(statement, "Id"), line)


def _statement_of(
    header: StatementHeader, lines: tuple[StatementLine, ...], problems: list[str], notes: list[str]
) -> Statement | None:
    kind, account, currency = header.kind, header.account, header.currency
    if currency is None and lines:
        currency = lines[0].currency
    if currency is None:
        problems.append(f"{kind} names no currency: no Acct/Ccy, balance or entry")
    elif not _is_known_currency(currency):
        problems.append(f"{kind} currency {currency!r} is not an ISO 4217 code")
    if problems or account is None or currency is None:
        return None
    opening = _balance_in(header.balances, _OPENING_BALANCE_CODES, currency, notes)
    closing = _balance_in(header.balances, _CLOSING_BALANCE_CODES, currency, notes)
    return Statement(
        account=account,
        currency=currency,
        lines=lines,
        statement_id=header.statement_id,
        opening_balance_minor=opening.amount_minor if opening else None,
        closing_balance_minor=closing.amount_minor if closing else None,
        opening_date=opening.day if opening else None,
        closing_date=closing.day if closing else None,
        line=header.line,
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


class _EntryReader:
    """Reads Ntry elements into statement lines: the hot path of a large statement.

    Each element's children are indexed by local name in one pass, and only the elements a field
    needs are visited (a path walk per field costs a tag matcher per step, which dominated). Tag
    names, dates, currencies and codes that a file repeats are decoded once per file and shared by
    the lines that hold them. Every decision and message is the one the path-based reading of a
    statement (`_read_statement`, `_amount`, `_sign`, `_day`) would give.
    """

    def __init__(self) -> None:
        self._names: dict[object, str] = {}  # tag as lxml spells it ({namespace}Name) → Name
        self._days: dict[str, date] = {}
        self._shared: dict[str, str] = {}

    def local_name(self, tag: object) -> str:
        name = self._names.get(tag)
        if name is None:
            name = str(tag).rpartition("}")[2]
            if isinstance(tag, str) and len(self._names) < _MOST_NAMES_KEPT:
                self._names[tag] = name
        return name

    def children(self, element: etree._Element) -> dict[str, etree._Element]:
        """The first child element of each local name: what a one-step path finds."""
        found: dict[str, etree._Element] = {}
        names = self._names
        for child in element:
            tag = child.tag
            name = names.get(tag)
            if name is None:
                if not isinstance(tag, str):
                    continue  # an entity reference left unresolved: paths only ever match elements
                name = self.local_name(tag)
            if name not in found:
                found[name] = child
        return found

    def every(self, element: etree._Element, name: str) -> list[etree._Element]:
        """Every child element with this local name, in document order."""
        names = self._names
        return [child for child in element if (names.get(child.tag) or self.local_name(child.tag)) == name]

    def first_and_following(self, first: etree._Element, name: str) -> list[etree._Element]:
        """`first` (the first child of its name) and its later siblings of that name: every one of them,
        found without going over the siblings before it."""
        found = [first]
        names = self._names
        sibling = first.getnext()
        while sibling is not None:
            if (names.get(sibling.tag) or self.local_name(sibling.tag)) == name:
                found.append(sibling)
            sibling = sibling.getnext()
        return found

    def shared(self, text: str) -> str:
        """One string object for a text the file repeats (currencies, bank codes, names)."""
        kept = self._shared.get(text)
        if kept is None:
            if len(self._shared) >= _MOST_TEXTS_SHARED:
                return text
            kept = self._shared[text] = text
        return kept

    def read(self, entry: etree._Element, line: int, problems: list[str]) -> tuple[StatementLine, list[str]] | None:
        """One Ntry as a statement line plus warnings, or None with `problems` saying why not."""
        notes: list[str] = []
        fields = self.children(entry)
        amount_element = fields.get("Amt")
        amount = self.plain_amount(amount_element) or _amount(amount_element, "entry amount (Amt)", problems)
        indicator = fields.get("CdtDbtInd")
        sign = _SIGN_OF_INDICATOR.get(_text_of(indicator) or "") or _sign_of(indicator, "entry", problems)
        # RvslInd only flags the entry: its CdtDbtInd already says which way the money moved
        reversal = "RvslInd" in fields and (_text_of(fields["RvslInd"]) or "").lower() in _TRUE_TEXTS
        status = self.status(fields.get("Sts"), notes)
        booking_date = self.day(fields.get("BookgDt"), "booking date (BookgDt)", problems)
        value_date = self.day(fields.get("ValDt"), "value date (ValDt)", problems)
        transactions: list[etree._Element] = []
        if "NtryDtls" in fields:
            for entry_details in self.first_and_following(fields["NtryDtls"], "NtryDtls"):
                transactions += self.every(entry_details, "TxDtls")
        transaction_fields = [self.children(transaction) for transaction in transactions]
        details = [
            self.detail(transaction, detail_fields, index, sign or 1, reversal, problems)
            for index, (transaction, detail_fields) in enumerate(
                zip(transactions, transaction_fields, strict=True), start=1
            )
        ]
        if amount is None or sign is None:
            return None
        amount_minor, currency = sign * amount[0], amount[1]
        only_fields = transaction_fields[0] if len(transactions) == 1 else None
        original = None
        if "AmtDtls" in fields or (only_fields is not None and "AmtDtls" in only_fields):
            original = self.original_amount(fields, only_fields, sign, (amount_minor, currency), problems)
        if problems:
            return None
        only = details[0] if len(details) == 1 else None
        entry_reference = _reference_of(fields.get("NtryRef"))
        reference = _reference_of(fields.get("AcctSvcrRef")) or entry_reference
        if reference is None and only_fields is not None and "Refs" in only_fields:
            reference = _reference_of(self.children(only_fields["Refs"]).get("AcctSvcrRef"))
        bank_code = self.bank_code(fields)
        if bank_code is None and only_fields is not None:
            bank_code = self.bank_code(only_fields)
        description = _prose_of(fields.get("AddtlNtryInf")) or " ".join(d.description for d in details if d.description)
        return (
            StatementLine(
                line=line,
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

    def detail(
        self,
        transaction: etree._Element,
        fields: dict[str, etree._Element],
        index: int,
        entry_sign: int,
        reversal: bool,
        problems: list[str],
    ) -> EntryDetail:
        """One TxDtls: its own references, counterparty, remittance text and, when given, amount."""
        sign = entry_sign
        if "CdtDbtInd" in fields:
            indicator = fields["CdtDbtInd"]
            sign = (
                _SIGN_OF_INDICATOR.get(_text_of(indicator) or "")
                or _sign_of(indicator, _detail_label(transaction, index), problems)
                or entry_sign
            )
        amount_element = fields.get("Amt")
        if amount_element is None and "AmtDtls" in fields:
            amount_element = self.children(fields["AmtDtls"]).get("TxAmt")
            amount_element = None if amount_element is None else self.children(amount_element).get("Amt")
        amount = None
        if amount_element is not None:
            amount = self.plain_amount(amount_element) or _amount(
                amount_element, f"{_detail_label(transaction, index)} amount", problems
            )
        # a reversal keeps the original parties: the payer of a reversed credit is still the Dbtr
        credits_account = (sign > 0) != reversal
        end_to_end_id = reference = None
        if "Refs" in fields:
            references = self.children(fields["Refs"])
            end_to_end_id = _reference_of(references.get("EndToEndId"))
            for name in ("AcctSvcrRef", "TxId", "InstrId"):
                reference = _reference_of(references.get(name))
                if reference is not None:
                    break
            else:
                if "Prtry" in references:
                    reference = _reference_of(self.children(references["Prtry"]).get("Ref"))
                reference = reference or _reference_of(references.get("PmtInfId"))
        counterparty = None
        if "RltdPties" in fields:
            counterparty = self.counterparty(fields["RltdPties"], credits_account)
        return EntryDetail(
            amount_minor=sign * amount[0] if amount else None,
            currency=amount[1] if amount else None,
            end_to_end_id=end_to_end_id,
            reference=reference,
            counterparty=counterparty,
            description=self.remittance_text(fields),
        )

    def original_amount(
        self,
        fields: dict[str, etree._Element],
        only_transaction: dict[str, etree._Element] | None,
        sign: int,
        booked: tuple[int, str],
        problems: list[str],
    ) -> tuple[int, str] | None:
        """The instructed (else transaction) amount from AmtDtls, signed like the entry, when it says more
        than the entry amount itself: another currency or another figure."""
        for holder in (fields, only_transaction):
            if holder is None or "AmtDtls" not in holder:
                continue
            amounts = self.children(holder["AmtDtls"])
            element = None
            for kind in ("InstdAmt", "TxAmt"):
                if kind in amounts:
                    element = self.children(amounts[kind]).get("Amt")
                    if element is not None:
                        break
            if element is None:
                continue
            amount = self.plain_amount(element) or _amount(
                element, f"instructed amount (line {_line_of(element)})", problems
            )
            if amount is None:
                return None
            original = (sign * amount[0], amount[1])
            return None if original == booked else original
        return None

    def status(self, status: etree._Element | None, notes: list[str]) -> EntryStatus:
        # Sts is a bare code up to .001.06 and Sts/Cd (or Sts/Prtry) from .001.07 on
        code = None
        if status is not None:
            if len(status):
                codes = self.children(status)
                code = _text_of(codes.get("Cd")) or _text_of(codes.get("Prtry"))
            code = code or _text_of(status)
        if code is None:
            notes.append("entry has no status (Sts): read as booked")
            return EntryStatus.BOOKED
        known = _STATUS_OF_CODE.get(code.upper())
        if known is None:
            notes.append(f"entry status {code!r} is not BOOK, PDNG, INFO or FUTR: read as pending")
            return EntryStatus.PENDING
        return known

    def bank_code(self, fields: dict[str, etree._Element]) -> str | None:
        """BkTxCd as DOMAIN/FAMILY/SUBFAMILY (e.g. PMNT/RCDT/DMCT), else the proprietary code."""
        if "BkTxCd" not in fields:
            return None
        kinds = self.children(fields["BkTxCd"])
        domain_fields = self.children(kinds["Domn"]) if "Domn" in kinds else {}
        domain = _text_of(domain_fields.get("Cd"))
        if domain is not None:
            family_fields = self.children(domain_fields["Fmly"]) if "Fmly" in domain_fields else {}
            family = _text_of(family_fields.get("Cd"))
            sub_family = _text_of(family_fields.get("SubFmlyCd"))
            return self.shared("/".join(code for code in (domain, family, sub_family) if code))
        proprietary = _text_of(self.children(kinds["Prtry"]).get("Cd")) if "Prtry" in kinds else None
        return None if proprietary is None else self.shared(proprietary)

    def counterparty(self, parties: etree._Element, credits_account: bool) -> str | None:
        roles = self.children(parties)
        # names sit in Dbtr/Nm up to .001.07 and in Dbtr/Pty/Nm from .001.08 on
        first, second = ("Dbtr", "Cdtr") if credits_account else ("Cdtr", "Dbtr")
        name = None
        if first in roles:
            name = self.party_name(roles[first])
        if name is None and second in roles:
            name = self.party_name(roles[second])
        return None if name is None else self.shared(name)

    def party_name(self, party: etree._Element) -> str | None:
        fields = self.children(party)
        name = _prose_of(fields.get("Nm"))
        if name is None and "Pty" in fields:
            name = _prose_of(self.children(fields["Pty"]).get("Nm"))
        return name

    def remittance_text(self, fields: dict[str, etree._Element]) -> str:
        """Unstructured remittance lines and structured creditor references (QRR, SCOR), else AddtlTxInf."""
        lines: list[str] = []
        structured: list[etree._Element] = []
        if "RmtInf" in fields:
            names = self._names
            for remittance in self.first_and_following(fields["RmtInf"], "RmtInf"):
                for part in remittance:
                    name = names.get(part.tag) or self.local_name(part.tag)
                    if name == "Ustrd":
                        lines.append(_collapse(part.text))
                    elif name == "Strd":
                        structured.append(part)
            for creditor_references in structured:
                for holder in self.every(creditor_references, "CdtrRefInf"):
                    lines += [_collapse(ref.text) for ref in self.every(holder, "Ref")]
        text = " ".join(line for line in lines if line)
        return text or _prose_of(fields.get("AddtlTxInf")) or ""

    def plain_amount(self, element: etree._Element | None) -> tuple[int, str] | None:
        """A plain figure (`1234.50`) in a known currency in minor units without going through Decimal;
        None for anything else, which `_amount` then reads or refuses."""
        if element is None:
            return None
        currency = element.get("Ccy") or ""
        exponent = CURRENCY_EXPONENTS.get(currency)
        if exponent is None:
            return None
        minor = plain_decimal_to_minor_units((element.text or "").strip(), exponent)
        return None if minor is None else (minor, self.shared(currency))

    def day(self, holder: etree._Element | None, what: str, problems: list[str]) -> date | None:
        """`_day`, each distinct date text of the file parsed once."""
        if holder is None:
            return None
        fields = self.children(holder)
        text = _text_of(fields.get("Dt")) or _text_of(fields.get("DtTm"))
        if text is None:
            return None
        day = self._days.get(text)
        if day is None:
            day = _day_of_text(text, what, problems)
            if day is not None and len(self._days) < _MOST_TEXTS_SHARED:
                self._days[text] = day
        return day


def _detail_label(transaction: etree._Element, index: int) -> str:
    return f"TxDtls {index} (line {_line_of(transaction)})"


def _text_of(element: etree._Element | None) -> str | None:
    """The element's text, stripped; None when the element is absent or empty."""
    return None if element is None else (element.text or "").strip() or None


def _prose_of(element: etree._Element | None) -> str | None:
    """Free text with its line breaks and runs of blanks folded into single spaces."""
    return None if element is None else _collapse(element.text) or None


def _reference_of(element: etree._Element | None) -> str | None:
    text = _text_of(element)
    return None if text is None or text.upper() == _NO_REFERENCE else text


def _sign_of(
    indicator_element: etree._Element | None, what: str | Callable[[], str], problems: list[str]
) -> int | None:
    indicator = _text_of(indicator_element)
    if indicator is None:
        problems.append(f"{what if isinstance(what, str) else what()} has no credit/debit indicator (CdtDbtInd)")
        return None
    sign = _SIGN_OF_INDICATOR.get(indicator)
    if sign is None:
        problems.append(f"{what if isinstance(what, str) else what()} CdtDbtInd {indicator!r} is neither CRDT nor DBIT")
    return sign


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
    return _sign_of(_find(holder, "CdtDbtInd"), what, problems)


def _day(holder: etree._Element | None, what: str, problems: list[str]) -> date | None:
    """Dt or DtTm as the calendar day written, offset or time of day dropped (2017-04-03+02:00)."""
    if holder is None:
        return None
    text = _text(holder, "Dt") or _text(holder, "DtTm")
    return None if text is None else _day_of_text(text, what, problems)


def _day_of_text(text: str, what: str, problems: list[str]) -> date | None:
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


# Statement-level paths are walked child by child: lxml's iterchildren(tag) runs in C, while
# find()/findtext() go through ElementPath at several times the cost per call. Entries, which a
# statement holds by the million, go through _EntryReader's one pass over each element's children.
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


def _text(holder: etree._Element, path: str) -> str | None:
    """The text of the element at `path`, stripped; None when it is absent or empty."""
    return _text_of(_find(holder, path))


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def _is_statement(element: etree._Element) -> bool:
    """A Stmt, Rpt or Ntfctn right inside its own message element (not a same-named element elsewhere)."""
    parent = element.getparent()
    expected_parent = _MESSAGE_OF_STATEMENT.get(_local_name(element))
    return parent is not None and expected_parent is not None and _local_name(parent) == expected_parent


def _local_name(element: etree._Element) -> str:
    return str(element.tag).rpartition("}")[2]


def _qualified_name(element: etree._Element) -> str:
    """The name as the source spells it (prefix:Name)."""
    return f"{element.prefix}:{_local_name(element)}" if element.prefix else _local_name(element)


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
