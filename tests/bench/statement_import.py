"""Statement import at scale: a generated N-entry camt.053.001.02 file and an N-row CSV, each parsed by
the statement parser port and stored by `ReconciliationStore.save_import` into a freshly migrated
database, the way `ReconciliationService.import_statement` does it — without the matching step that
follows an import (that is the reconcile benchmark's subject).

    python -m tests.bench.statement_import [N] [--formats camt053,csv]   # N defaults to 1,000,000

PostgreSQL comes from PAYRECON_DATABASE_URL (a server URL: a fresh database is created on it and
dropped afterwards), else an embedded one is started. Each format is measured in a child process of
its own, so its peak RSS (`ru_maxrss`) is that import's alone. Every parsed amount and line number is
compared with what the generator wrote, and the stored rows are counted and summed.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import hashlib
import json
import os
import random
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

DEFAULT_ENTRIES = 1_000_000
RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Statement import"
ACCOUNT_ID = "bench-statement-import"
IBAN = "DE89370400440532013000"
CURRENCY = "EUR"
FIRST_DAY = date(2026, 1, 1)
PERIOD_DAYS = 90
TARGET_SECONDS = 60
# The same benchmark on the parsers and store before they were reworked (commit 742861d), on this machine.
BEFORE = (
    "Before the rework (commit 742861d, same benchmark and machine, 2026-11-26, load average 6-8 on 2 cores):"
    " camt.053 parse 428.1 s, store 32.1 s, total 469.6 s, peak RSS 2,535 MiB; CSV parse 187.5 s, store 60.3 s,"
    " total 251.2 s, peak RSS 2,059 MiB. That run did not record CPU time, and the load differed: side by side"
    " in one process, the old camt parser takes 1.8x the CPU of this one (20,000 entries) and the old CSV parser"
    " 2.8x (100,000 rows, more at a million, where its garbage collections grow)."
    " Before camt was read in parts (commit 587d6af, one reader on one core, 02:25 UTC, load average 3.3):"
    " camt.053 parse 208.9 s (120.9 s CPU), store 18.8 s, total 228.7 s, peak RSS 1,857 MiB."
)

# The column mapping a bank's CSV export is imported with (German-style numbers and dates).
CSV_MAPPING: dict[str, Any] = {
    "date": "Booking date",
    "date_format": "%d.%m.%Y",
    "value_date": "Value date",
    "amount": "Amount",
    "decimal_separator": ",",
    "thousands_separator": ".",
    "delimiter": ";",
    "account": IBAN,
    "currency_column": "Currency",
    "reference": "Bank reference",
    "end_to_end_id": "End-to-end reference",
    "counterparty": "Counterparty",
    "description": ["Description"],
    "balance": "Balance",
}

_COMPANIES = (
    "Alpha Trading GmbH",
    "Beta Logistics BV",
    "Gamma SARL",
    "Müller & Söhne KG",
    "Nordwind Energie AG",
    "Café Olé S.L.",
    "Zeta Software Ltd",
    "Łódź Textiles Sp. z o.o.",
    "Omega Retail SA",
    "Kappa Foods Oy",
)
_FIRST_NAMES = ("Anna", "Jan", "Maria", "Luca", "Sofia", "Noah", "Emma", "Mateo", "Chloé", "Jürgen")
_LAST_NAMES = ("Schmidt", "Rossi", "García", "Dubois", "Nowak", "Jansen", "Olsen", "Weiß", "Silva", "Keller")


def _counterparty(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_COMPANIES)
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def _decimal(minor: int) -> str:
    """1234567 → '12345.67' (camt writes unsigned amounts with a dot and no grouping)."""
    return f"{minor // 100}.{minor % 100:02d}"


def _german(minor: int) -> str:
    """-1234567 → '-12.345,67'."""
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 100)
    return f"{sign}{units:,}".replace(",", ".") + f",{cents:02d}"


@dataclass(frozen=True)
class Plan:
    """What the generator wrote: the signed amount of each entry, in order, and the balances."""

    amounts: array.array[int]
    opening_minor: int

    @property
    def closing_minor(self) -> int:
        return self.opening_minor + sum(self.amounts)


def plan_amounts(entries: int, seed: int = 7) -> Plan:
    rng = random.Random(seed)
    amounts = array.array("q")
    for _ in range(entries):
        magnitude = int(rng.lognormvariate(9.5, 1.6)) + 1  # cents: mostly tens to thousands of euros
        amounts.append(magnitude if rng.random() < 0.55 else -magnitude)
    return Plan(amounts, opening_minor=250_000_000)


# --- camt.053.001.02 --------------------------------------------------------------------------------


def _camt_header(plan: Plan, entries: int) -> str:
    opening, closing = plan.opening_minor, plan.closing_minor
    credits = [a for a in plan.amounts if a > 0]
    debits = [-a for a in plan.amounts if a < 0]
    last_day = FIRST_DAY + timedelta(days=PERIOD_DAYS - 1)

    def balance(code: str, minor: int, day: date) -> str:
        return (
            "      <Bal>\n"
            "        <Tp>\n"
            "          <CdOrPrtry>\n"
            f"            <Cd>{code}</Cd>\n"
            "          </CdOrPrtry>\n"
            "        </Tp>\n"
            f'        <Amt Ccy="{CURRENCY}">{_decimal(abs(minor))}</Amt>\n'
            f"        <CdtDbtInd>{'CRDT' if minor >= 0 else 'DBIT'}</CdtDbtInd>\n"
            "        <Dt>\n"
            f"          <Dt>{day.isoformat()}</Dt>\n"
            "        </Dt>\n"
            "      </Bal>\n"
        )

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <BkToCstmrStmt>\n"
        "    <GrpHdr>\n"
        "      <MsgId>BENCH-053-0001</MsgId>\n"
        f"      <CreDtTm>{last_day.isoformat()}T22:00:00+01:00</CreDtTm>\n"
        "    </GrpHdr>\n"
        "    <Stmt>\n"
        f"      <Id>STMT-{last_day.isoformat()}</Id>\n"
        "      <ElctrncSeqNb>1</ElctrncSeqNb>\n"
        f"      <CreDtTm>{last_day.isoformat()}T22:00:00+01:00</CreDtTm>\n"
        "      <FrToDt>\n"
        f"        <FrDtTm>{FIRST_DAY.isoformat()}T00:00:00+01:00</FrDtTm>\n"
        f"        <ToDtTm>{last_day.isoformat()}T23:59:59+01:00</ToDtTm>\n"
        "      </FrToDt>\n"
        "      <Acct>\n"
        "        <Id>\n"
        f"          <IBAN>{IBAN}</IBAN>\n"
        "        </Id>\n"
        f"        <Ccy>{CURRENCY}</Ccy>\n"
        "        <Svcr>\n"
        "          <FinInstnId>\n"
        "            <BIC>COBADEFFXXX</BIC>\n"
        "          </FinInstnId>\n"
        "        </Svcr>\n"
        "      </Acct>\n"
        + balance("OPBD", opening, FIRST_DAY)
        + balance("CLBD", closing, last_day)
        + "      <TxsSummry>\n"
        "        <TtlNtries>\n"
        f"          <NbOfNtries>{entries}</NbOfNtries>\n"
        f"          <Sum>{_decimal(sum(credits) + sum(debits))}</Sum>\n"
        f"          <TtlNetNtryAmt>{_decimal(abs(closing - opening))}</TtlNetNtryAmt>\n"
        f"          <CdtDbtInd>{'CRDT' if closing >= opening else 'DBIT'}</CdtDbtInd>\n"
        "        </TtlNtries>\n"
        "        <TtlCdtNtries>\n"
        f"          <NbOfNtries>{len(credits)}</NbOfNtries>\n"
        f"          <Sum>{_decimal(sum(credits))}</Sum>\n"
        "        </TtlCdtNtries>\n"
        "        <TtlDbtNtries>\n"
        f"          <NbOfNtries>{len(debits)}</NbOfNtries>\n"
        f"          <Sum>{_decimal(sum(debits))}</Sum>\n"
        "        </TtlDbtNtries>\n"
        "      </TxsSummry>\n"
    )


_CAMT_FOOTER = "    </Stmt>\n  </BkToCstmrStmt>\n</Document>\n"


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _party(credit: bool, name: str, indent: str) -> str:
    role = "Dbtr" if credit else "Cdtr"
    return (
        f"{indent}<RltdPties>\n"
        f"{indent}  <{role}>\n"
        f"{indent}    <Nm>{_xml(name)}</Nm>\n"
        f"{indent}  </{role}>\n"
        f"{indent}</RltdPties>\n"
    )


def _bank_code(family: str, sub_family: str) -> str:
    return (
        "        <BkTxCd>\n"
        "          <Domn>\n"
        "            <Cd>PMNT</Cd>\n"
        "            <Fmly>\n"
        f"              <Cd>{family}</Cd>\n"
        f"              <SubFmlyCd>{sub_family}</SubFmlyCd>\n"
        "            </Fmly>\n"
        "          </Domn>\n"
        "        </BkTxCd>\n"
    )


def _camt_entry(index: int, amount: int, day: date, rng: random.Random) -> str:
    """One Ntry: a single payment (most), a batch of 2-5 TxDtls (8 %), a reversal (2 %), and 1 % with
    a foreign-currency instructed amount. References are unique per entry, names repeat."""
    credit = amount > 0
    magnitude = abs(amount)
    kind = rng.random()
    reversal = kind < 0.02
    batch = 0.02 <= kind < 0.10
    foreign = 0.10 <= kind < 0.11
    value_day = day - timedelta(days=1) if rng.random() < 0.1 else day
    reference = f"{day:%Y%m%d}{index:010d}"
    parts = [
        "      <Ntry>\n",
        f"        <NtryRef>{index + 1}</NtryRef>\n",
        f'        <Amt Ccy="{CURRENCY}">{_decimal(magnitude)}</Amt>\n',
        f"        <CdtDbtInd>{'CRDT' if credit else 'DBIT'}</CdtDbtInd>\n",
    ]
    if reversal:
        parts.append("        <RvslInd>true</RvslInd>\n")
    parts += [
        "        <Sts>BOOK</Sts>\n",
        f"        <BookgDt>\n          <Dt>{day.isoformat()}</Dt>\n        </BookgDt>\n",
        f"        <ValDt>\n          <Dt>{value_day.isoformat()}</Dt>\n        </ValDt>\n",
        f"        <AcctSvcrRef>{reference}</AcctSvcrRef>\n",
    ]
    if reversal:
        parts.append(_bank_code("RCDT" if not credit else "ICDT", "RRTN"))
    elif batch:
        parts.append(_bank_code("RCDT" if credit else "ICDT", "BOOK"))
    else:
        parts.append(_bank_code("RCDT" if credit else "ICDT", "ESCT" if rng.random() < 0.8 else "DMCT"))
    parts.append("        <NtryDtls>\n")
    if batch:
        count = rng.randint(2, 5) if magnitude >= 5 else 1
        cuts = sorted(rng.sample(range(1, magnitude), count - 1)) if count > 1 else []
        shares = [b - a for a, b in zip([0, *cuts], [*cuts, magnitude], strict=True)]
        parts.append(f"          <Btch>\n            <NbOfTxs>{count}</NbOfTxs>\n          </Btch>\n")
        for number, share in enumerate(shares, start=1):
            parts += [
                "          <TxDtls>\n",
                "            <Refs>\n",
                f"              <AcctSvcrRef>{reference}-{number}</AcctSvcrRef>\n",
                f"              <EndToEndId>E2E-{index:09d}-{number}</EndToEndId>\n",
                "            </Refs>\n",
                "            <AmtDtls>\n",
                "              <TxAmt>\n",
                f'                <Amt Ccy="{CURRENCY}">{_decimal(share)}</Amt>\n',
                "              </TxAmt>\n",
                "            </AmtDtls>\n",
                _party(credit, _counterparty(rng), "            "),
                "            <RmtInf>\n",
                f"              <Ustrd>Invoice {index:09d}/{number}</Ustrd>\n",
                "            </RmtInf>\n",
                "          </TxDtls>\n",
            ]
    else:
        end_to_end = "NOTPROVIDED" if rng.random() < 0.05 else f"E2E-{index:09d}"
        parts += ["          <TxDtls>\n", "            <Refs>\n"]
        parts.append(f"              <EndToEndId>{end_to_end}</EndToEndId>\n")
        parts.append("            </Refs>\n")
        if foreign:
            parts.append(
                "            <AmtDtls>\n"
                "              <InstdAmt>\n"
                f'                <Amt Ccy="USD">{_decimal(magnitude * 108 // 100 + 1)}</Amt>\n'
                "              </InstdAmt>\n"
                "            </AmtDtls>\n"
            )
        parts.append(_party(credit != reversal, _counterparty(rng), "            "))
        parts.append("            <RmtInf>\n")
        if rng.random() < 0.3:
            parts.append(
                "              <Strd>\n"
                "                <CdtrRefInf>\n"
                f"                  <Ref>RF18{index:012d}</Ref>\n"
                "                </CdtrRefInf>\n"
                "              </Strd>\n"
            )
        else:
            parts.append(f"              <Ustrd>Invoice {index:09d} order {rng.randint(1, 99999)}</Ustrd>\n")
        parts += ["            </RmtInf>\n", "          </TxDtls>\n"]
    parts.append("        </NtryDtls>\n")
    if reversal:
        parts.append("        <AddtlNtryInf>Return of a SEPA credit transfer</AddtlNtryInf>\n")
    parts.append("      </Ntry>\n")
    return "".join(parts)


def _day_of(index: int, entries: int) -> date:
    return FIRST_DAY + timedelta(days=index * PERIOD_DAYS // entries)


def write_camt053(path: Path, plan: Plan, seed: int = 11) -> array.array[int]:
    """Writes the file; returns the line number of each <Ntry>."""
    rng = random.Random(seed)
    entries = len(plan.amounts)
    lines = array.array("I")
    with path.open("w", encoding="utf-8", newline="\n") as out:
        header = _camt_header(plan, entries)
        out.write(header)
        line = header.count("\n") + 1
        chunk: list[str] = []
        for index, amount in enumerate(plan.amounts):
            text = _camt_entry(index, amount, _day_of(index, entries), rng)
            lines.append(line)
            line += text.count("\n")
            chunk.append(text)
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
        out.write(_CAMT_FOOTER)
    return lines


# --- CSV --------------------------------------------------------------------------------------------

_CSV_HEADER = (
    "Booking date;Value date;Counterparty;Description;Bank reference;End-to-end reference;Amount;Currency;Balance\n"
)


def write_csv(path: Path, plan: Plan, seed: int = 13) -> array.array[int]:
    """Writes the export (running balance after each row, a few quoted descriptions holding the
    delimiter or a line break); returns the line number each row starts on."""
    rng = random.Random(seed)
    entries = len(plan.amounts)
    lines = array.array("I")
    balance = plan.opening_minor
    line = 2
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(_CSV_HEADER.replace("\n", "\r\n"))
        chunk: list[str] = []
        for index, amount in enumerate(plan.amounts):
            balance += amount
            day = _day_of(index, entries)
            value_day = day - timedelta(days=1) if rng.random() < 0.1 else day
            shape = rng.random()
            if shape < 0.0005:
                description = f'"Invoice {index:09d}\r\nsecond line of the remittance"'
            elif shape < 0.02:
                description = f'"Invoice {index:09d}; order {rng.randint(1, 99999)}"'
            else:
                description = f"Invoice {index:09d} order {rng.randint(1, 99999)}"
            end_to_end = "" if rng.random() < 0.05 else f"E2E-{index:09d}"
            row = (
                f"{day:%d.%m.%Y};{value_day:%d.%m.%Y};{_counterparty(rng)};{description};"
                f"{day:%Y%m%d}{index:010d};{end_to_end};{_german(amount)};{CURRENCY};{_german(balance)}\r\n"
            )
            lines.append(line)
            line += row.count("\n")
            chunk.append(row)
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return lines


# --- one measured import, in its own process ----------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _children_cpu_seconds() -> float:
    """CPU of the child processes that ended: a large camt file is parsed in parts, one per core."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _import_summary(parsed: Any, chained: list[tuple[Any, str]]) -> dict[str, Any]:
    return {
        "status": "IMPORTED",
        "accountId": ACCOUNT_ID,
        "format": parsed.format.value,
        "linesImported": parsed.line_count,
        "balanceCheck": [st.balance_check.value for st, _ in chained],
        "warnings": len(parsed.warnings),
    }


