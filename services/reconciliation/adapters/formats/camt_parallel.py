"""A large camt file read in parts at once, one per core, giving exactly what one reader gives.

The file is cut right before `<Ntry>` start tags. Each part is parsed on its own, the part before a
cut closed off with the end tags of the elements open there and the part after it opened with their
start tags (same names, same namespaces), its line numbers shifted by the lines before it. Where a
statement is cut, its header is read in the part before and its lines are joined in order. Whatever
the parts cannot decide alone — a broken file, a row error, a file whose markup the cut could
misread — sends the file to the single reader instead, so errors are always the ones it reports.
"""

from __future__ import annotations

import codecs
import gc
import itertools
import os
import pickle
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from services.reconciliation.adapters.formats.camt import (
    _DECLARED_ENCODING,
    _FEED_BYTES,
    _MESSAGE_OF_STATEMENT,
    StatementPiece,
    _local_name,
    _MessageReader,
    _qualified_name,
    _statement_of,
)
from services.reconciliation.domain.statements import (
    EntryDetail,
    ParsedFile,
    RowError,
    Statement,
    StatementLine,
)

_MOST_PARTS = 4

_FIRST_ENTRY = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?)Ntry[\s>]")


@dataclass(frozen=True)
class Part:
    start: int
    end: int
    opener: bytes  # start tags of the elements open at `start` (empty for the first part)
    closer: bytes  # end tags of the elements open at `end` (empty for the last part)
    line_offset: int  # lines before `start`


@dataclass(frozen=True)
class _Plan:
    parts: tuple[Part, ...]
    open_at_cut: tuple[tuple[str, dict[str | None, str]], ...]  # (qualified name, namespaces) root first


@dataclass
class PartRead:
    """What a part found: its statement pieces with lines packed as tuples (cheap to send between
    processes), and whether anything makes it unfit to be joined."""

    pieces: list[StatementPiece]
    packed_lines: list[list[tuple[Any, ...]]]
    failed: bool
    open_at_close: tuple[tuple[str, dict[str | None, str]], ...] | None


