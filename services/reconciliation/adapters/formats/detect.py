"""Which statement format a file is in, from its first bytes, and one entry point that parses any of them.

camt.05x lives in `camt.py` (another module, written alongside); it is imported only when a file
needs it, so the text formats work whether or not it is there.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from services.reconciliation.adapters.formats.bai2 import parse_bai2
from services.reconciliation.adapters.formats.csv_mapping import CsvMapping, parse_csv
from services.reconciliation.adapters.formats.mt940 import parse_mt940
from services.reconciliation.adapters.formats.ofx import parse_ofx
from services.reconciliation.domain.statements import ParsedFile, RowError, StatementFileError, StatementFormat

CAMT_MODULE = "services.reconciliation.adapters.formats.camt"
_HEAD_BYTES = 8192
_CAMT_ROOTS = {
    "BkToCstmrStmt": StatementFormat.CAMT053,
    "BkToCstmrAcctRpt": StatementFormat.CAMT052,
    "BkToCstmrDbtCdtNtfctn": StatementFormat.CAMT054,
}
# Signatures of files people upload by mistake, named so the error says what to do instead.
_BINARY_KINDS = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or Excel workbook"),
    (b"\x1f\x8b", "gzip data"),
)
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
_XML_PROLOGUE = re.compile(r"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)", re.DOTALL | re.IGNORECASE)
_ELEMENT = re.compile(r"<(?:[\w.-]+:)?(?P<name>[\w.-]+)[\s/>]")
_SWIFT_BLOCKS = re.compile(r"^\s*(?:\{[1-3]:(?:[^{}]|\{[^{}]*\})*\})*(?:\{4:)?\s*")
_MT940_REFERENCE = re.compile(r"(?m)^:20:")
# Some banks put their own lines before the first :20: (ABN AMRO: "ABNANL2A", "940"), so a :20:
# anywhere near the start counts when an account or opening balance tag follows it.
_MT940_STATEMENT_TAG = re.compile(r"(?m)^:(?:25|60[FM]):")
# 01 file header: record code, sender, receiver, then the YYMMDD creation date (not just any "01,").
_BAI2_HEADER = re.compile(r"^\s*01,[^,\r\n]*,[^,\r\n]*,\d{6},")


def detect_format(content: bytes) -> StatementFormat:
    """The format a statement file is in; anything unrecognised is taken to be CSV.

    Raises StatementFileError for an empty or binary file, and for XML that is no known statement.
    """
    head = content[:_HEAD_BYTES].removeprefix(b"\xef\xbb\xbf")
    if not head.strip():
        raise StatementFileError([RowError(1, "the file is empty")])
    _refuse_binary(head)
    text = head.decode("latin-1")  # every byte maps; enough to recognise the markers, all ASCII
    stripped = text.lstrip()
    if "OFXHEADER" in stripped[:200].upper() or re.search(r"<\?OFX\b|<OFX>", text, re.IGNORECASE):
        return StatementFormat.OFX
    if stripped.startswith("<"):
        return _xml_format(content, text)
    if _BAI2_HEADER.match(stripped):
        return StatementFormat.BAI2
    after_envelope = _SWIFT_BLOCKS.sub("", stripped, count=1)
    if after_envelope.startswith(":20:") or (_MT940_REFERENCE.search(text) and _MT940_STATEMENT_TAG.search(text)):
        return StatementFormat.MT940
    return StatementFormat.CSV


def parse_statement(
    content: bytes, fmt: StatementFormat | None, *, csv_mapping: CsvMapping | None = None
) -> ParsedFile:
    """The statements of a file in `fmt`, or in the format detected when `fmt` is None.

    Raises StatementFileError for a file that cannot be imported (every problem listed), for CSV
    without a column mapping, and for camt.05x when its parser is not installed.
    """
    fmt = fmt or detect_format(content)
    if fmt is StatementFormat.CSV:
        if csv_mapping is None:
            raise StatementFileError(
                [RowError(0, "a CSV statement needs a column mapping (which columns hold the date, amount, …)")]
            )
        return parse_csv(content, csv_mapping)
    parsers: dict[StatementFormat, Callable[[bytes], ParsedFile]] = {
        StatementFormat.MT940: parse_mt940,
        StatementFormat.BAI2: parse_bai2,
        StatementFormat.OFX: parse_ofx,
    }
    if fmt in parsers:
        return parsers[fmt](content)
    parse_camt: Callable[[bytes], ParsedFile] = _camt_function("parse_camt")
    return parse_camt(content)


def _refuse_binary(head: bytes) -> None:
    for signature, kind in _BINARY_KINDS:
        if head.startswith(signature):
            raise StatementFileError(
                [RowError(1, f"this is {kind}, not a statement file; export CSV or a bank format")]
            )
    if head.startswith(_UTF16_MARKS):
        raise StatementFileError([RowError(1, "UTF-16 text is not supported; save the file as UTF-8")])
    # Text may carry a stray form feed or DOS end-of-file mark; binary data is full of control bytes.
    controls = sum(1 for byte in head if byte < 0x20 and byte not in b"\t\n\r\x0b\x0c\x1a")
    if b"\x00" in head or controls > max(2, len(head) // 100):
        raise StatementFileError([RowError(1, "binary content, not a statement file")])


def _xml_format(content: bytes, text: str) -> StatementFormat:
    looks_like_camt = _camt_function("looks_like_camt", required=False)
    if looks_like_camt is not None:
        verdict = looks_like_camt(content)
        if isinstance(verdict, StatementFormat):
            return verdict
    body = _XML_PROLOGUE.sub("", text)
    names = [m["name"] for m in _ELEMENT.finditer(body[:2000])][:2]  # the root, and its first child
    for name in names:
        if name in _CAMT_ROOTS:
            return _CAMT_ROOTS[name]
    root = names[0] if names else "?"
    raise StatementFileError([RowError(1, f"XML with root <{root}> is not a camt.053/052/054 statement")])


def _camt_function(name: str, *, required: bool = True) -> Any:
    try:
        module = importlib.import_module(CAMT_MODULE)
    except ModuleNotFoundError as error:
        if error.name != CAMT_MODULE:
            raise
        if not required:
            return None
        raise StatementFileError([RowError(0, "camt.05x import is not available in this build")]) from None
    return getattr(module, name) if required else getattr(module, name, None)