async def _store(database_url: str, fmt: Any, sha256: str, parsed: Any) -> tuple[float, float, tuple[int, int]]:
    """(wall seconds, CPU seconds, (rows, Σ amount) stored) of the import's database work, the
    connection opened beforehand as a running service has it."""
    from services.kernel.db import create_engine
    from services.reconciliation.adapters.store import ReconciliationStore

    engine = create_engine(database_url, "reconciliation", pool_size=1)
    try:
        store = ReconciliationStore(engine)
        async with engine.connect() as warm:
            await warm.exec_driver_sql("SELECT 1")
        started, cpu_started = time.perf_counter(), time.process_time()
        chained = []
        for statement in parsed.statements:  # the continuity check import_statement makes
            before = await store.previous_closing(ACCOUNT_ID, statement.account, statement.opening_date)
            chained.append((statement, "FIRST" if before is None else "OK"))
        stored = await store.save_import(
            ACCOUNT_ID, fmt, sha256, "bench", chained, _import_summary(parsed, chained), "bench"
        )
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        if stored is None:
            raise RuntimeError("the import was refused as a duplicate in a fresh database")
        async with engine.connect() as conn:
            from sqlalchemy import text

            count, total = (
                await conn.execute(text("SELECT count(*), coalesce(sum(amount_minor), 0) FROM statement_lines"))
            ).one()
        return seconds, cpu_seconds, (int(count), int(total))
    finally:
        await engine.dispose()