def parts_for_this_machine() -> int:
    """One part per core this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(_MOST_PARTS, cores))


def read_in_parts(content: bytes, parts: int) -> ParsedFile | None:
    """The file read in `parts` parts, this process reading the first and a child process each other;
    None when the file cannot be cut or a part finds anything but clean statements (the single
    reader then reads it, and reports what is wrong)."""
    plan = plan_parts(content, parts)
    if plan is None:
        return None
    # A fresh interpreter, not a fork: the service runs gRPC and event-loop threads a fork would copy
    # mid-step; nor multiprocessing's spawn, which imports the parent's main module again.
    package_root = str(Path(__file__).resolve().parents[4])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, *sys.path])}
    workers: list[tuple[subprocess.Popen[bytes], threading.Thread]] = []
    try:
        for index, part in enumerate(plan.parts[1:], start=1):
            process = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import _serve_part; _serve_part({index})"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=environment,
            )
            sender = threading.Thread(target=_send_part, args=(process, content, part), daemon=True)
            sender.start()
            workers.append((process, sender))
        reads = [read_part(_slices(content, plan.parts[0]), plan.parts[0], 0)]
        if reads[0].failed:
            return None
        for process, _ in workers:
            assert process.stdout is not None
            read = pickle.loads(process.stdout.read())  # our own child's answer
            if not isinstance(read, PartRead) or read.failed:
                return None
            reads.append(read)
    except (EOFError, OSError, pickle.UnpicklingError):
        return None
    finally:
        for process, sender in workers:
            if process.poll() is None:
                process.kill()
            process.wait()
            sender.join()
            if process.stdout is not None:
                process.stdout.close()
    return join_parts(reads, plan)


def plan_parts(content: bytes, parts: int) -> _Plan | None:
    """Where to cut the file, or None when it should not be cut.

    Cutting by bytes is exact only when every `<` starts an element tag: no comment, CDATA section,
    DOCTYPE or processing instruction after the XML declaration (camt files have none). Text in
    UTF-8 only (8-bit files arrive here converted), and lines ending in LF or CRLF, which libxml2
    and a count of LF agree on.
    """
    if parts < 2 or content[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\x00" in content[:4]:
        return None
    declared = _DECLARED_ENCODING.match(content)
    if declared is not None and codecs.lookup(declared[1].decode("ascii")).name != "utf-8":
        return None
    body = 3 if content.startswith(codecs.BOM_UTF8) else 0
    if content.startswith(b"<?xml", body):
        body = content.find(b"?>", body) + 2
        if body < 2:
            return None
    if content.find(b"<!") >= 0 or content.find(b"<?", body) >= 0:
        return None
    if content.count(b"\r") != content.count(b"\r\n"):
        return None
    first_entry = _FIRST_ENTRY.search(content, body)
    if first_entry is None:
        return None
    open_at_cut = _open_elements(content[: first_entry.start()])
    if open_at_cut is None:
        return None
    entry_start = re.compile(rb"<" + re.escape(first_entry[1]) + rb"Ntry[\s>]")
    cuts = [0]
    for index in range(1, parts):
        found = entry_start.search(content, max(len(content) * index // parts, cuts[-1] + 1))
        if found is None:
            break
        cuts.append(found.start())
    if len(cuts) < 2:
        return None
    cuts.append(len(content))
    opener = "".join(_start_tag(name, namespaces, parent) for name, namespaces, parent in _with_parents(open_at_cut))
    closer = "".join(f"</{name}>" for name, _ in reversed(open_at_cut))
    planned = []
    lines_before = 0
    for index, (start, end) in enumerate(itertools.pairwise(cuts)):
        if index:
            lines_before += content.count(b"\n", cuts[index - 1], start)
        planned.append(
            Part(
                start,
                end,
                opener.encode() if index else b"",
                closer.encode() if end < len(content) else b"",
                lines_before,
            )
        )
    return _Plan(tuple(planned), open_at_cut)


def read_part(slices: Iterable[bytes], part: Part, index: int) -> PartRead:
    pieces: list[StatementPiece] = []
    reader = _MessageReader(line_offset=part.line_offset, pieces=pieces)
    reader.continues_first = index > 0
    if part.opener:
        slices = _after(part.opener, slices)
    reader.read_slices(slices, part.closer)
    failed = bool(reader.errors) or reader.header_after_the_cut or not pieces
    packed = [[_packed(line) for line in piece.lines] for piece in pieces]
    for piece in pieces:
        piece.lines = []
    return PartRead(pieces, packed, failed, reader.open_at_close)


def join_parts(reads: list[PartRead], plan: _Plan) -> ParsedFile | None:
    """The parts' statements as one file; None when the parts do not fit together as planned."""
    for index, read in enumerate(reads):
        last = index == len(reads) - 1
        if read.pieces[0].continues != (index > 0) or read.pieces[-1].goes_on == last:
            return None
        if not last and read.open_at_close != plan.open_at_cut:
            return None  # the cut fell inside other elements, or under other namespaces, than planned
    statements: list[Statement] = []
    warnings: list[RowError] = []
    header = None
    lines: list[StatementLine] = []
    entry_warnings: list[RowError] = []
    for read in reads:
        for piece, packed in zip(read.pieces, read.packed_lines, strict=True):
            if not piece.continues:
                header, lines, entry_warnings = piece.header, [], []
            lines += map(_unpacked, packed)
            entry_warnings += piece.warnings
            if piece.goes_on:
                continue
            if header is None:
                return None
            problems: list[str] = []
            notes: list[str] = []
            statement = _statement_of(header, tuple(lines), problems, notes)
            if statement is None or problems:
                return None
            statements.append(statement)
            warnings += entry_warnings
            warnings += (RowError(header.line, note) for note in notes)
    return ParsedFile(
        format=reads[0].pieces[0].message_format,
        statements=tuple(statements),
        warnings=tuple(sorted(warnings, key=lambda warning: warning.line)),
    )


