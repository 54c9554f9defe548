"""Ledger use cases: post transfers, read balances and history."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from payrecon.ledger.v1 import messages_pb2

from services.kernel.errors import ValidationError
from services.ledger.adapters.store import EntryRow, LedgerStore
from services.ledger.domain.errors import AccountNotFound
from services.ledger.domain.model import Account, TransferInstruction

DEFAULT_PAGE = 100
MAX_PAGE = 500


@dataclass(frozen=True)
class BalanceView:
    account: Account
    balance_minor: int
    pending_minor: int
    available_minor: int
    as_of: datetime | None


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "e":
            raise ValueError(cursor)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("cursor is not one this API returned", field="cursor", code="INVALID_CURSOR") from None


@dataclass
class LedgerService:
    store: LedgerStore

    async def post_transfers(self, transfers: Sequence[TransferInstruction], *, message_id: str | None = None
                             ) -> list[messages_pb2.LedgerEvent]:
        """Posts each transfer at most once; returns one outcome event per transfer, in order.

        A transfer id seen before answers with its original outcome, or LEDGER_TRANSFER_EXISTS when
        it now names a different transfer. Rejections (insufficient funds, currency mismatch) are
        outcomes, not errors.
        """
        result = await self.store.post_batch(transfers, message_id=message_id)
        fresh = {} if result is None else {
            **{e.transfer_posted.transfer_id or e.transfer_rejected.transfer_id: e for e in result.events},
            **result.repeats,
        }
        missing = [t.transfer_id for t in transfers if t.transfer_id not in fresh]
        earlier = await self.store.transfer_events(missing) if missing else {}
        return [fresh.get(t.transfer_id) or earlier[t.transfer_id] for t in transfers]

    async def apply_message(self, transfers: Sequence[TransferInstruction], message_id: str) -> None:
        """Worker path: posts one queued batch; a redelivered message changes nothing."""
        await self.store.post_batch(transfers, message_id=message_id)

    async def balance(self, account_id: str, as_of: datetime | None = None) -> BalanceView:
        """Raises AccountNotFound."""
        account = await self.store.account(account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id!r} does not exist", field="account_id",
                                  code="LEDGER_ACCOUNT_NOT_FOUND")
        if as_of is None:
            return BalanceView(account, account.balance_minor, account.pending_minor, account.available_minor, None)
        debits, credits = await self.store.totals_as_of(account_id, as_of)
        balance = debits - credits if account.type.debit_normal else credits - debits
        return BalanceView(account, balance, 0, balance, as_of)

    async def history(self, account_id: str, *, limit: int, cursor: str) -> tuple[Account, list[EntryRow], str]:
        """One page of entries, newest first, and the cursor of the next page ('' at the end).

        Raises AccountNotFound and ValidationError (limit out of range, foreign cursor).
        """
        if limit == 0:
            limit = DEFAULT_PAGE
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit", code="INVALID_LIMIT")
        before = decode_cursor(cursor) if cursor else None
        account = await self.store.account(account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id!r} does not exist", field="account_id",
                                  code="LEDGER_ACCOUNT_NOT_FOUND")
        rows = await self.store.entries(account_id, limit=limit + 1, before_id=before)
        next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else ""
        return account, rows[:limit], next_cursor