def measure_one(kind: str, path: Path, database_url: str) -> dict[str, Any]:
    """Reads the file, parses it, stores it; returns timings, peak RSS and the verification verdict."""
    from services.reconciliation.adapters.statement_parser import FileStatementParser
    from services.reconciliation.domain.statements import StatementFormat

    fmt = StatementFormat.CAMT053 if kind == "camt053" else StatementFormat.CSV
    mapping = CSV_MAPPING if kind == "csv" else None
    baseline = _peak_rss_mib()
    content = path.read_bytes()
    loaded = _peak_rss_mib()
    started, cpu_started = time.perf_counter(), time.process_time()
    sha256 = hashlib.sha256(content).hexdigest()  # import_statement's idempotency key
    hashed, cpu_hashed = time.perf_counter(), time.process_time()
    workers_cpu_before = _children_cpu_seconds()
    parsed = FileStatementParser().parse(content, fmt, mapping)
    parsed_at, cpu_parsed = time.perf_counter(), time.process_time()
    workers_cpu = _children_cpu_seconds() - workers_cpu_before
    store_seconds, store_cpu_seconds, stored = asyncio.run(_store(database_url, fmt, sha256, parsed))
    total = parsed_at - started + store_seconds
    cpu_total = cpu_parsed - cpu_started + store_cpu_seconds
    peak = _peak_rss_mib()

    expected_amounts = array.array("q")
    expected_amounts.frombytes(path.with_suffix(".amounts").read_bytes())
    expected_lines = array.array("I")
    expected_lines.frombytes(path.with_suffix(".lines").read_bytes())
    lines = [line for statement in parsed.statements for line in statement.lines]
    problems = []
    if array.array("q", (line.amount_minor for line in lines)) != expected_amounts:
        problems.append("amounts differ from the generated ones")
    if array.array("I", (line.line for line in lines)) != expected_lines:
        problems.append("line numbers differ from the generated ones")
    if [st.balance_check.value for st in parsed.statements] != ["OK"]:
        problems.append("opening + entries != closing")
    if stored != (len(expected_amounts), sum(expected_amounts)):
        problems.append(f"stored rows (count, sum) {stored} are not what was parsed")
    return {
        "kind": kind,
        "entries": len(lines),
        "megabytes": len(content) / 1e6,
        "hash_seconds": hashed - started,
        "parse_seconds": parsed_at - hashed,
        "store_seconds": store_seconds,
        "total_seconds": total,
        "parse_cpu_seconds": cpu_parsed - cpu_hashed,
        "total_cpu_seconds": cpu_total,
        "workers_cpu_seconds": workers_cpu,
        "workers_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "baseline_rss_mib": baseline,
        "loaded_rss_mib": loaded,
        "peak_rss_mib": peak,
        "problems": problems,
    }


