"""Tamper evidence: each entry is chained by hash to the previous entry of the same account.

hash = sha256(previous hash || "id|transfer_id|account_id|direction|amount_minor|currency|micros")
where micros is the entry's posting time in microseconds since the Unix epoch, and the first entry
of an account chains to 32 zero bytes. Chains per account (not one global chain) because the
posting transaction already holds each account's row lock: chaining adds no contention. The
account row keeps the head, so dropping the newest entries is caught too. Migration 0002 computes
the same form in SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from services.ledger.domain.model import TransferInstruction

GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_since_epoch(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def entry_hash(
    previous: bytes,
    entry_id: int,
    transfer_id: str,
    account_id: str,
    direction: str,
    amount_minor: int,
    currency: str,
    at: datetime | int,
) -> bytes:
    """`at` may be given as micros_since_epoch(at) already (a batch shares one instant)."""
    micros = at if isinstance(at, int) else micros_since_epoch(at)
    canonical = f"{entry_id}|{transfer_id}|{account_id}|{direction}|{amount_minor}|{currency}|{micros}"
    return hashlib.sha256(previous + canonical.encode()).digest()


class ChainedEntry(NamedTuple):
    """An entry as stored: a tuple, so a batch of them is a COPY's records as it is (the posting path
    builds ten thousand per transaction)."""

    id: int
    transfer_id: str
    account_id: str
    direction: str
    amount_minor: int
    currency: str
    hash: bytes
    created_at: datetime  # last: a COPY of the fields before it leaves it to the column's default


def chain_entries(
    heads: dict[str, bytes], transfers: Sequence[TransferInstruction], entry_ids: Sequence[int], at: datetime
) -> list[ChainedEntry]:
    """A debit and a credit entry per transfer (ids taken in order from `entry_ids`), each chained to
    its account's previous entry; `heads` is advanced to each account's new head."""
    micros = micros_since_epoch(at)
    entries: list[ChainedEntry] = []
    append = entries.append
    sha256 = hashlib.sha256
    ids = iter(entry_ids)
    for t in transfers:
        minor, currency, tid = t.amount.minor_units, t.amount.currency, t.transfer_id
        # entry_hash's canonical form, inlined: this loop runs twice per posted transfer.
        debit_id, debit_account = next(ids), t.debit_account_id
        head = heads[debit_account] = sha256(
            heads[debit_account] + f"{debit_id}|{tid}|{debit_account}|DEBIT|{minor}|{currency}|{micros}".encode()
        ).digest()
        append(ChainedEntry(debit_id, tid, debit_account, "DEBIT", minor, currency, head, at))
        credit_id, credit_account = next(ids), t.credit_account_id
        head = heads[credit_account] = sha256(
            heads[credit_account] + f"{credit_id}|{tid}|{credit_account}|CREDIT|{minor}|{currency}|{micros}".encode()
        ).digest()
        append(ChainedEntry(credit_id, tid, credit_account, "CREDIT", minor, currency, head, at))
    return entries


@dataclass(frozen=True)
class AccountTotals:
    id: str
    currency: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    chain_head: bytes


@dataclass(frozen=True)
class Breach:
    """The first record that does not add up, and why."""

    record: str
    problem: str

    def __str__(self) -> str:
        return f"{self.record}: {self.problem}"


class AccountAudit:
    """Walks one account's entries in id order, recomputing its chain and its totals."""

    def __init__(self, account: AccountTotals) -> None:
        self.account = account
        self.head = GENESIS
        self.debits = 0
        self.credits = 0
        self.entries = 0

    def add(self, entry: ChainedEntry) -> Breach | None:
        expected = entry_hash(
            self.head,
            entry.id,
            entry.transfer_id,
            entry.account_id,
            entry.direction,
            entry.amount_minor,
            entry.currency,
            entry.created_at,
        )
        if expected != entry.hash:
            return Breach(
                f"entry {entry.id} (transfer {entry.transfer_id!r}, account {entry.account_id!r})",
                "hash does not match its content and the previous entry's hash",
            )
        if entry.currency != self.account.currency:
            return Breach(f"entry {entry.id}", f"currency {entry.currency} on a {self.account.currency} account")
        self.head = expected
        self.entries += 1
        if entry.direction == "DEBIT":
            self.debits += entry.amount_minor
        else:
            self.credits += entry.amount_minor
        return None

    def finish(self) -> Breach | None:
        record = f"account {self.account.id!r}"
        if self.head != self.account.chain_head:
            return Breach(
                record,
                f"chain head does not match its last entry ({self.entries} entries walked):"
                " entries were removed or the head was altered",
            )
        if (self.debits, self.credits) != (self.account.debits_posted, self.account.credits_posted):
            return Breach(
                record,
                f"posted totals debits={self.account.debits_posted}"
                f" credits={self.account.credits_posted} but its entries sum to"
                f" debits={self.debits} credits={self.credits}",
            )
        return None


def unbalanced_currencies(totals: Iterable[tuple[str, int, int]]) -> list[Breach]:
    """(currency, Σ debits, Σ credits) rows whose sides differ."""
    return [
        Breach(f"currency {currency}", f"Σ debits {debits} ≠ Σ credits {credits}")
        for currency, debits, credits in totals
        if debits != credits
    ]
