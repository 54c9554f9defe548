"""After the chaos: wait until nothing accepted is still PROCESSING, then check every promise against
the clients' record and the ledger's own tables, and print the table."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from services.devstack.envoy import REPO_ROOT
from tests.chaos.faults import FaultDone
from tests.chaos.workload import Record, TransferBody, TransferIntent


@dataclass(frozen=True)
class Row:
    name: str
    value: str
    ok: bool | None = None  # None: a figure, not an invariant


@dataclass
class Verdict:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    accepted: int = 0
    faults: list[FaultDone] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.ok is not False for row in self.rows)

    def add(self, name: str, value: object, ok: bool | None = None) -> None:
        self.rows.append(Row(name, f"{value:,}" if isinstance(value, int) else str(value), ok))

    def table(self) -> str:
        width = max(len(r.name) for r in self.rows)
        value_width = max(len(r.value) for r in self.rows)
        lines = [
            f"| {'after the chaos':{width}} | {'':{value_width}} |    |",
            f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|----|",
        ]
        for r in self.rows:
            mark = "" if r.ok is None else ("ok" if r.ok else "FAIL")
            lines.append(f"| {r.name:{width}} | {r.value:>{value_width}} | {mark:2} |")
        lines.append(f"\nchaos: {'PASSED' if self.ok else 'FAILED'}")
        lines += [f"  {d}" for d in self.details]
        return "\n".join(lines)


async def wait_until_settled(database_url: str, limit_seconds: float) -> tuple[float, int]:
    """Waits until no request is PROCESSING; returns (seconds waited, how many still are)."""
    started = time.monotonic()
    conn = None
    processing = -1
    while True:
        try:
            conn = conn or await asyncpg.connect(database_url)
            processing = await conn.fetchval("SELECT count(*) FROM ingest.requests WHERE status = 'PROCESSING'")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = None
        if processing == 0 or time.monotonic() - started > limit_seconds:
            break
        await asyncio.sleep(1)
    if conn is not None:
        await conn.close()
    return round(time.monotonic() - started, 1), processing


def verify_ledger_cli(env: dict[str, str]) -> tuple[bool, str]:
    """`payrecon ledger verify` against the stack's database: every hash chain and total recomputed."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "ledger", "verify"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode == 0, lines[-1] if lines else f"exit {result.returncode}"


def stored_body(row: asyncpg.Record) -> TransferBody:
    return TransferBody(row["debit_account_id"], row["credit_account_id"], row["amount_minor"], row["currency"].strip())


def posted_out_of_order(record: Record, debit_entry: dict[str, int]) -> list[str]:
    """Transfers the ledger posted after a transfer from the same source account that its client
    sent only once it had this one's 202 — an order the README promises per account."""
    by_source: dict[str, list[TransferIntent]] = {}
    for key, intent in record.transfers.items():
        if intent.accepted is not None and key in debit_entry:
            by_source.setdefault(intent.accepted.source, []).append(intent)
    late = []
    for intents in by_source.values():
        latest_sent = float("-inf")  # over the transfers posted so far
        for intent in sorted(intents, key=lambda i: debit_entry[i.key]):
            assert intent.accepted_at is not None
            if latest_sent > intent.accepted_at:
                late.append(intent.key)
            latest_sent = max(latest_sent, intent.sent_at)
    return late