# --- the whole benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    kind: str
    entries: int
    megabytes: float
    parse_seconds: float
    store_seconds: float
    total_seconds: float
    parse_cpu_seconds: float
    total_cpu_seconds: float
    workers_cpu_seconds: float  # parser processes of its own (a large camt file is read in parts)
    workers_peak_rss_mib: float
    loaded_rss_mib: float
    peak_rss_mib: float
    problems: list[str]


def _fresh_database(admin_url: str) -> tuple[str, str]:
    from services.devstack.stack import create_database
    from services.provisioning import migrate_all

    name = f"payrecon_bench_{secrets.token_hex(4)}"
    url = create_database(admin_url, name)
    asyncio.run(migrate_all({"PAYRECON_ENV": "development", "PAYRECON_DATABASE_URL": url}))
    return name, url


def _measure_in_child(kind: str, path: Path, admin_url: str) -> Figures:
    from services.devstack.stack import drop_database

    name, url = _fresh_database(admin_url)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.bench.statement_import", "--measure", kind, str(path), url],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    except subprocess.CalledProcessError as failed:
        raise RuntimeError(f"measuring {kind} failed:\n{failed.stderr[-4000:]}") from None
    finally:
        drop_database(admin_url, name)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Figures(
        kind=kind,
        entries=result["entries"],
        megabytes=result["megabytes"],
        parse_seconds=result["parse_seconds"],
        store_seconds=result["store_seconds"],
        total_seconds=result["total_seconds"],
        parse_cpu_seconds=result["parse_cpu_seconds"],
        total_cpu_seconds=result["total_cpu_seconds"],
        workers_cpu_seconds=result["workers_cpu_seconds"],
        workers_peak_rss_mib=result["workers_peak_rss_mib"],
        loaded_rss_mib=result["loaded_rss_mib"],
        peak_rss_mib=result["peak_rss_mib"],
        problems=result["problems"],
    )


