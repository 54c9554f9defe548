"""Fuzzes the public REST API through Envoy from gateway/openapi.json with schemathesis: valid and
invalid bodies, path and query parameters, good and bad tokens, unknown query parameters, on every
route but the two streams. Valid bodies are often a working template with a few fields generated, and
path parameters often name things that exist, so requests get past validation and lookups too.

Every answer is checked as it arrives: nothing ≥ 500 (a 503 only from /api/v1/ready), every non-2xx in
the one error shape `{code, message, details}` with a machine code. And refused writes leave no row:
once the stack has settled, the rows of every table of the ingest, ledger and reconciliation schemas
are counted before each write, and must not have moved across one answered 4xx.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

OPENAPI = Path(__file__).resolve().parents[2] / "gateway" / "openapi.json"
TOKEN = "demo-token-for-testing"
# Streams answer for as long as the client listens: not request/response, so not fuzzed here.
STREAMING_PATHS = ("/api/v1/statements:stream", "/api/v1/discrepancies:watch")
READY_PATH = "/api/v1/ready"
SCHEMAS = ("ingest", "ledger", "reconciliation")
MACHINE_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# What a request may carry as credentials: mostly the demo token, so most requests reach the services.
AUTH_VARIANTS = (*[f"Bearer {TOKEN}"] * 8, None, "Bearer not-a-token", f"Basic {TOKEN}", "Bearer")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class Violation:
    kind: str  # SERVER_ERROR, NO_ANSWER, ERROR_SHAPE, ROW_LEFT_BEHIND
    operation: str
    status: int | None
    detail: str
    reproduce: str

    @property
    def key(self) -> tuple[str, str, int | None, str]:
        return (self.kind, self.operation, self.status, self.detail[:80])


@dataclass
class FuzzReport:
    requests: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0
    violations: dict[tuple[str, str, int | None, str], Violation] = field(default_factory=dict)
    violation_counts: Counter[tuple[str, str, int | None, str]] = field(default_factory=Counter)
    rejected_writes: int = 0  # POST/PUT answered 4xx
    rejected_writes_checked: int = 0  # of those, how many had the row counts compared around them
    seconds: float = 0.0
    settling_seconds: float = 0.0
    unsent: int = 0  # cases the HTTP client itself refused to send (e.g. a header it cannot encode)

    def add(self, violation: Violation) -> None:
        self.violations.setdefault(violation.key, violation)
        self.violation_counts[violation.key] += 1

    def summary(self) -> str:
        classes = ", ".join(f"{name} {self.by_class[name]:,}" for name in ("2xx", "3xx", "4xx", "5xx"))
        statuses = ", ".join(f"{status} {count:,}" for status, count in sorted(self.by_status.items()))
        lines = [
            f"requests: {self.requests:,} across {len(self.by_operation)} operations in {self.seconds:.0f} s"
            f" ({self.settling_seconds:.0f} s of it waiting for background work to settle)",
            f"by status class: {classes}",
            f"by status: {statuses}",
            f"server errors (>= 500, the readiness probe's 503 excepted): {self.server_errors}",
            f"rejected writes (POST/PUT answered 4xx): {self.rejected_writes:,},"
            f" {self.rejected_writes_checked:,} of them with every table's row count compared before and after",
            f"violations: {sum(self.violation_counts.values())} ({len(self.violations)} distinct)",
        ]
        for key, violation in self.violations.items():
            lines.append(
                f"  {violation.kind} {violation.operation} -> {violation.status}: {violation.detail}"
                f" (x{self.violation_counts[key]})\n    {violation.reproduce}"
            )
        return "\n".join(lines)


class RowCounts:
    """Row counts of every table of the three contexts' schemas, in the stack's own database, over one
    connection (a snapshot is one round trip, cheap enough to take before every rejected write)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self._count_sql = ""

    def close(self) -> None:
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()

    def _connection(self) -> asyncpg.Connection:
        if self._conn is None:
            self._conn = self._loop.run_until_complete(asyncpg.connect(self._url))
            tables = self._loop.run_until_complete(
                self._conn.fetch(
                    "SELECT table_schema, table_name FROM information_schema.tables"
                    " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'"
                    " ORDER BY table_schema, table_name",
                    list(SCHEMAS),
                )
            )
            if not tables:
                raise RuntimeError(f"no tables in schemas {SCHEMAS}: is {self._url} the stack's database?")
            self._count_sql = " UNION ALL ".join(
                f'SELECT \'{t["table_schema"]}.{t["table_name"]}\', count(*) FROM "{t["table_schema"]}"."{t["table_name"]}"'
                for t in tables
            )
        return self._conn

    def snapshot(self) -> dict[str, int]:
        conn = self._connection()
        return {name: count for name, count in self._loop.run_until_complete(conn.fetch(self._count_sql))}

    def in_flight(self) -> int:
        """Accepted work not finished yet: transfers without an outcome, outbox rows not published."""
        conn = self._connection()
        return int(
            self._loop.run_until_complete(
                conn.fetchval(
                    "SELECT (SELECT count(*) FROM ingest.requests WHERE status = 'PROCESSING')"
                    " + (SELECT count(*) FROM ingest.outbox WHERE published_at IS NULL)"
                    " + (SELECT count(*) FROM ledger.outbox WHERE published_at IS NULL)"
                )
            )
        )

    def settled(self, *, quiet: float = 2.5, timeout: float = 60.0) -> dict[str, int]:
        """Counts once nothing is in flight and they have not moved for `quiet` seconds: longer than
        reconciliation's continuous matching interval (2 s), the last hop of an accepted transfer."""
        deadline = time.monotonic() + timeout
        previous, since = self.snapshot(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            current = self.snapshot()
            if current != previous or self.in_flight():
                previous, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return current
        raise RuntimeError(f"the stack's row counts kept moving for {timeout:.0f} s")


def loopback_only(base_url: str) -> None:
    host = urlsplit(base_url).hostname or ""
    if not (host == "localhost" or host == "::1" or host.startswith("127.")):
        raise ValueError(f"the fuzzer only targets this machine's loopback, not {host!r}")


@dataclass
class Seeds:
    """Things that exist, so generated requests also reach the code behind a successful lookup."""

    path_values: dict[str, list[str]]
    bodies: dict[str, Callable[[], dict[str, Any]]]


def seed(base_url: str) -> Seeds:
    """Opens two accounts, funds one, holds money, imports a statement and reconciles it."""
    run = uuid.uuid4().hex[:8]
    wallet, merchant, fund, hold = f"fuzz-wallet-{run}", f"fuzz-merchant-{run}", f"fuzz-fund-{run}", f"fuzz-hold-{run}"
    today = datetime.now(UTC).date().isoformat()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:

        def expect(response: httpx.Response, *statuses: int) -> dict[str, Any]:
            if response.status_code not in statuses:
                raise RuntimeError(f"seeding: {response.request.method} {response.request.url}: {response.text}")
            return dict(response.json())

        for account in (wallet, merchant):
            body = {"id": account, "currency": "USD", "type": "LIABILITY", "allowOverdraft": True}
            expect(client.post("/api/v1/accounts", json=body), 201)
        transfer = {"source_account_id": merchant, "destination_account_id": wallet, "amount": "1000.00"}
        expect(client.post("/api/v1/transactions", json={"transaction": transfer, "idempotencyKey": fund}), 202)
        deadline = time.monotonic() + 60
        while expect(client.get(f"/api/v1/transactions/status/{fund}"), 200)["status"] == "PROCESSING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"seeding: {fund} still PROCESSING after 60 s")
            time.sleep(0.2)
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        held = {
            "idempotencyKey": hold,
            "sourceAccountId": wallet,
            "destinationAccountId": merchant,
            "amount": "10.00",
            "expiresAt": tomorrow,
        }
        expect(client.post("/api/v1/holds", json=held), 200, 201)
        expect(client.post("/api/v1/statements", json=statement(wallet, today, fund, f"fee-{run}")), 201)
        report = expect(
            client.post(f"/api/v1/accounts/{wallet}/reconcile", json={"startDate": today, "endDate": today}), 200
        )
        cases = expect(client.get("/api/v1/discrepancies", params={"accountId": wallet}), 200).get("discrepancies", [])

    counter = itertools.count()

    def unique(name: str) -> str:
        return f"fuzz-{name}-{run}-{next(counter)}"

    return Seeds(
        path_values={
            "account_id": [wallet, merchant],
            "accountId": [wallet],
            "hold_id": [hold],
            "transfer_id": [fund],
            "idempotency_key": [fund],
            "id": [case["id"] for case in cases[:2]],
            "run_id": [str(report.get("report_id", ""))],
        },
        bodies={
            "POST /api/v1/transactions": lambda: {
                "transaction": {
                    "source_account_id": wallet,
                    "destination_account_id": merchant,
                    "amount": "1.00",
                    "currency": "USD",
                },
                "idempotencyKey": unique("tx"),
            },
            "POST /api/v1/accounts": lambda: {
                "id": unique("acct"),
                "currency": "USD",
                "type": "LIABILITY",
                "allowOverdraft": True,
                "overdraftLimit": "0",
                "metadata": {"by": "fuzz"},
            },
            "POST /api/v1/holds": lambda: {
                "idempotencyKey": unique("hold"),
                "sourceAccountId": wallet,
                "destinationAccountId": merchant,
                "amount": "0.01",
                "currency": "USD",
                "expiresAt": tomorrow,
            },
            "POST /api/v1/holds/{hold_id}/post": lambda: {"amount": "0.01"},
            "POST /api/v1/transfers/{transfer_id}/reverse": lambda: {"idempotencyKey": unique("rev"), "reason": "fuzz"},
            "POST /api/v1/accounts/{account_id}/reconcile": lambda: {"startDate": today, "endDate": today},
            "POST /api/v1/statements": lambda: statement(wallet, today, unique("ref"), unique("fee")),
            "PUT /api/v1/accounts/{account_id}/matching-rules": lambda: {"rules": {"date_tolerance_days": 2}},
            "POST /api/v1/discrepancies/{id}/resolve": lambda: {"action": "ACKNOWLEDGE", "reason": "fuzz"},
        },
    )


def statement(account: str, day: str, reference: str, fee: str) -> dict[str, Any]:
    """A two-line CSV statement: money in under `reference`, a fee nobody booked."""
    csv = f"date,amount,reference\n{day},1000.00,{reference}\n{day},-5.00,{fee}\n"
    mapping = {
        "delimiter": ",",
        "has_header": True,
        "date": "date",
        "amount": "amount",
        "reference": "reference",
        "date_format": "%Y-%m-%d",
        "currency": "USD",
        "account": "FUZZ-BANK",
    }
    return {"accountId": account, "format": "CSV", "content": csv, "csvMapping": mapping, "fileName": "fuzz.csv"}


def leaves(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*prefix, key))
    elif prefix:
        yield prefix