async def judge(
    record: Record,
    database_url: str,
    env: dict[str, str],
    *,
    duration: float,
    faults: list[FaultDone],
    settled_after: float,
    settle_timeout: float,
) -> Verdict:
    verdict = Verdict(faults=faults)
    conn = await asyncpg.connect(database_url)
    try:
        ingest = {
            r["idempotency_key"]: r
            for r in await conn.fetch("SELECT idempotency_key, status, error_code FROM ingest.requests")
        }
        ledger = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, kind, status, debit_account_id, credit_account_id, amount_minor, posted_amount_minor,"
                " currency, reject_code FROM ledger.transfers"
            )
        }
        posted_twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT transfer_id FROM ledger.entries GROUP BY transfer_id"
            " HAVING count(*) FILTER (WHERE direction = 'DEBIT') > 1"
            "     OR count(*) FILTER (WHERE direction = 'CREDIT') > 1) AS twice"
        )
        sums = await conn.fetch(
            "SELECT currency, coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0) AS debits,"
            " coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0) AS credits"
            " FROM ledger.entries GROUP BY currency ORDER BY currency"
        )
        accounts, off_balance = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE a.debits_posted <> coalesce(e.debits, 0)"
            "                               OR a.credits_posted <> coalesce(e.credits, 0))"
            " FROM ledger.accounts a LEFT JOIN ("
            "  SELECT account_id, sum(amount_minor) FILTER (WHERE direction = 'DEBIT') AS debits,"
            "         sum(amount_minor) FILTER (WHERE direction = 'CREDIT') AS credits"
            "  FROM ledger.entries GROUP BY account_id) e ON e.account_id = a.id"
        )
        debit_entry = {
            r["transfer_id"]: r["id"]
            for r in await conn.fetch("SELECT transfer_id, id FROM ledger.entries WHERE direction = 'DEBIT'")
        }
        totals = {
            r["id"]: (r["debits_posted"], r["credits_posted"])
            for r in await conn.fetch("SELECT id, debits_posted, credits_posted FROM ledger.accounts")
        }
        stuck = await conn.fetchval("SELECT count(*) FROM ingest.requests WHERE status = 'PROCESSING'")
        redriven = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE redrive_count > 0) AS requests, coalesce(sum(redrive_count), 0) AS redrives"
            " FROM ingest.requests"
        )
        # Acceptance to the ledger's verdict (the outcome's own time), over requests with one.
        latency = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99, max(s) AS max FROM ("
            "  SELECT extract(epoch FROM completed_at - accepted_at) AS s FROM ingest.requests"
            "  WHERE completed_at IS NOT NULL) AS outcomes"
        )
        # Reconciliation's own copy of the entries, fed by ledger events over SQS.
        projected = await conn.fetchval("SELECT count(*) FROM reconciliation.ledger_entries")
        entries = await conn.fetchval("SELECT count(*) FROM ledger.entries")
    finally:
        await conn.close()

    accepted = record.accepted
    verdict.accepted = len(accepted)
    statuses = Counter(ingest[k]["status"] if k in ingest else "UNKNOWN" for k in accepted)
    unknown_to_ingest = [k for k in accepted if k not in ingest]
    lost = [k for k in accepted if k not in ledger]
    disagree = [
        k
        for k in accepted
        if k in ingest
        and k in ledger
        and (ingest[k]["status"], ledger[k]["status"]) not in (("COMPLETED", "POSTED"), ("FAILED", "REJECTED"))
        and ingest[k]["status"] != "PROCESSING"
    ]
    unlike_request = []
    for key, intent in record.transfers.items():
        row = ledger.get(key)
        if row is None:
            continue
        stored = stored_body(row)
        if stored not in intent.bodies or (intent.accepted is not None and stored != intent.accepted):
            unlike_request.append(key)
    failed_codes = Counter(ingest[k]["error_code"] for k in accepted if k in ingest and ingest[k]["status"] == "FAILED")
    unacknowledged_posts = [k for k, intent in record.transfers.items() if intent.accepted is None and k in ledger]

    # Every account's posted totals, rebuilt from nothing but what the clients were told: transfers
    # whose status says COMPLETED and holds answered POSTED, each counted once.
    told: Counter[tuple[str, str]] = Counter()
    for key, intent in record.transfers.items():
        if key not in ingest or ingest[key]["status"] != "COMPLETED":
            continue
        body = intent.accepted or next(
            (b for b in intent.bodies if key in ledger and b == stored_body(ledger[key])), None
        )
        if body is not None:
            told[body.source, "debit"] += body.amount_minor
            told[body.destination, "credit"] += body.amount_minor
    for hold in record.holds.values():
        if hold.told is not None and hold.told[0] == "POSTED":
            told[hold.body.source, "debit"] += hold.told[1]
            told[hold.body.destination, "credit"] += hold.told[1]
    balances_unlike_told = sorted(
        account
        for account in {a for a, _ in told} | set(totals)
        if totals.get(account, (0, 0)) != (told[account, "debit"], told[account, "credit"])
    )

    out_of_order = posted_out_of_order(record, debit_entry)

    holds = [h for h in record.holds.values() if h.created]
    hold_states = Counter(h.told[0] if h.told else "not settled" for h in holds)
    hold_mismatch = []
    for h in holds:
        row = ledger.get(h.key)
        stored_state = (row["status"], row["posted_amount_minor"] or 0) if row else None
        if h.told is not None and stored_state != h.told:
            hold_mismatch.append(h.key)
        elif h.told is None and (row is None or row["status"] != "PENDING"):
            hold_mismatch.append(h.key)  # unsettled by its client, yet settled by someone
    ledger_ok, ledger_line = verify_ledger_cli(env)

    transfers_sent = len(record.transfers)
    verdict.add("load", f"{duration:.0f} s, {record.calls:,} calls ({record.calls / max(duration, 1):.0f}/s)")
    verdict.add("faults", ", ".join(f"{n} x{c}" for n, c in Counter(f.name for f in faults).items()) or "none")
    verdict.add("transfer keys sent", transfers_sent)
    verdict.add(
        "  concurrent same-key / conflicting / re-sent",
        f"{record.concurrent_same_key:,} / {record.conflicting_same_key:,} / {record.duplicates_resent:,}",
    )
    verdict.add("accepted (distinct keys answered 202)", len(accepted))
    verdict.add("completed", statuses.get("COMPLETED", 0))
    verdict.add(
        # Every transfer sent is valid (accounts that allow overdrafts, one currency each): a FAILED
        # one is an outage taken for the transfer's fault.
        "failed (all were valid)",
        statuses.get("FAILED", 0)
        if not failed_codes
        else f"{statuses['FAILED']:,} ({', '.join(f'{c} x{n}' for c, n in failed_codes.items())})",
        not failed_codes,
    )
    verdict.add("posted, though its client gave up before a 202", len(unacknowledged_posts))
    verdict.add("calls never answered (client gave up)", record.unanswered)
    verdict.add("lost (accepted, unknown to the ledger)", len(lost), not lost)
    verdict.add("accepted but unknown to ingest", len(unknown_to_ingest), not unknown_to_ingest)
    verdict.add("posted twice (transfer with > 1 debit/credit)", int(posted_twice), posted_twice == 0)
    verdict.add(f"stuck PROCESSING (after {settled_after:.0f} s of ≤ {settle_timeout:.0f} s)", int(stuck), stuck == 0)
    verdict.add("ingest status ≠ ledger status", len(disagree), not disagree)
    verdict.add("ledger transfer ≠ the request answered 202", len(unlike_request), not unlike_request)
    verdict.add("posted after a later transfer of its source account", len(out_of_order))
    verdict.add("requests redriven (redrives)", f"{redriven['requests']:,} ({redriven['redrives']:,})")
    if latency["p50"] is not None:
        verdict.add(
            "accepted → ledger outcome p50 / p99 / max",
            f"{latency['p50']:.1f} / {latency['p99']:.1f} / {latency['max']:.1f} s",
        )
    verdict.add(
        "holds created: posted / voided / not settled",
        f"{len(holds):,}: {hold_states.get('POSTED', 0):,} / {hold_states.get('VOIDED', 0):,} / {hold_states.get('not settled', 0):,}",
    )
    verdict.add("holds whose ledger state ≠ the answer", len(hold_mismatch), not hold_mismatch)
    verdict.add("answers a careful client must never get", len(record.anomalies), not record.anomalies)
    # A retryable outage should say 503; 500 tells a client the request itself broke something.
    verdict.add(
        "outages answered 500, not 503 (issue 9, part 4)",
        sum(n for label, n in record.answers.items() if label.startswith(("500", "INTERNAL"))),
    )
    for r in sums:
        verdict.add(
            f"Σdebits = Σcredits {r['currency'].strip()}",
            f"{r['debits']:,} = {r['credits']:,}",
            r["debits"] == r["credits"],
        )
    verdict.add(f"balance = Σentries ({accounts:,} accounts)", f"{off_balance:,} off", off_balance == 0)
    verdict.add(
        "balance = Σ of what clients were told (COMPLETED, POSTED)",
        f"{len(balances_unlike_told):,} off",
        not balances_unlike_told,
    )
    verdict.add("hash chains intact (payrecon ledger verify)", "yes" if ledger_ok else "NO", ledger_ok)
    verdict.add("reconciliation's projection: entries of the ledger's", f"{projected:,} of {entries:,}")

    verdict.details.append(ledger_line)
    verdict.details.append("answers seen: " + ", ".join(f"{label} x{n:,}" for label, n in record.answers.most_common()))
    verdict.details += [
        f"fault at {f.at:5.1f} s: {f.name} ({f.seconds} s){' — ' + f.note if f.note else ''}" for f in faults
    ]
    for what, keys in (
        ("lost", lost),
        ("unknown to ingest", unknown_to_ingest),
        ("status disagrees", disagree),
        ("unlike its request", unlike_request),
        ("hold mismatch", hold_mismatch),
        ("balance unlike what clients were told", balances_unlike_told),
        ("posted out of order", out_of_order),
    ):
        if keys:
            verdict.details.append(f"{what}: {', '.join(keys[:10])}{' …' if len(keys) > 10 else ''}")
    verdict.details += record.anomalies[:20]
    return verdict