KINDS = ("camt053", "csv")


def generate(directory: Path, entries: int, kinds: tuple[str, ...] = KINDS) -> dict[str, Path]:
    plan = plan_amounts(entries)
    files = {"camt053": directory / "statement.camt053.xml", "csv": directory / "statement.csv"}
    files = {kind: path for kind, path in files.items() if kind in kinds}
    for kind, path in files.items():
        lines = write_camt053(path, plan) if kind == "camt053" else write_csv(path, plan)
        path.with_suffix(".lines").write_bytes(lines.tobytes())
        path.with_suffix(".amounts").write_bytes(plan.amounts.tobytes())
    return files


def run_benchmark(admin_url: str, entries: int = DEFAULT_ENTRIES, kinds: tuple[str, ...] = KINDS) -> list[Figures]:
    with tempfile.TemporaryDirectory(prefix="payrecon-import-bench-") as directory:
        files = generate(Path(directory), entries, kinds)
        return [_measure_in_child(kind, path, admin_url) for kind, path in files.items()]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min: {five:.1f}) on {os.cpu_count()} cores"


def section(figures: list[Figures], command: str) -> str:
    names = {"camt053": "camt.053.001.02", "csv": "CSV (column mapping, running balance)"}
    rows = "".join(
        f"| {names[f.kind]} | {f.entries:,} | {f.megabytes:,.0f} MB | {f.parse_seconds:.1f} s | {f.store_seconds:.1f} s"
        f" | **{f.total_seconds:.1f} s** | {f.parse_cpu_seconds:.1f} s / {f.total_cpu_seconds:.1f} s"
        f" | {f'{f.workers_cpu_seconds:.1f} s, {f.workers_peak_rss_mib:,.0f} MiB' if f.workers_cpu_seconds else '-'}"
        f" | {f.loaded_rss_mib:,.0f} MiB | **{f.peak_rss_mib:,.0f} MiB**"
        f" | {'yes' if f.total_seconds < TARGET_SECONDS and not f.problems else 'no'} |\n"
        for f in figures
    )
    problems = [f"{f.kind}: {p}" for f in figures for p in f.problems]
    before = BEFORE if len(figures) and figures[0].entries == DEFAULT_ENTRIES else ""
    return (
        f"{HEADING}\n\n"
        "One generated statement per format, imported the way `import_statement` does it: SHA-256 of the file"
        " (the idempotency key), parse (the parser port), continuity check and `save_import` (statement row and"
        " binary COPY of its lines, one transaction) into a freshly migrated database. The matching run that"
        " follows a real import is left out: it is measured by the reconcile benchmark. Each format runs in a"
        " process of its own; peak RSS is that process's `ru_maxrss` and includes the file itself, held in"
        " memory as the service holds an upload (`after reading` is the RSS once the file is read). Every"
        " parsed amount and line number is checked against the generator, and the stored rows are counted"
        " and summed. Times are wall-clock; CPU is this process's own (the database server's is not in it), so a"
        " gap between the two is time spent waiting for PostgreSQL or for a core. A camt file this large is"
        " parsed in parts, one per core: this process reads the first, a parser process each other one (its CPU"
        f" and peak RSS in their own column). Command: `{command}`.\n\n"
        "| format | entries | file | parse | store | total | CPU: parse / total | parser processes: CPU, peak RSS"
        " | RSS after reading | peak RSS | total < 60 s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        + rows
        + ("\nVerification FAILED: " + "; ".join(problems) + "\n" if problems else "\nVerification: exact.\n")
        + f"\nMeasured at {_load()}: other work on the machine takes cores from the import and from PostgreSQL.\n"
        + (f"\n{before}\n" if before else "")
    )