def lookup(value: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def with_fields(template: dict[str, Any], generated: Any, chosen: list[bool]) -> dict[str, Any]:
    """The valid template with the chosen leaves replaced by the generated body's values there."""
    body = json.loads(json.dumps(template))
    for path, take in zip(leaves(template), chosen, strict=False):
        found, value = lookup(generated, path)
        if take and found:
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
    return body


class RestFuzzer:
    def __init__(self, base_url: str, database_url: str, *, seeds: Seeds | None = None) -> None:
        loopback_only(base_url)
        self.base_url = base_url
        self.rows = RowCounts(database_url)
        self.schema = schemathesis.openapi.from_path(OPENAPI)
        self.operations = [
            result.ok() for result in self.schema.get_all_operations() if result.ok().path not in STREAMING_PATHS
        ]
        self.seeds = seeds or seed(base_url)
        self.session = requests.Session()
        self.report = FuzzReport()
        self.unsatisfiable: set[tuple[str, GenerationMode]] = set()
        self._baseline: dict[str, int] = {}
        self._clean = False
        self._last_rejected: tuple[str, str] | None = None

    def run(
        self,
        total: int,
        *,
        max_seconds: float,
        check_exploring: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> FuzzReport:
        """Sends at least `total` requests (unless `max_seconds` runs out first), spread evenly over every
        operation: each round explores with valid data, then sends invalid data. Rows are checked around
        refused writes of both phases, or of the invalid phase only without `check_exploring` (each
        check needs the background work of the writes before it settled: seconds per batch)."""
        started = time.monotonic()
        deadline = started + max_seconds
        size = max(1, -(-total // (2 * len(self.operations))))
        try:
            while self.report.requests < total and time.monotonic() < deadline:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    for operation in self.operations:
                        if self.report.requests >= total or time.monotonic() >= deadline:
                            break
                        settle = check_exploring or mode is GenerationMode.NEGATIVE
                        self._batch(operation, mode, size, deadline, settle=settle)
                        if progress is not None:
                            progress(
                                f"{time.monotonic() - started:5.0f} s  {self.report.requests:6,} requests"
                                f"  {self.report.server_errors} server errors  {len(self.report.violations)} violations"
                                f"  ({mode.value} {operation.method.upper()} {operation.path})"
                            )
        finally:
            self.rows.close()
            self.report.seconds = time.monotonic() - started
        return self.report

    # -- rows left behind --------------------------------------------------------------------------
    # A window opens once the stack has settled. While it is clean (no write answered 2xx since), the
    # counts are taken before each write and must equal the window's: the requests in between were all
    # refused. A write answered 2xx closes it until the next settle, at the end of the batch.

    def _settle(self) -> None:
        started = time.monotonic()
        self._baseline = self.rows.settled()
        self._clean = True
        self.report.settling_seconds += time.monotonic() - started

    def _before_write(self) -> None:
        if not self._clean:
            return
        now = self.rows.snapshot()
        if now != self._baseline and self._last_rejected is not None:
            label, reproduce = self._last_rejected
            moved = {t: f"{self._baseline.get(t, 0)} -> {n}" for t, n in now.items() if self._baseline.get(t, 0) != n}
            self.report.add(Violation("ROW_LEFT_BEHIND", label, None, f"after a 4xx: {moved}", reproduce))
        self._baseline = now
        if self._last_rejected is not None:
            self.report.rejected_writes_checked += 1
        self._last_rejected = None

    def _after_write(self, label: str, status: int, reproduce: str) -> None:
        if 400 <= status < 500:
            self.report.rejected_writes += 1
            self._last_rejected = (label, reproduce) if self._clean else None
        else:
            self._clean = False
            self._last_rejected = None

    # -- generation and sending ----------------------------------------------------------------------

    def _batch(self, operation: Any, mode: GenerationMode, size: int, deadline: float, *, settle: bool) -> None:
        label = f"{operation.method.upper()} {operation.path}"
        raw = operation.definition.raw
        if mode is GenerationMode.NEGATIVE and not (raw.get("parameters") or raw.get("requestBody")):
            return  # nothing to make invalid: the positive batches (and their tokens) cover it
        if (label, mode) in self.unsatisfiable:
            return
        template = self.seeds.bodies.get(label)
        template_leaves = len(list(leaves(template()))) if template else 0
        sent = [0]

        @given(
            case=operation.as_strategy(generation_mode=mode),
            auth=st.sampled_from(AUTH_VARIANTS),
            known=st.dictionaries(st.sampled_from(sorted(self.seeds.path_values)), st.integers(0, 1), max_size=3),
            use_template=st.booleans(),
            chosen=st.lists(
                st.integers(0, 3).map(lambda n: n == 0), min_size=template_leaves, max_size=template_leaves
            ),
            extra_query=st.none() | st.text(max_size=12),
        )
        @settings(
            max_examples=size,
            phases=[Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def send(
            case: Any,
            auth: str | None,
            known: dict[str, int],
            use_template: bool,
            chosen: list[bool],
            extra_query: str | None,
        ) -> None:
            if sent[0] >= size or time.monotonic() >= deadline:
                return
            for name, index in known.items():
                values = self.seeds.path_values[name]
                if name in (case.path_parameters or {}) and values:
                    case.path_parameters[name] = values[index % len(values)]
                elif name in (case.query or {}) and values:
                    case.query[name] = values[index % len(values)]
            if template is not None and use_template:
                case.body = with_fields(template(), case.body, chosen)
            case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            if auth is not None:
                case.headers["Authorization"] = auth
            if extra_query is not None:
                case.query = {**(case.query or {}), "fuzz_unknown": extra_query}
            if self._send(case, label, operation.method.upper() not in SAFE_METHODS):
                sent[0] += 1

        if settle and not self._clean:
            self._settle()
        try:
            send()
        except Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): the positive batches cover it.
            self.unsatisfiable.add((label, mode))
        if self._clean and self._last_rejected is not None:
            self._before_write()

    def _send(self, case: Any, label: str, write: bool) -> bool:
        try:
            reproduce = case.as_curl_command(base_url=self.base_url)
        except Exception:
            reproduce = f"{label} {case.path_parameters} {case.query}"
        if write:
            self._before_write()
        try:
            response = case.call(base_url=self.base_url, session=self.session, timeout=30, allow_redirects=False)
        except (requests.exceptions.InvalidHeader, UnicodeError, ValueError):
            self.report.unsent += 1  # refused by the HTTP client itself: nothing was sent
            return False
        except requests.RequestException as error:
            self._count(label, None)
            self.report.server_errors += 1
            self.report.add(Violation("NO_ANSWER", label, None, type(error).__name__, reproduce))
            self._clean = False
            return True
        status = response.status_code
        self._count(label, status)
        if write:
            self._after_write(label, status, reproduce)
        if status >= 500 and not (case.path == READY_PATH and status == 503):
            self.report.server_errors += 1
            self.report.add(Violation("SERVER_ERROR", label, status, response.text[:200], reproduce))
        if status < 400 or (case.path == READY_PATH and status == 503):
            return True
        problem = error_shape_problem(response.headers, response.content)
        if problem:
            self.report.add(Violation("ERROR_SHAPE", label, status, problem, reproduce))
        else:
            self.report.codes[json.loads(response.content)["code"]] += 1
        return True

    def _count(self, label: str, status: int | None) -> None:
        self.report.requests += 1
        self.report.by_operation[label] += 1
        if status is not None:
            self.report.by_status[status] += 1
            self.report.by_class[f"{status // 100}xx"] += 1


def error_shape_problem(headers: dict[str, list[str]], content: bytes) -> str | None:
    """Why an error answer is not `{code, message, details}` with a machine code; None when it is."""
    content_type = ";".join(headers.get("content-type", []))
    if "application/json" not in content_type:
        return f"content-type {content_type!r}: {content[:120]!r}"
    try:
        body = json.loads(content)
    except ValueError:
        return f"not JSON: {content[:120]!r}"
    if not isinstance(body, dict) or set(body) != {"code", "message", "details"}:
        return f"not {{code, message, details}}: {content[:160]!r}"
    if not isinstance(body["code"], str) or not MACHINE_CODE.match(body["code"]):
        return f"code {body['code']!r} is not a machine code"
    if not isinstance(body["message"], str) or not isinstance(body["details"], list):
        return f"message or details mistyped: {content[:160]!r}"
    return None
