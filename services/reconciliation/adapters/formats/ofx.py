"""OFX 1.x (SGML), OFX 2.x (XML) and QFX bank and credit-card statements → ParsedFile.

The header is read here, tolerantly (one line or many, keys run together, any order, a charset
that lies), and the body by ofxtools' TreeBuilder, which turns SGML with unclosed data elements
and XML alike into an element tree. ofxtools' model layer (`OFXTree.convert`) is not used: it
refuses files that banks send and ofxparse reads — several BANKTRANLIST blocks in one statement
("elements out of order"), a zero-entry account without LEDGERBAL or without DTSTART/DTEND — so
the statements are read from the tree instead, with every missing or malformed field reported.
OFX has no opening balance: LEDGERBAL is the closing one, so the balance check does not apply.
"""

from __future__ import annotations

import bisect
import html
import re
import xml.etree.ElementTree as ET
from datetime import date

from ofxtools.Parser import ParseError, TreeBuilder

from services.kernel.money import MoneyError, decimal_from_text, exponent_of, to_minor_units
from services.reconciliation.adapters.formats.decoding import DEFAULT_ENCODINGS
from services.reconciliation.domain.statements import (
    ParsedFile,
    RowError,
    Statement,
    StatementFileError,
    StatementFormat,
    StatementLine,
)