def _open_elements(head: bytes) -> tuple[tuple[str, dict[str | None, str]], ...] | None:
    """The elements open at the end of `head` (the file up to its first entry), root first, when the
    innermost is a statement in its message element; None otherwise."""
    parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True, load_dtd=False)
    stack: list[etree._Element] = []
    try:
        parser.feed(head)
        for event, element in parser.read_events():
            if not isinstance(element, etree._Element):
                continue
            if event == "start":
                stack.append(element)
            else:
                stack.pop()
    except (etree.XMLSyntaxError, IndexError):
        return None
    if len(stack) < 2 or _MESSAGE_OF_STATEMENT.get(_local_name(stack[-1])) != _local_name(stack[-2]):
        return None
    return tuple((_qualified_name(element), dict(element.nsmap)) for element in stack)


def _with_parents(
    elements: tuple[tuple[str, dict[str | None, str]], ...],
) -> Iterator[tuple[str, dict[str | None, str], dict[str | None, str]]]:
    parent: dict[str | None, str] = {}
    for name, namespaces in elements:
        yield name, namespaces, parent
        parent = namespaces


def _start_tag(name: str, namespaces: dict[str | None, str], parent: dict[str | None, str]) -> str:
    """A start tag declaring what the element's namespaces add to its parent's, on one line (so the
    part's line count is not shifted)."""
    declared = []
    for prefix, uri in namespaces.items():
        if parent.get(prefix) != uri:
            escaped = uri.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            declared.append(f' xmlns{":" + prefix if prefix else ""}="{escaped}"')
    if None in parent and None not in namespaces:
        declared.append(' xmlns=""')
    return f"<{name}{''.join(declared)}>"


def _after(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _slices(content: bytes, part: Part) -> Iterator[bytes]:
    for start in range(part.start, part.end, _FEED_BYTES):
        yield content[start : min(start + _FEED_BYTES, part.end)]


def _send_part(process: subprocess.Popen[bytes], content: bytes, part: Part) -> None:
    """Streams the part to its process, which parses while it arrives (its end closes the stream)."""
    assert process.stdin is not None
    view = memoryview(content)
    try:
        pickle.dump(part, process.stdin)
        for start in range(part.start, part.end, _FEED_BYTES):
            process.stdin.write(view[start : min(start + _FEED_BYTES, part.end)])
        process.stdin.close()
    except OSError:
        pass  # the process stopped early: its answer (or its lack of one) says so
    finally:
        view.release()


def _serve_part(index: int) -> None:
    """A child process's work: parse the part arriving on stdin, send back on stdout what it found."""
    gc.disable()  # as the parser port does: a million lines, no cycles
    source = sys.stdin.buffer
    try:
        part = pickle.load(source)  # from the parent process
        read: PartRead | str = read_part(iter(lambda: source.read(_FEED_BYTES), b""), part, index)
    except Exception as error:  # whatever it is, the single reader reads the file instead
        read = repr(error)
    sys.stdout.buffer.write(pickle.dumps(read, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


def _packed(line: StatementLine) -> tuple[Any, ...]:
    # in field order, so _unpacked can pass them positionally; strings and dates the reader shares
    # are pickled once
    return (
        line.line,
        line.amount_minor,
        line.currency,
        line.booking_date,
        line.value_date,
        line.reference,
        line.end_to_end_id,
        line.description,
        line.counterparty,
        line.reversal,
        line.status,
        line.bank_code,
        line.original_amount_minor,
        line.original_currency,
        tuple(
            (d.amount_minor, d.currency, d.end_to_end_id, d.reference, d.counterparty, d.description)
            for d in line.details
        ),
        line.entry_reference,
    )


def _unpacked(packed: tuple[Any, ...]) -> StatementLine:
    (
        line,
        amount_minor,
        currency,
        booking_date,
        value_date,
        reference,
        end_to_end_id,
        description,
        counterparty,
        reversal,
        status,
        bank_code,
        original_amount_minor,
        original_currency,
        details,
        entry_reference,
    ) = packed
    return StatementLine(
        line,
        amount_minor,
        currency,
        booking_date,
        value_date,
        reference,
        end_to_end_id,
        description,
        counterparty,
        reversal,
        status,
        bank_code,
        original_amount_minor,
        original_currency,
        tuple(EntryDetail(*detail) for detail in details),
        entry_reference,
    )
