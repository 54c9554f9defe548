"""PostgreSQL persistence of the reconciliation schema: the ledger projection, imported statements,
matching rules, stored runs with their matches, and cases with their history."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from typing import Any

import numpy as np
from numpy.typing import NDArray
from payrecon.ledger.v1 import messages_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kernel.db import driver_connection
from services.kernel.money import CURRENCY_EXPONENTS
from services.reconciliation.domain.cases import (
    CaseEventKind,
    CasePlan,
    CaseState,
    CaseStatus,
    Finding,
    StoredRecordsEvidence,
    evidence_json,
)
from services.reconciliation.domain.matching import normalised_text
from services.reconciliation.domain.matching_columns import NO_CODE
from services.reconciliation.domain.model import Discrepancy, TransferSides, Window
from services.reconciliation.domain.statements import Statement, StatementFormat
from services.reconciliation.service.ports import (
    REPORT_LISTS_AT_MOST,
    CaseEventRecord,
    CaseFilter,
    CaseRecord,
    CasesChanged,
    EntryChunk,
    ExportCase,
    ExportMatch,
    LineChunk,
    PairMatches,
    ProjectedEntry,
    RunToSave,
    StatementLineRecord,
    StoredImport,
    StoredRun,
    StoredStatement,
)

# Transfer metadata keys that carry the payment's references, as payment systems name them.
REFERENCE_KEYS = ("reference", "bank_reference", "bankReference", "payment_reference", "paymentReference")
END_TO_END_KEYS = ("end_to_end_id", "endToEndId", "e2e_id")


I64 = NDArray[np.int64]

_LINES_PER_COPY = 50_000
_CASES_PER_COPY = 20_000
_PAIRS_PER_ROW = 100_000
_EXPORT_ROWS = 5_000
_MATCH_COLUMNS = (
    "run_id",
    "account_id",
    "kind",
    "statement_line_ids",
    "transfer_ids",
    "rule",
    "confidence",
    "breakdown",
    "amount_difference_minor",
)
# A text as matching compares it, coded by the server: `normalised_text` (Python's str.strip(), then
# casefold when asked) is, for plain ASCII, btrim of the characters str.strip() removes and lower() in
# the C collation; the code is a 63-bit hash of that (NO_CODE for empty), the check another hash of it.
# Text that is not plain ASCII comes back as _OTHER_TEXT and is normalised in Python, then hashed by the
# server all the same (`_code_other_texts`).
_ASCII_SPACE = r"E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f'"
_OTHER_TEXT = -2
_CODE_MASK = 2**63 - 1


def _normalised_sql(column: str, casefold: bool) -> str:
    stripped = f"btrim({column}, {_ASCII_SPACE})"
    return f'lower({stripped} COLLATE "C")' if casefold else stripped


def _coded_query(plain: str, width: int, texts: Sequence[_Text], source: str) -> str:
    """SELECT of `width` plain bigint columns, then the code of each text, then its check: the ones
    stored with the row (migration 0005) where their normalisation is the one asked for, else computed.
    Each computed text is normalised once, in a subquery kept apart (OFFSET 0: otherwise the planner
    would repeat the expressions in every CASE that uses them)."""
    inner = [f"{column} AS p{i}" for i, column in enumerate(_split_columns(plain, width))]
    codes: list[str] = []
    checks: list[str] = []
    for i, text_ in enumerate(texts):
        if text_.casefold == text_.stored_casefold:
            inner += [f"{text_.stored}_code AS c{i}", f"{text_.stored}_check AS k{i}"]
            codes.append(f"c{i}")
            checks.append(f"k{i}")
            continue
        inner += [
            f"{_normalised_sql(text_.column, text_.casefold)} AS t{i}",
            f"octet_length({text_.column}) <> char_length({text_.column}) AS o{i}",
        ]
        for seed, out in ((0, codes), (1, checks)):
            hashed = f"hashtextextended(t{i}, {seed})" + (f" & {_CODE_MASK}" if seed == 0 else "")
            out.append(
                f"CASE WHEN t{i} IS NULL THEN {NO_CODE} WHEN o{i} THEN {_OTHER_TEXT}"
                f" WHEN t{i} = '' THEN {NO_CODE} ELSE {hashed} END"
            )
    outer = [f"p{i}" for i in range(width)] + codes + checks
    return f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {source} OFFSET 0) AS q"


@dataclass(frozen=True)
class _Text:
    """A text column as matching codes it: normalised with or without case-folding; its code and check
    as stored with the row (`{stored}_code`, `{stored}_check`) are normalised per `stored_casefold`."""

    column: str
    casefold: bool
    stored: str
    stored_casefold: bool


def _split_columns(plain: str, width: int) -> list[str]:
    """The top-level, comma-separated expressions of `plain` (commas inside parentheses belong to them)."""
    parts, depth, current = [], 0, ""
    for char in plain:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    parts.append(current.strip())
    if len(parts) != width:
        raise ValueError(f"expected {width} columns, got {len(parts)}")
    return parts


_NO_ROWS = np.zeros(0, dtype=np.int64)


# A staged finding's evidence (alias f, `_stored_evidence`).
_STAGED_EVIDENCE = "f.evidence, f.rule, f.days_apart, f.line_ids, f.entry_ids, f.debit_normal"


def _case_evidence(exponents: str) -> str:
    """A case's evidence as read (alias c): its document, else rendered from the records it names by the
    migration's case_evidence; `exponents` is the placeholder of the currencies' decimals as JSON."""
    return (
        "coalesce(c.evidence, case_evidence(c.account_id, c.evidence_rule, c.days_apart, c.line_ids, c.entry_ids,"
        f" c.debit_normal, CAST({exponents} AS jsonb)))"
    )


_EXPONENTS_JSON = json.dumps(CURRENCY_EXPONENTS)


def _stored_evidence(f: Finding) -> tuple[object, ...]:
    """A finding's evidence as a case stores it: (document, rule, days apart, line ids, entry ids, debit
    normal), the document None when the evidence names records by id."""
    ev = f.evidence
    if isinstance(ev, StoredRecordsEvidence):
        return (None, ev.rule, ev.days_apart, list(ev.statement_line_ids), list(ev.entry_ids), ev.debit_normal)
    return (evidence_json(ev), None, None, None, None, None)


# The first event of every case's history: the run that found it opened it (when: the case's opened_at).
_OPENING = f"'{CaseEventKind.OPENED.value}' AS action, 'system' AS actor, 'run found it' AS reason"
_OPENED_CASE_COLUMNS = (
    "id",
    "account_id",
    "kind",
    "fingerprint",
    "status",
    "severity",
    "message",
    "amount_minor",
    "currency",
    "evidence",
    "evidence_rule",
    "days_apart",
    "line_ids",
    "entry_ids",
    "debit_normal",
    "window_start",
    "window_end",
)


_DISCREPANCY_COLUMNS = (
    "type",
    "severity",
    "message",
    "transaction_id",
    "amount_minor",
    "currency",
    "case_id",
    "statement_line_ids",
    "ledger_transfer_ids",
)


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, no flags, no header extension


# PostgreSQL's binary array elements: type oid and big-endian numpy type.
_INT2, _INT4, _INT8, _FLOAT8 = (21, ">i2"), (23, ">i4"), (20, ">i8"), (701, ">f8")
_TEXT_OID = 25


def _copy_field(value: bytes) -> bytes:
    """A binary COPY field: its length, then its bytes."""
    return len(value).to_bytes(4, "big") + value


def _array_head(oid: int, size: int) -> bytes:
    """A one-dimensional, NULL-free binary array's header (dimensions, flags, element type, size, lower bound)."""
    return b"".join(n.to_bytes(4, "big") for n in (1, 0, oid, size, 1))