_HEADER_KEYS = (
    "OFXHEADER",
    "DATA",
    "VERSION",
    "SECURITY",
    "ENCODING",
    "CHARSET",
    "COMPRESSION",
    "OLDFILEUID",
    "NEWFILEUID",
)
# Each key is found wherever it starts, so `OFXHEADER:100DATA:OFXSGML…` on one line reads like one key a line.
_HEADER_FIELD = re.compile(
    r"(?P<key>" + "|".join(_HEADER_KEYS) + r")\s*:\s*(?P<value>.*?)\s*(?=(?:" + "|".join(_HEADER_KEYS) + r")\s*:|$)",
    re.DOTALL,
)
_CHARSET_CODECS = {"1252": "cp1252", "ISO-8859-1": "latin-1", "8859-1": "latin-1", "UTF-8": "utf-8"}
_BODY_START = re.compile(rb"<OFX>", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([\w.-]+)["']""", re.IGNORECASE)
_OFX_DATE = re.compile(r"^(?P<date>\d{8})")
_ERROR_POSITION = re.compile(r"\s*-\s*position=\[(?P<start>\d+):\d+\]")
_STATEMENT_TAGS = {"STMTRS": "BANKACCTFROM", "CCSTMTRS": "CCACCTFROM"}


def parse_ofx(content: bytes) -> ParsedFile:
    """Every bank and credit-card statement of an OFX/QFX file, or StatementFileError listing each problem."""
    text, body_start, warnings = _decode(content)
    source = _Source(text)
    root = _element_tree(text[body_start:], body_start, source)
    errors: list[RowError] = []
    statements: list[Statement] = []
    positions = _Positions(root, text, source)
    for response in root.iter():
        if response.tag in _STATEMENT_TAGS:
            statement = _statement(response, positions, errors)
            if statement is not None:
                statements.append(statement)
        elif response.tag in ("STMTTRNRS", "CCSTMTTRNRS", "SONRS") and _status_code(response) not in ("", "0"):
            warnings.append(RowError(positions.line_of(response), f"{response.tag} status: {_status_text(response)}"))
        elif response.tag == "INVSTMTRS":
            warnings.append(RowError(positions.line_of(response), "investment statement (INVSTMTRS) not imported"))
    if not statements and not errors:
        reasons = "; ".join(w.message for w in warnings)
        errors.append(RowError(source.line_at(body_start), f"no bank or credit-card statement in the file. {reasons}"))
    if errors:
        raise StatementFileError(errors)
    return ParsedFile(format=StatementFormat.OFX, statements=tuple(statements), warnings=tuple(warnings))


class _Source:
    """Offsets in the decoded text → 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]

    def line_at(self, offset: int) -> int:
        return bisect.bisect_right(self._line_starts, offset)


class _Positions:
    """Where each statement and transaction element starts, by matching elements to their tags in order."""

    def __init__(self, root: ET.Element, text: str, source: _Source) -> None:
        self._lines: dict[int, int] = {}
        for tag in ("STMTRS", "CCSTMTRS", "STMTTRN", "INVSTMTRS", "STMTTRNRS", "CCSTMTTRNRS", "SONRS"):
            elements = [e for e in root.iter() if e.tag == tag]
            offsets = [m.start() for m in re.finditer(f"<{tag}>", text)]
            if len(elements) == len(offsets):
                self._lines.update({id(e): source.line_at(o) for e, o in zip(elements, offsets, strict=True)})
        self._fallback = source.line_at(0)

    def line_of(self, element: ET.Element) -> int:
        return self._lines.get(id(element), self._fallback)


class _CheckedTreeBuilder(TreeBuilder):
    """ofxtools' TreeBuilder, which lets `<STMTRS>…</STMTTRNRS>` through, made to refuse mismatched end tags."""

    def __init__(self) -> None:
        super().__init__()
        self._open: list[str] = []

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._open.append(tag)
        element: ET.Element = super().start(tag, attrs)
        return element

    def end(self, tag: str) -> ET.Element:
        if not self._open or self._open[-1] != tag:
            expected = f"</{self._open[-1]}>" if self._open else "no end tag"
            raise ParseError(f"end tag </{tag}> where {expected} was expected")
        self._open.pop()
        element: ET.Element = super().end(tag)
        return element

    def close(self) -> ET.Element:
        if self._open:
            raise ParseError(f"the file ends before </{self._open[-1]}>")
        root: ET.Element | None = super().close()  # None, despite the stubs, when nothing was parsed
        if root is None:
            raise ParseError("no OFX element in the body")
        return root


def _decode(content: bytes) -> tuple[str, int, list[RowError]]:
    """The whole file as text, where `<OFX>` starts in it, and a warning when the header's charset is wrong."""
    content = content.removeprefix(b"\xef\xbb\xbf")
    body = _BODY_START.search(content)
    if body is None:
        raise StatementFileError([RowError(1, "not an OFX file: no <OFX> element")])
    prologue = content[: body.start()]
    declared = _declared_codec(prologue)
    # Strict UTF-8 first whatever the header says: banks declare CHARSET:1252 and send UTF-8, and
    # cp1252 would read that as mojibake without an error; cp1252 text is almost never valid UTF-8.
    encodings = list(dict.fromkeys(["utf-8", *([declared] if declared else []), *DEFAULT_ENCODINGS]))
    for encoding in encodings:
        try:
            text = content.decode(encoding)
        except UnicodeDecodeError:
            continue
        warnings = []
        if declared and encoding != declared and not content.isascii():
            warnings.append(RowError(1, f"the header declares {declared}, but the file is {encoding}"))
        return text, len(prologue.decode(encoding)), warnings
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _declared_codec(prologue: bytes) -> str | None:
    xml_encoding = _XML_ENCODING.search(prologue)
    if xml_encoding:
        return _codec_name(xml_encoding.group(1).decode("ascii"))
    header = {m["key"]: m["value"].strip().upper() for m in _HEADER_FIELD.finditer(prologue.decode("latin-1"))}
    if header.get("COMPRESSION", "NONE") != "NONE":
        raise StatementFileError([RowError(1, f"compressed OFX ({header['COMPRESSION']}) is not supported")])
    if header.get("ENCODING") == "UTF-8":
        return "utf-8"
    return _CHARSET_CODECS.get(header.get("CHARSET", ""))


def _codec_name(name: str) -> str | None:
    normalized = name.strip().lower().replace("_", "-")
    return {"utf-8": "utf-8", "iso-8859-1": "latin-1", "windows-1252": "cp1252", "us-ascii": "utf-8"}.get(normalized)


def _element_tree(body: str, body_start: int, source: _Source) -> ET.Element:
    builder = _CheckedTreeBuilder()
    try:
        builder.feed(body)
        root = builder.close()
    except (SyntaxError, IndexError) as error:  # ofxtools' and ElementTree's ParseError are SyntaxErrors
        # ofxtools appends "position=[start:end]" (in the body) to its messages; it names the line.
        message = str(error.args[0] if error.args else error)
        at = _ERROR_POSITION.search(message)
        line = source.line_at(body_start + int(at["start"])) if at else source.line_at(body_start)
        raise StatementFileError([RowError(line, f"malformed OFX: {_ERROR_POSITION.sub('', message)}")]) from None
    if root.tag != "OFX":
        raise StatementFileError([RowError(source.line_at(body_start), f"the OFX body starts with <{root.tag}>")])
    return root


def _statement(response: ET.Element, positions: _Positions, errors: list[RowError]) -> Statement | None:
    found = len(errors)
    where = positions.line_of(response)
    currency = _text(response, "CURDEF")
    try:
        exponent_of(currency)
    except MoneyError as error:
        errors.append(RowError(where, f"{response.tag}/CURDEF: {error.message}"))
        return None
    account = _text(response, f"{_STATEMENT_TAGS[response.tag]}/ACCTID")
    if not account:
        errors.append(RowError(where, f"{response.tag} has no {_STATEMENT_TAGS[response.tag]}/ACCTID account"))
    lines: list[StatementLine] = []
    starts: list[date] = []
    ends: list[date] = []
    # Several BANKTRANLIST blocks in one statement are read as one list (ofxtools refuses them).
    for transactions in response.findall("BANKTRANLIST"):
        starts += [d for d in [_date(_text(transactions, "DTSTART"))] if d]
        ends += [d for d in [_date(_text(transactions, "DTEND"))] if d]
        for transaction in transactions.findall("STMTTRN"):
            line = _statement_line(transaction, currency, positions.line_of(transaction), errors)
            if line is not None:
                lines.append(line)
    closing = None
    ledger = response.find("LEDGERBAL")
    if ledger is not None:
        closing = _minor_units(_text(ledger, "BALAMT"), currency, where, "LEDGERBAL/BALAMT", errors)
    if len(errors) > found:
        return None
    closing_date = _date(_text(ledger, "DTASOF")) if ledger is not None else None
    return Statement(
        account=account,
        currency=currency,
        lines=tuple(lines),
        opening_balance_minor=None,
        closing_balance_minor=closing,
        opening_date=min(starts, default=None),
        closing_date=closing_date or max(ends, default=None),
        line=where,
    )


def _statement_line(transaction: ET.Element, currency: str, line: int, errors: list[RowError]) -> StatementLine | None:
    # CURRENCY (not ORIGCURRENCY) means TRNAMT itself is in that currency, not the statement's.
    line_currency = _text(transaction, "CURRENCY/CURSYM") or currency
    amount = _minor_units(_text(transaction, "TRNAMT"), line_currency, line, "STMTTRN/TRNAMT", errors)
    posted_text = _text(transaction, "DTPOSTED")
    posted = _date(posted_text)
    if posted is None:
        errors.append(RowError(line, f"STMTTRN/DTPOSTED {posted_text!r} is not a date (YYYYMMDD…)"))
    if amount is None or posted is None:
        return None
    name = _text(transaction, "NAME") or _text(transaction, "PAYEE/NAME")
    return StatementLine(
        line=line,
        amount_minor=amount,
        currency=line_currency,
        booking_date=posted,
        value_date=_date(_text(transaction, "DTAVAIL")) or posted,
        reference=_text(transaction, "FITID") or None,
        end_to_end_id=_text(transaction, "REFNUM") or _text(transaction, "CHECKNUM") or None,
        description=_text(transaction, "MEMO") or name,
        counterparty=name or None,
        bank_code=_text(transaction, "TRNTYPE") or None,
    )


def _minor_units(text: str, currency: str, line: int, label: str, errors: list[RowError]) -> int | None:
    # Some banks write a decimal comma ("-8,85"); OFX has no thousands separator to confuse it with.
    normalized = text.replace(",", ".") if "," in text and "." not in text else text
    try:
        return to_minor_units(decimal_from_text(normalized), currency)
    except MoneyError as error:
        errors.append(RowError(line, f"{label}: {error.message}"))
        return None


def _date(text: str) -> date | None:
    """The calendar date as the bank wrote it (YYYYMMDD…), not shifted by the time-zone suffix."""
    match = _OFX_DATE.match(text)
    if match is None:
        return None
    digits = match["date"]
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def _text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    return html.unescape(found.text or "").strip() if found is not None else ""


def _status_code(response: ET.Element) -> str:
    return _text(response, "STATUS/CODE")


def _status_text(response: ET.Element) -> str:
    parts = (_status_code(response), _text(response, "STATUS/SEVERITY"), _text(response, "STATUS/MESSAGE"))
    return " ".join(part for part in parts if part)