def write_section(text: str, results: Path = RESULTS, heading: str = HEADING) -> None:
    """Replaces (or appends) a benchmark's section of RESULTS.md (the one under `heading`), leaving the
    others as they are."""
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    replaced, count = pattern.subn(lambda _: text + "\n", current)
    results.write_text(replaced if count else current.rstrip("\n") + "\n\n" + text)


@contextmanager
def database_server() -> Iterator[str]:
    """A PostgreSQL server URL: PAYRECON_DATABASE_URL, else an embedded server for the run."""
    url = os.environ.get("PAYRECON_DATABASE_URL")
    if url:
        yield url
        return
    from services.devstack.postgres import EmbeddedPostgres
    from services.devstack.stack import default_state_dir

    postgres = EmbeddedPostgres.start(default_state_dir() / "bench")
    try:
        yield postgres.url
    finally:
        postgres.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", nargs="?", type=int, default=DEFAULT_ENTRIES)
    parser.add_argument("--measure", nargs=3, metavar=("KIND", "FILE", "DATABASE_URL"), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    parser.add_argument("--formats", default=",".join(KINDS), help="which files to import: camt053, csv or both")
    args = parser.parse_args(argv)
    kinds = tuple(kind for kind in KINDS if kind in args.formats.split(","))
    if args.measure:
        kind, path, url = args.measure
        print(json.dumps(measure_one(kind, Path(path), url)))
        return 0
    with database_server() as admin_url:
        figures = run_benchmark(admin_url, args.entries, kinds)
    command = "python -m tests.bench.statement_import" + ("" if args.entries == DEFAULT_ENTRIES else f" {args.entries}")
    text = section(figures, command)
    print(text, flush=True)
    if not args.no_write:
        write_section(text)
        print(f"written to {RESULTS}")
    return 1 if any(f.problems for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