def _numeric_array(element: tuple[int, str], values: NDArray[Any]) -> bytes:
    """A column of numbers as a binary array value: each element its length, then its big-endian value."""
    oid, kind = element
    items = np.empty(values.size, dtype=np.dtype([("length", ">i4"), ("value", kind)]))
    items["length"] = np.dtype(kind).itemsize
    items["value"] = values
    return _array_head(oid, values.size) + items.tobytes()


def _binary_array(oid: int, values: Sequence[bytes]) -> bytes:
    """Values already in their binary form (text: UTF-8) as a binary array value."""
    return _array_head(oid, len(values)) + b"".join(_copy_field(v) for v in values)


class _Int8Rows:
    """Rows of bigint columns, none NULL, from COPY … TO STDOUT (FORMAT binary), parsed a few MiB at a
    time as they arrive: a fixed-size record per row (field count, then length and value per field)."""

    _SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
    _PARSE_FROM = 4 << 20

    def __init__(self, width: int) -> None:
        self._width = width
        fields: list[tuple[str, str]] = [("n", ">i2")]
        for i in range(width):
            fields += [(f"l{i}", ">i4"), (f"v{i}", ">i8")]
        self._dtype = np.dtype(fields)
        self._pending = bytearray()
        self._header = True
        self._parts: list[list[I64]] = []

    async def feed(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= self._PARSE_FROM:
            self._parse()

    def _parse(self) -> None:
        if self._header:
            if len(self._pending) < 19:
                return
            if bytes(self._pending[:11]) != self._SIGNATURE:
                raise ValueError("not a binary COPY stream")
            extension = int.from_bytes(self._pending[15:19], "big")
            del self._pending[: 19 + extension]
            self._header = False
        count = len(self._pending) // self._dtype.itemsize
        if not count:
            return
        rows = np.frombuffer(self._pending, dtype=self._dtype, count=count)
        if (rows["n"] != self._width).any() or any((rows[f"l{i}"] != 8).any() for i in range(self._width)):
            raise ValueError("a binary COPY row is not one of non-NULL bigints")
        self._parts.append([rows[f"v{i}"].astype(np.int64) for i in range(self._width)])
        del rows
        del self._pending[: count * self._dtype.itemsize]

    def columns(self) -> list[I64]:
        self._parse()
        if bytes(self._pending) != b"\xff\xff":
            raise ValueError("a binary COPY stream ended early")
        columns = []
        for i in range(self._width):  # a column at a time, each piece let go once copied
            columns.append(np.concatenate([p[i] for p in self._parts]) if self._parts else _NO_ROWS)
            for p in self._parts:
                p[i] = _NO_ROWS
        self._parts.clear()
        return columns


_LINE_COLUMNS = (
    "SELECT l.id, l.line_no, l.amount_minor, l.currency, l.booking_date, l.value_date, l.reference,"
    " l.end_to_end_id, l.description, l.counterparty, s.bank_account"
    " FROM statement_lines l JOIN statements s ON s.id = l.statement_id"
)
_ENTRY_COLUMNS = (
    "SELECT entry_id, transfer_id, direction, amount_minor, currency, posted_at, reference, end_to_end_id"
    " FROM ledger_entries"
)
_STATEMENT_LINE_COLUMNS = (
    "import_id",
    "statement_id",
    "account_id",
    "line_no",
    "amount_minor",
    "currency",
    "booking_date",
    "value_date",
    "reference",
    "end_to_end_id",
    "description",
    "counterparty",
    "reversal",
    "status",
)


def _statement_line_records(
    import_id: uuid.UUID, account_id: str, statement_ids: Sequence[int], statements: Sequence[tuple[Statement, str]]
) -> Iterator[tuple[object, ...]]:
    """The statement_lines rows of an import, in _STATEMENT_LINE_COLUMNS order, made as COPY asks for them."""
    for statement_id, (statement, _) in zip(statement_ids, statements, strict=True):
        fallback_day: date | None = None  # the day of a line that names none: the closing date, else today
        for line in statement.lines:
            day = line.value_date or line.booking_date
            if day is None:
                fallback_day = fallback_day or statement.closing_date or date.today()
                day = fallback_day
            yield (
                import_id,
                statement_id,
                account_id,
                line.line,
                line.amount_minor,
                line.currency,
                line.booking_date,
                day,
                line.reference,
                line.end_to_end_id,
                line.description,
                line.counterparty,
                line.reversal,
                line.status.value,
            )


def _first(metadata: Mapping[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        if metadata.get(key):
            return metadata[key]
    return None


# The age bands unresolved_case_counts reports, youngest first.
OPEN_CASE_AGE_BANDS = ("<1h", "1h-1d", "1d-7d", ">7d")


class ReconciliationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def project_events(self, events: Sequence[messages_pb2.LedgerEvent]) -> int:
        """Adds the entries of TransferPosted events; repeats are no-ops. Returns entries added."""
        rows = []
        for event in events:
            if event.WhichOneof("event") != "transfer_posted":
                continue
            p = event.transfer_posted
            at = p.posted_at.ToDatetime()
            reference = _first(p.metadata, REFERENCE_KEYS)
            end_to_end = _first(p.metadata, END_TO_END_KEYS)
            for account, direction, entry in (
                (p.debit_account_id, "DEBIT", p.debit_entry_id),
                (p.credit_account_id, "CREDIT", p.credit_entry_id),
            ):
                rows.append(
                    (
                        p.transfer_id,
                        account,
                        direction,
                        p.amount.minor_units,
                        p.amount.currency,
                        entry,
                        at,
                        reference,
                        end_to_end,
                    )
                )
        if not rows:
            return 0
        columns = list(zip(*rows, strict=True))
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transfer_id, account_id, direction, amount_minor, currency,"
                    " entry_id, posted_at, reference, end_to_end_id)"
                    " SELECT t, a, d, m, c, e, p AT TIME ZONE 'UTC', ref, e2e"
                    " FROM unnest(CAST(:t AS text[]), CAST(:a AS text[]), CAST(:d AS text[]), CAST(:m AS bigint[]),"
                    "             CAST(:c AS text[]), CAST(:e AS bigint[]), CAST(:p AS timestamp[]),"
                    "             CAST(:ref AS text[]), CAST(:e2e AS text[]))"
                    "      AS r(t, a, d, m, c, e, p, ref, e2e)"
                    " ON CONFLICT (transfer_id, direction) DO NOTHING"
                ),
                {
                    "t": list(columns[0]),
                    "a": list(columns[1]),
                    "d": list(columns[2]),
                    "m": list(columns[3]),
                    "c": list(columns[4]),
                    "e": list(columns[5]),
                    "p": list(columns[6]),
                    "ref": list(columns[7]),
                    "e2e": list(columns[8]),
                },
            )
            return int(result.rowcount or 0)

    async def totals_until(self, account_id: str, until: datetime) -> tuple[int, int, str | None]:
        """(Σ debits, Σ credits, currency) of the account's projected entries posted until `until`."""
        async with self._engine.connect() as conn:
            r = (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS d,"
                        " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS c, min(currency) AS cur"
                        " FROM ledger_entries WHERE account_id = :a AND posted_at <= :until"
                    ),
                    {"a": account_id, "until": until},
                )
            ).one()
            return int(r.d), int(r.c), r.cur

    async def unbalanced_transfers(self, account_id: str, window: Window) -> tuple[int, list[TransferSides]]:
        """(transfers touching the account in the window, those whose projected sides differ), summed by
        the server: a window of a million transfers is counted, not loaded."""
        async with self._engine.connect() as conn:
            r = (
                await conn.execute(
                    text(
                        "WITH t AS (SELECT e.transfer_id, min(e.entry_id) AS first,"
                        " coalesce(sum(e.amount_minor) FILTER (WHERE e.direction = 'DEBIT'), 0) AS d,"
                        " coalesce(sum(e.amount_minor) FILTER (WHERE e.direction = 'CREDIT'), 0) AS c"
                        " FROM ledger_entries e WHERE e.transfer_id IN ("
                        "   SELECT transfer_id FROM ledger_entries"
                        "   WHERE account_id = :a AND posted_at BETWEEN :s AND :e)"
                        " GROUP BY e.transfer_id)"
                        " SELECT count(*) AS n,"
                        " coalesce(array_agg(transfer_id ORDER BY first) FILTER (WHERE d <> c), '{}') AS ids,"
                        " coalesce(array_agg(d ORDER BY first) FILTER (WHERE d <> c), '{}') AS ds,"
                        " coalesce(array_agg(c ORDER BY first) FILTER (WHERE d <> c), '{}') AS cs FROM t"
                    ),
                    {"a": account_id, "s": window.start, "e": window.end},
                )
            ).one()
            return int(r.n), [TransferSides(i, int(d), int(c)) for i, d, c in zip(r.ids, r.ds, r.cs, strict=True)]

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def unresolved_case_counts(self) -> list[tuple[str, str, int]]:
        """(kind, age band, count) of the cases not resolved yet (OPEN or ACKNOWLEDGED), their age
        counted from when they were opened, in the bands of OPEN_CASE_AGE_BANDS."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT kind, CASE"
                    "  WHEN opened_at > now() - interval '1 hour' THEN '<1h'"
                    "  WHEN opened_at > now() - interval '1 day' THEN '1h-1d'"
                    "  WHEN opened_at > now() - interval '7 days' THEN '1d-7d'"
                    "  ELSE '>7d' END AS age, count(*) AS n"
                    " FROM cases WHERE status <> 'RESOLVED' GROUP BY 1, 2"
                )
            )
            return [(r.kind, r.age, int(r.n)) for r in rows]

    async def holds_entry(self, account_id: str, entry_id: int) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                text("SELECT 1 FROM ledger_entries WHERE account_id = :a AND entry_id = :e"),
                {"a": account_id, "e": entry_id},
            )
            return found.first() is not None

    async def entries_in(self, account_id: str, start: datetime, end: datetime) -> list[ProjectedEntry]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    _ENTRY_COLUMNS + " WHERE account_id = :a AND posted_at >= :s AND posted_at < :e ORDER BY entry_id"
                ),
                {"a": account_id, "s": start, "e": end},
            )
            return [ProjectedEntry(*r) for r in rows]

    async def accounts_with_statements(self, account_ids: Sequence[str]) -> list[str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT a FROM unnest(CAST(:a AS text[])) AS a"
                    " WHERE EXISTS (SELECT 1 FROM statements s WHERE s.account_id = a) ORDER BY a"
                ),
                {"a": list(account_ids)},
            )
            return [r.a for r in rows]

    async def knows_account(self, account_id: str) -> bool:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE account_id = :a)"
                    " OR EXISTS (SELECT 1 FROM statements WHERE account_id = :a)"
                ),
                {"a": account_id},
            )
            return bool(found.scalar_one())

    # -- statements ------------------------------------------------------------------------------

    async def find_import(self, account_id: str, sha256: str) -> StoredImport | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT id::text AS id, summary, created_at FROM statement_imports"
                        " WHERE account_id = :a AND sha256 = :h"
                    ),
                    {"a": account_id, "h": sha256},
                )
            ).first()
            return StoredImport(row.id, dict(row.summary), row.created_at) if row else None

    async def previous_closing(self, account_id: str, bank_account: str, before: date | None) -> int | None:
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    text(
                        "SELECT closing_balance_minor FROM statements"
                        " WHERE account_id = :a AND bank_account = :b AND closing_balance_minor IS NOT NULL"
                        " AND (CAST(:d AS date) IS NULL OR closing_date < :d)"
                        " ORDER BY closing_date DESC NULLS LAST, id DESC LIMIT 1"
                    ),
                    {"a": account_id, "b": bank_account, "d": before},
                )
            ).scalar_one_or_none()
            return None if value is None else int(value)

    async def save_import(
        self,
        account_id: str,
        fmt: StatementFormat,
        sha256: str,
        file_name: str,
        statements: Sequence[tuple[Statement, str]],
        summary: dict[str, Any],
        actor: str,
    ) -> StoredImport | None:
        import_id = str(uuid.uuid4())
        async with self._engine.begin() as conn:
            created = (
                await conn.execute(
                    text(
                        "INSERT INTO statement_imports (id, account_id, format, sha256, file_name, statements, lines,"
                        " summary, created_by) VALUES (CAST(:id AS uuid), :a, :f, :h, :n, :s, :l, CAST(:summary AS jsonb), :by)"
                        " ON CONFLICT (account_id, sha256) DO NOTHING RETURNING created_at"
                    ),
                    {
                        "id": import_id,
                        "a": account_id,
                        "f": fmt.value,
                        "h": sha256,
                        "n": file_name,
                        "s": len(statements),
                        "l": sum(len(st.lines) for st, _ in statements),
                        "summary": json.dumps({**summary, "id": import_id}),
                        "by": actor,
                    },
                )
            ).scalar_one_or_none()
            if created is None:
                return None
            ids = (
                await conn.execute(
                    text(
                        "INSERT INTO statements (import_id, account_id, bank_account, statement_ref, currency,"
                        " opening_balance_minor, closing_balance_minor, opening_date, closing_date, balance_check, continuity)"
                        " SELECT CAST(:imp AS uuid), :a, b, r, c, o, cl, od, cd, bc, co FROM unnest("
                        " CAST(:b AS text[]), CAST(:r AS text[]), CAST(:c AS text[]), CAST(:o AS bigint[]),"
                        " CAST(:cl AS bigint[]), CAST(:od AS date[]), CAST(:cd AS date[]), CAST(:bc AS text[]),"
                        " CAST(:co AS text[])) WITH ORDINALITY AS s(b, r, c, o, cl, od, cd, bc, co, n) ORDER BY n RETURNING id"
                    ),
                    {
                        "imp": import_id,
                        "a": account_id,
                        "b": [st.account for st, _ in statements],
                        "r": [st.statement_id for st, _ in statements],
                        "c": [st.currency for st, _ in statements],
                        "o": [st.opening_balance_minor for st, _ in statements],
                        "cl": [st.closing_balance_minor for st, _ in statements],
                        "od": [st.opening_date for st, _ in statements],
                        "cd": [st.closing_date for st, _ in statements],
                        "bc": [st.balance_check.value for st, _ in statements],
                        "co": [continuity for _, continuity in statements],
                    },
                )
            ).scalars()
            lines = _statement_line_records(uuid.UUID(import_id), account_id, list(ids), statements)
            driver = await driver_connection(conn)
            # COPY in chunks: a million lines never sit in memory as rows at once, and the event loop
            # gets a turn between chunks (each one waits for the server's answer).
            while chunk := list(islice(lines, _LINES_PER_COPY)):
                await driver.copy_records_to_table("statement_lines", records=chunk, columns=_STATEMENT_LINE_COLUMNS)
            return StoredImport(import_id, {**summary, "id": import_id}, created)

    async def csv_mapping(self, account_id: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    text("SELECT rules -> 'csv_mapping' FROM matching_rules WHERE account_id = :a AND version = 0"),
                    {"a": account_id},
                )
            ).scalar_one_or_none()
            return dict(value) if value else None

    async def save_csv_mapping(self, account_id: str, mapping: Mapping[str, Any]) -> None:
        # Kept as version 0 of the account's settings row: a mapping is configuration, not a rule version.
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO matching_rules (account_id, version, rules) VALUES (:a, 0, CAST(:r AS jsonb))"
                    " ON CONFLICT (account_id, version) DO UPDATE SET rules = excluded.rules, created_at = now()"
                ),
                {"a": account_id, "r": json.dumps({"csv_mapping": dict(mapping)})},
            )

    async def statements_in(self, account_id: str, first: date, last: date) -> list[StoredStatement]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT s.bank_account, s.currency, s.opening_balance_minor, s.closing_balance_minor, s.opening_date,"
                    " s.closing_date, min(l.value_date) AS first_line, max(l.value_date) AS last_line"
                    " FROM statements s LEFT JOIN statement_lines l ON l.statement_id = s.id"
                    " WHERE s.account_id = :a"
                    " GROUP BY s.id HAVING coalesce(s.closing_date, max(l.value_date)) >= :f"
                    " AND coalesce(s.opening_date, min(l.value_date), s.closing_date) <= :l"
                    " ORDER BY coalesce(s.closing_date, max(l.value_date)), s.id"
                ),
                {"a": account_id, "f": first, "l": last},
            )
            return [StoredStatement(*r) for r in rows]

    async def lines_in(self, account_id: str, first: date, last: date) -> list[StatementLineRecord]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    _LINE_COLUMNS
                    + " WHERE l.account_id = :a AND l.value_date BETWEEN :f AND :l AND l.status = 'BOOKED'"
                    " ORDER BY l.id"
                ),
                {"a": account_id, "f": first, "l": last},
            )
            return [StatementLineRecord(*r) for r in rows]

    async def line_span(self, account_id: str, first: date, last: date) -> tuple[int, date, date] | None:
        async with self._engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*), min(value_date), max(value_date) FROM statement_lines"
                    " WHERE account_id = :a AND value_date BETWEEN :f AND :l AND status = 'BOOKED'"
                ),
                {"a": account_id, "f": first, "l": last},
            )
            count, low, high = found.one()
            return None if low is None else (int(count), low, high)

    async def line_columns(
        self, account_id: str, first: date, last: date, *, casefold: bool
    ) -> AsyncIterator[LineChunk]:
        """The window's booked statement lines as matching reads them, as columns of integers computed by
        the server and sent by binary COPY (no Python object per row), in no particular order:
        days are `date.toordinal()` (NO_CODE for no booking date), currencies integers (equal when the
        currencies are), texts coded (`_coded_query`)."""
        texts = (
            _Text("reference", casefold, "reference", True),
            _Text("end_to_end_id", casefold, "end_to_end", True),
            _Text("description", False, "description", False),
        )
        columns = await self._int8_copy(
            _coded_query(
                "l.id::bigint, l.amount_minor::bigint, l.currency_code, l.value_day, l.booking_day",
                5,
                texts,
                "statement_lines l WHERE l.account_id = $1 AND l.value_date BETWEEN $2 AND $3 AND l.status = 'BOOKED'",
            ),
            (account_id, first, last),
            11,
        )
        await self._code_other_texts(columns, 5, "statement_lines", "id", texts)
        identity, amount, currency, value_day, booking_day, reference, end_to_end, description = columns[:8]
        yield LineChunk(
            identity,
            amount,
            currency,
            value_day,
            booking_day,
            reference,
            end_to_end,
            description,
            np.concatenate(columns[8:]),
        )

    async def entry_columns(
        self, account_id: str, start: datetime, end: datetime, debit_normal: bool, *, casefold: bool
    ) -> AsyncIterator[EntryChunk]:
        """The account's projected entries posted in [start, end) as columns (see `line_columns`), in no
        particular order, amounts signed from the account's view (+ raises its balance), days as
        `date.toordinal()` in UTC."""
        texts = (
            _Text("reference", casefold, "reference", True),
            _Text("end_to_end_id", casefold, "end_to_end", True),
            _Text("transfer_id", casefold, "transfer", True),
        )
        columns = await self._int8_copy(
            _coded_query(
                "entry_id::bigint, CASE WHEN (direction = 'DEBIT') = $4 THEN amount_minor ELSE -amount_minor END::bigint,"
                " currency_code, posted_day",
                4,
                texts,
                "ledger_entries WHERE account_id = $1 AND posted_at >= $2 AND posted_at < $3",
            ),
            (account_id, start, end, debit_normal),
            10,
        )
        await self._code_other_texts(columns, 4, "ledger_entries", "entry_id", texts)
        identity, amount, currency, posted_day, reference, end_to_end, transfer = columns[:7]
        yield EntryChunk(
            identity, amount, currency, posted_day, reference, end_to_end, transfer, np.concatenate(columns[7:])
        )

    async def _int8_copy(self, query: str, args: tuple[Any, ...], width: int) -> list[I64]:
        """The query's `width` bigint columns (none NULL) by binary COPY, parsed as the bytes arrive."""
        rows = _Int8Rows(width)
        async with self._engine.connect() as conn:
            driver = await driver_connection(conn)
            async with driver.transaction(readonly=True):
                await driver.copy_from_query(query, *args, output=rows.feed, format="binary")
        return rows.columns()

    async def _code_other_texts(
        self, columns: list[I64], first_text: int, table: str, key: str, texts: Sequence[_Text]
    ) -> None:
        """Codes the texts the server left to Python (_OTHER_TEXT: not plain ASCII, where stripping and
        case-folding are Python's own): normalised here, hashed by the server as `_coded_query` does."""
        width = len(texts)
        other = np.zeros(columns[0].size, dtype=bool)
        for i in range(width):
            other |= columns[first_text + i] == _OTHER_TEXT
        if not other.any():
            return
        rows = np.flatnonzero(other)
        async with self._engine.connect() as conn:
            driver = await driver_connection(conn)
            ids = columns[0][rows].tolist()
            records = await driver.fetch(
                f"SELECT {key}, {', '.join(t.column for t in texts)} FROM {table} WHERE {key} = ANY($1::bigint[])", ids
            )
            by_id = {int(r[0]): r for r in records}
            normalised = [normalised_text(by_id[i][1 + c], t.casefold) for i in ids for c, t in enumerate(texts)]
            hashed = await driver.fetch(
                f"SELECT CASE WHEN t = '' THEN {NO_CODE} ELSE hashtextextended(t, 0) & {_CODE_MASK} END,"
                f" CASE WHEN t = '' THEN {NO_CODE} ELSE hashtextextended(t, 1) END"
                " FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
                normalised,
            )
        codes = np.array([h[0] for h in hashed], dtype=np.int64).reshape(rows.size, width)
        checks = np.array([h[1] for h in hashed], dtype=np.int64).reshape(rows.size, width)
        for c in range(width):
            columns[first_text + c][rows] = codes[:, c]
            columns[first_text + width + c][rows] = checks[:, c]

    async def _batches(self, query: str, args: tuple[Any, ...], chunk: int) -> AsyncIterator[list[Any]]:
        """The query's rows in chunks through a server-side cursor (a million rows never sit in memory as
        records at once), the next chunk asked for before this one is handed over: the server reads it
        while the caller works on this one."""
        async with self._engine.connect() as conn:
            driver = await driver_connection(conn)
            async with driver.transaction(readonly=True):
                cursor = await driver.cursor(query, *args)
                pending = asyncio.ensure_future(cursor.fetch(chunk))
                try:
                    while records := await pending:
                        pending = asyncio.ensure_future(cursor.fetch(chunk))
                        yield records
                        del records
                finally:
                    if not pending.done():
                        pending.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await pending

    async def lines_by_id(self, ids: Sequence[int]) -> list[StatementLineRecord]:
        # asyncpg's records straight into the records' fields: a large run asks for a hundred thousand.
        async with self._engine.connect() as conn:
            driver = await driver_connection(conn)
            rows = await driver.fetch(_LINE_COLUMNS + " WHERE l.id = ANY($1::bigint[]) ORDER BY l.id", list(ids))
            return [StatementLineRecord(*r) for r in rows]

    async def transfer_ids(self, account_id: str, entry_ids: Sequence[int]) -> dict[int, str]:
        async with self._engine.connect() as conn:
            driver = await driver_connection(conn)
            rows = await driver.fetch(
                "SELECT entry_id, transfer_id FROM ledger_entries WHERE account_id = $1 AND entry_id = ANY($2::bigint[])",
                account_id,
                list(entry_ids),
            )
            return {r[0]: r[1] for r in rows}

    async def entries_by_id(self, account_id: str, entry_ids: Sequence[int]) -> list[ProjectedEntry]:
        async with self._engine.connect() as conn:
            driver = await driver_connection(conn)
            rows = await driver.fetch(
                _ENTRY_COLUMNS + " WHERE account_id = $1 AND entry_id = ANY($2::bigint[]) ORDER BY entry_id",
                account_id,
                list(entry_ids),
            )
            return [ProjectedEntry(*r) for r in rows]

    # -- rules -----------------------------------------------------------------------------------

    async def rules(self, account_id: str) -> tuple[int, dict[str, Any], datetime | None, str]:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT version, rules, created_at, created_by FROM matching_rules"
                        " WHERE account_id = :a AND version > 0 ORDER BY version DESC LIMIT 1"
                    ),
                    {"a": account_id},
                )
            ).first()
            return (row.version, dict(row.rules), row.created_at, row.created_by) if row else (0, {}, None, "")

    async def save_rules(self, account_id: str, rules: Mapping[str, Any], actor: str) -> int:
        async with self._engine.begin() as conn:
            # The account's settings row (version 0) serialises concurrent saves of one account.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:a))"), {"a": "rules:" + account_id})
            version = (
                await conn.execute(
                    text(
                        "INSERT INTO matching_rules (account_id, version, rules, created_by)"
                        " SELECT :a, coalesce(max(version), 0) + 1, CAST(:r AS jsonb), :by"
                        " FROM matching_rules WHERE account_id = :a RETURNING version"
                    ),
                    {"a": account_id, "r": json.dumps(dict(rules)), "by": actor},
                )
            ).scalar_one()
            return int(version)

    # -- runs, matches, cases --------------------------------------------------------------------

    async def record_run(
        self,
        account_id: str,
        window: Window,
        plan: CasePlan,
        opened: Mapping[str, str],
        known_cases: int,
        run: RunToSave,
    ) -> tuple[str, datetime]:
        """Writes a run's case changes with their history, and the run with its matches, on two
        connections at once; the cases commit first, the run only once they have. `opened` holds the
        ids drawn for the plan's new cases. Raises CasesChanged when the account's cases are no longer
        the `known_cases` the plan was made from (another run wrote some since)."""
        run_id = str(uuid.uuid4())
        async with self._engine.begin() as run_conn:
            async with self._engine.begin() as cases_conn:
                # One run at a time writes an account's cases: they are only ever added here, under this
                # lock, so an unchanged count means the plan's new cases are new.
                await cases_conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended('payrecon:cases:' || :a, 0))"),
                    {"a": account_id},
                )
                count = (
                    await cases_conn.execute(
                        text("SELECT count(*) FROM cases WHERE account_id = :a"), {"a": account_id}
                    )
                ).scalar_one()
                if count != known_cases:
                    raise CasesChanged(f"{count - known_cases} cases of {account_id!r} were written meanwhile")
                _, created = await asyncio.gather(
                    self._write_cases(cases_conn, account_id, window, plan, opened),
                    self._write_run(run_conn, run_id, run),
                )
        return run_id, created

    async def _write_run(self, conn: Any, run_id: str, run: RunToSave) -> datetime:
        report, rendered = run.report, run.rendered
        head = {k: v for k, v in rendered.items() if k != "discrepancies"}
        created: datetime = (
            await conn.execute(
                text(
                    "INSERT INTO runs (id, account_id, period_start, period_end, transaction_count,"
                    " discrepancy_count, balanced, report, rules_version, watermark)"
                    " VALUES (CAST(:id AS uuid), :a, :s, :e, :tc, :dc, :b, CAST(:r AS jsonb), :v, :w)"
                    " RETURNING created_at"
                ),
                {
                    "id": run_id,
                    "a": report.account_id,
                    "s": report.window.start,
                    "e": report.window.end,
                    "tc": report.transaction_count,
                    "dc": len(report.discrepancies),
                    "b": report.balanced,
                    "r": json.dumps({**head, "report_id": run_id}, default=str),
                    "v": run.rules_version,
                    "w": run.watermark,
                },
            )
        ).scalar_one()
        if report.discrepancies:
            await self._save_discrepancies(conn, run_id, report.discrepancies)
        matches = run.matches
        if matches:
            await (await driver_connection(conn)).copy_records_to_table(
                "matches",
                records=[
                    (
                        uuid.UUID(run_id),
                        report.account_id,
                        m.kind,
                        list(m.statement_line_ids),
                        list(m.transfer_ids),
                        m.rule,
                        m.confidence,
                        json.dumps(dict(m.breakdown)),
                        m.amount_difference_minor,
                    )
                    for m in matches
                ],
                columns=_MATCH_COLUMNS,
            )
        if run.pairs is not None and len(run.pairs):
            await self._save_pairs(conn, run_id, report.account_id, run.pairs)
        return created

    @staticmethod
    async def _save_discrepancies(conn: Any, run_id: str, listed: Sequence[Discrepancy]) -> None:
        """The report's discrepancies by binary COPY, a row each (`run_discrepancies`): every one, where
        an answer lists the first REPORT_LISTS_AT_MOST."""
        run = uuid.UUID(run_id)
        await (await driver_connection(conn)).copy_records_to_table(
            "run_discrepancies",
            records=(
                (
                    run,
                    n,
                    d.kind,
                    d.severity,
                    d.message,
                    d.transaction_id,
                    d.actual_minor,
                    d.currency,
                    d.case_id,
                    d.statement_line_ids,
                    d.transfer_ids,
                )
                for n, d in enumerate(listed)
            ),
            columns=("run_id", "n", *_DISCREPANCY_COLUMNS),
        )

    async def _with_discrepancies(self, conn: Any, rows: Sequence[Any]) -> list[StoredRun]:
        """Stored runs (rows with id, created_at, report, discrepancy_count) with their reports' first
        REPORT_LISTS_AT_MOST discrepancies, in the order listed, and their count."""
        listed: dict[str, list[dict[str, Any]]] = {r.id: [] for r in rows}
        if rows:
            records = await (await driver_connection(conn)).fetch(
                "SELECT r.id::text, " + ", ".join(f"d.{c}" for c in _DISCREPANCY_COLUMNS) + ""
                " FROM unnest($1::uuid[]) AS r(id) CROSS JOIN LATERAL (SELECT * FROM run_discrepancies"
                " WHERE run_id = r.id ORDER BY n LIMIT $2) AS d ORDER BY r.id, d.n",
                [uuid.UUID(r.id) for r in rows],
                REPORT_LISTS_AT_MOST,
            )
            for record in records:
                d = dict(zip(_DISCREPANCY_COLUMNS, record[1:], strict=True))
                d["statement_line_ids"] = list(d["statement_line_ids"])
                d["ledger_transfer_ids"] = list(d["ledger_transfer_ids"])
                listed[record[0]].append(d)
        return [
            StoredRun(
                r.id,
                r.created_at,
                {
                    **r.report,
                    "discrepancies": listed[r.id],
                    "discrepancy_count": int(r.discrepancy_count),
                    "discrepancies_truncated": r.discrepancy_count > len(listed[r.id]),
                },
            )
            for r in rows
        ]

    @staticmethod
    async def _save_pairs(conn: Any, run_id: str, account_id: str, pairs: PairMatches) -> None:
        """One-to-one matches from columns: a match_pairs row of arrays per _PAIRS_PER_ROW pairs, sent by
        binary COPY with the arrays' bytes made by numpy (no Python object per pair, no server-side
        aggregation)."""
        head = _copy_field(uuid.UUID(run_id).bytes), _copy_field(account_id.encode())
        rules = _copy_field(_binary_array(_TEXT_OID, [rule.encode() for rule in pairs.rules]))
        breakdowns = _copy_field(b"\x01" + json.dumps(pairs.breakdowns).encode())  # jsonb, version 1

        async def rows() -> AsyncIterator[bytes]:
            yield _COPY_HEADER
            for chunk, start in enumerate(range(0, len(pairs), _PAIRS_PER_ROW)):
                part = slice(start, start + _PAIRS_PER_ROW)
                yield b"".join(
                    (
                        (11).to_bytes(2, "big"),
                        head[0],
                        _copy_field(chunk.to_bytes(4, "big")),
                        head[1],
                        _copy_field(_numeric_array(_INT8, pairs.statement_line_id[part])),
                        _copy_field(_numeric_array(_INT8, pairs.entry_id[part])),
                        _copy_field(_numeric_array(_INT2, pairs.rule_index[part])),
                        rules,
                        _copy_field(_numeric_array(_FLOAT8, pairs.confidence[part])),
                        _copy_field(_numeric_array(_INT4, pairs.breakdown_index[part])),
                        breakdowns,
                        _copy_field(_numeric_array(_INT8, pairs.amount_difference_minor[part])),
                    )
                )
            yield b"\xff\xff"

        await (await driver_connection(conn)).copy_to_table(
            "match_pairs",
            source=rows(),
            columns=(
                "run_id",
                "chunk",
                "account_id",
                "statement_line_ids",
                "entry_ids",
                "rule_index",
                "rules",
                "confidences",
                "breakdown_index",
                "breakdowns",
                "amount_differences",
            ),
            format="binary",
        )

    async def runs(self, account_id: str | None, before: tuple[datetime, str] | None, limit: int) -> list[StoredRun]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT id::text AS id, created_at, report, discrepancy_count FROM runs"
                    " WHERE (CAST(:a AS text) IS NULL OR account_id = :a)"
                    " AND (CAST(:t AS timestamptz) IS NULL OR (created_at, id::text) < (:t, :i))"
                    " ORDER BY created_at DESC, id::text DESC LIMIT :n"
                ),
                {"a": account_id, "t": before[0] if before else None, "i": before[1] if before else "", "n": limit},
            )
            return await self._with_discrepancies(conn, list(rows))

    async def run(self, run_id: str) -> StoredRun | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT id::text AS id, created_at, report, discrepancy_count FROM runs WHERE id::text = :i"),
                    {"i": run_id},
                )
            ).first()
            return (await self._with_discrepancies(conn, [row]))[0] if row else None

    async def run_matches(self, run_id: str, chunk: int = _EXPORT_ROWS) -> AsyncIterator[list[ExportMatch]]:
        """The run's matches: those stored one per row, then the one-to-one pairs stored in columns (with
        their entries' transfer ids), each with the sum and currency of its statement lines."""
        async for records in self._batches(
            "WITH m AS ("
            "   SELECT 0 AS part, m.id AS n, m.kind, m.rule, m.confidence, m.breakdown, m.amount_difference_minor,"
            "   m.statement_line_ids, m.transfer_ids FROM matches m WHERE m.run_id = $1"
            " UNION ALL"
            "   SELECT 1, p.chunk::bigint * 1000000000 + u.n, 'ONE_TO_ONE', p.rules[u.rule + 1], u.confidence,"
            "   p.breakdowns -> u.breakdown, u.difference, ARRAY[u.line_id], ARRAY[e.transfer_id]"
            "   FROM match_pairs p"
            "   CROSS JOIN LATERAL unnest(p.statement_line_ids, p.entry_ids, p.rule_index, p.confidences,"
            "     p.breakdown_index, p.amount_differences) WITH ORDINALITY AS u(line_id, entry_id, rule, confidence,"
            "     breakdown, difference, n)"
            "   JOIN ledger_entries e ON e.account_id = p.account_id AND e.entry_id = u.entry_id"
            "   WHERE p.run_id = $1)"
            " SELECT m.kind, m.rule, m.confidence, m.breakdown::text, m.amount_difference_minor, m.statement_line_ids,"
            " m.transfer_ids, s.amount, s.currency FROM m LEFT JOIN LATERAL ("
            "   SELECT sum(l.amount_minor) AS amount, min(l.currency) AS currency FROM statement_lines l"
            "   WHERE l.id = ANY(m.statement_line_ids)) s ON true"
            " ORDER BY m.part, m.n",
            (uuid.UUID(run_id),),
            chunk,
        ):
            yield [
                ExportMatch(
                    r[0],
                    r[1],
                    r[2],
                    json.loads(r[3]),
                    r[4],
                    tuple(r[5]),
                    tuple(r[6]),
                    None if r[7] is None else int(r[7]),
                    (r[8] or "").strip(),
                )
                for r in records
            ]

    async def run_cases(self, run_id: str, chunk: int = _EXPORT_ROWS) -> AsyncIterator[list[ExportCase]]:
        async for records in self._batches(
            "SELECT d.case_id, d.type, coalesce(c.status, ''), d.severity, d.message, d.amount_minor, d.currency,"
            " d.statement_line_ids, d.ledger_transfer_ids,"
            " coalesce(" + _case_evidence("$2") + ", '{}')::text"
            " FROM run_discrepancies d LEFT JOIN cases c ON c.id::text = d.case_id"
            " WHERE d.run_id = $1 ORDER BY d.n",
            (uuid.UUID(run_id), _EXPONENTS_JSON),
            chunk,
        ):
            yield [
                ExportCase(
                    r[0] or "",
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    tuple(r[7]),
                    tuple(r[8]),
                    json.loads(r[9]),
                )
                for r in records
            ]

    async def cases_of(self, account_id: str, window: Window) -> tuple[dict[str, CaseState], list[str]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT id::text AS id, fingerprint, status, window_start, window_end FROM cases WHERE account_id = :a"
                ),
                {"a": account_id},
            )
            existing: dict[str, CaseState] = {}
            covered: list[str] = []
            for r in rows:
                existing[r.fingerprint] = CaseState(r.id, r.fingerprint, CaseStatus(r.status))
                if r.window_start is not None and r.window_start >= window.start and r.window_end <= window.end:
                    covered.append(r.fingerprint)
            return existing, covered

    async def _write_cases(
        self, conn: Any, account_id: str, window: Window, plan: CasePlan, opened: Mapping[str, str]
    ) -> None:
        if plan.open:
            await self._open_cases(conn, account_id, window, plan.open, opened)
        if plan.reopen:
            await conn.execute(
                text("UPDATE cases SET status = 'OPEN', updated_at = now() WHERE id::text = ANY(CAST(:i AS text[]))"),
                {"i": [case_id for case_id, _ in plan.reopen]},
            )
            await self._events(
                conn, [c for c, _ in plan.reopen], CaseEventKind.REOPENED, "a later run found the break again"
            )
        refresh = [*plan.reopen, *plan.still_open]
        if refresh:
            await self._stage_findings(conn, refresh)
            await (await driver_connection(conn)).execute(
                "UPDATE cases AS c SET (evidence, evidence_rule, days_apart, line_ids, entry_ids, debit_normal)"
                " = (" + _STAGED_EVIDENCE + "), message = f.message, amount_minor = f.amount_minor"
                " FROM found_cases f WHERE c.id = f.case_id"
                # A break found again as it was (most of a rerun's) leaves its case's row alone.
                " AND (c.evidence, c.evidence_rule, c.days_apart, c.line_ids, c.entry_ids, c.debit_normal, c.message,"
                " c.amount_minor) IS DISTINCT FROM (" + _STAGED_EVIDENCE + ", f.message, f.amount_minor)"
            )
        if plan.auto_resolve:
            await conn.execute(
                text(
                    "UPDATE cases SET status = 'RESOLVED', updated_at = now() WHERE id::text = ANY(CAST(:i AS text[]))"
                ),
                {"i": list(plan.auto_resolve)},
            )
            await self._events(
                conn, list(plan.auto_resolve), CaseEventKind.RESOLVED, "a later run no longer finds the break"
            )

    @staticmethod
    async def _stage_findings(conn: Any, refresh: Sequence[tuple[str, Finding]]) -> None:
        """The findings of existing cases (their ids) by binary COPY into a temporary table, a chunk at a
        time, for one UPDATE to refresh the cases from."""
        # Through SQLAlchemy, which begins the transaction (ON COMMIT DROP outside one drops it at once).
        await conn.execute(
            text(
                "CREATE TEMPORARY TABLE found_cases (case_id uuid, message text, amount_minor bigint, evidence jsonb,"
                " rule text, days_apart integer, line_ids bigint[], entry_ids bigint[], debit_normal boolean)"
                " ON COMMIT DROP"
            )
        )
        driver = await driver_connection(conn)
        for start in range(0, len(refresh), _CASES_PER_COPY):
            await driver.copy_records_to_table(
                "found_cases",
                records=[
                    (uuid.UUID(case_id), f.message, f.amount_minor, *_stored_evidence(f))
                    for case_id, f in refresh[start : start + _CASES_PER_COPY]
                ],
            )

    @staticmethod
    async def _open_cases(
        conn: Any, account_id: str, window: Window, found: Sequence[Finding], opened: Mapping[str, str]
    ) -> None:
        """New cases (ids drawn by the caller) by binary COPY, a chunk at a time (a case's opening is its
        history's first event, `_OPENING`, not a row of its own):
        evidence given as a document is stored as it is; evidence that names records by id
        (`StoredRecordsEvidence`) is stored as those ids and rendered when the case is read
        (`_case_evidence`)."""
        driver = await driver_connection(conn)
        for start in range(0, len(found), _CASES_PER_COPY):
            chunk = found[start : start + _CASES_PER_COPY]
            ids = [uuid.UUID(opened[f.fingerprint]) for f in chunk]
            await driver.copy_records_to_table(
                "cases",
                records=[
                    (
                        case_id,
                        account_id,
                        f.kind,
                        f.fingerprint,
                        "OPEN",
                        f.severity,
                        f.message,
                        f.amount_minor,
                        f.currency,
                        *_stored_evidence(f),
                        window.start,
                        window.end,
                    )
                    for case_id, f in zip(ids, chunk, strict=True)
                ],
                columns=_OPENED_CASE_COLUMNS,
            )

    @staticmethod
    async def _events(conn: Any, case_ids: list[str], kind: CaseEventKind, reason: str, actor: str = "system") -> None:
        if case_ids:
            await conn.execute(
                text(
                    "INSERT INTO case_events (case_id, action, actor, reason)"
                    " SELECT CAST(i AS uuid), :k, :who, :why FROM unnest(CAST(:i AS text[])) AS i"
                ),
                {"i": case_ids, "k": kind.value, "who": actor, "why": reason},
            )

    async def cases(self, where: CaseFilter, before: tuple[datetime, str] | None, limit: int) -> list[CaseRecord]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    _CASE_COLUMNS + " WHERE (CAST(:a AS text) IS NULL OR account_id = :a)"
                    " AND (CAST(:k AS text) IS NULL OR kind = :k) AND (CAST(:s AS text) IS NULL OR status = :s)"
                    " AND (CAST(:ob AS timestamptz) IS NULL OR opened_at <= :ob)"
                    " AND (CAST(:t AS timestamptz) IS NULL OR (opened_at, id::text) < (:t, :i))"
                    " ORDER BY opened_at DESC, id::text DESC LIMIT :n"
                ),
                {
                    "a": where.account_id,
                    "k": where.kind,
                    "s": where.status.value if where.status else None,
                    "ob": where.opened_before,
                    "t": before[0] if before else None,
                    "i": before[1] if before else "",
                    "n": limit,
                    "exponents": _EXPONENTS_JSON,
                },
            )
            return [_case(r) for r in rows]

    async def case(self, case_id: str, *, lock: bool = False) -> CaseRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(_CASE_COLUMNS + " WHERE id::text = :i"), {"i": case_id, "exponents": _EXPONENTS_JSON}
                )
            ).first()
            if row is None:
                return None
            events = await conn.execute(
                text(
                    "SELECT action, actor, reason, at FROM (SELECT " + _OPENING + ", opened_at AS at, 0::bigint AS n"
                    " FROM cases WHERE id::text = :i"
                    " UNION ALL SELECT action, actor, reason, at, id FROM case_events WHERE case_id::text = :i) AS h"
                    " ORDER BY n"
                ),
                {"i": case_id},
            )
            return _case(row, [CaseEventRecord(*e) for e in events])

    async def changes_since(
        self, account_id: str | None, after: tuple[datetime, str], limit: int
    ) -> tuple[list[CaseRecord], list[StoredRun]]:
        async with self._engine.connect() as conn:
            params = {"a": account_id, "t": after[0], "i": after[1], "n": limit, "exponents": _EXPONENTS_JSON}
            cases = await conn.execute(
                text(
                    _CASE_COLUMNS + " WHERE (CAST(:a AS text) IS NULL OR account_id = :a)"
                    " AND (updated_at, id::text) > (:t, :i) ORDER BY updated_at, id::text LIMIT :n"
                ),
                params,
            )
            runs = await conn.execute(
                text(
                    "SELECT id::text AS id, created_at, report, discrepancy_count FROM runs WHERE (CAST(:a AS text) IS NULL OR account_id = :a)"
                    " AND (created_at, id::text) > (:t, :i) ORDER BY created_at, id::text LIMIT :n"
                ),
                params,
            )
            return [_case(r) for r in cases], await self._with_discrepancies(conn, list(runs))

    async def transition_case(
        self,
        case_id: str,
        status: CaseStatus,
        event: str,
        actor: str,
        reason: str,
        adjustment_transfer_id: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE cases SET status = :s, updated_at = now(),"
                    " adjustment_transfer_id = coalesce(:adj, adjustment_transfer_id) WHERE id::text = :i"
                ),
                {"s": status.value, "adj": adjustment_transfer_id, "i": case_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO case_events (case_id, action, actor, reason) VALUES (CAST(:i AS uuid), :k, :who, :why)"
                ),
                {"i": case_id, "k": event, "who": actor, "why": reason},
            )


# A case as read (`:exponents`: _EXPONENTS_JSON).
_CASE_COLUMNS = (
    "SELECT id::text AS id, account_id, kind, status, severity, message, amount_minor, currency, "
    + _case_evidence(":exponents")
    + " AS evidence, opened_at, updated_at, adjustment_transfer_id FROM cases c"
)


def _case(r: Any, history: list[CaseEventRecord] | None = None) -> CaseRecord:
    return CaseRecord(
        r.id,
        r.account_id,
        r.kind,
        CaseStatus(r.status),
        r.severity,
        r.message,
        r.amount_minor,
        r.currency,
        dict(r.evidence),
        r.opened_at,
        r.updated_at,
        r.adjustment_transfer_id,
        history or [],
    )
