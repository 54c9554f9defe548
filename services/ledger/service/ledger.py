"""Ledger use cases: post transfers, accounts, holds, reversals, balances and history."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from payrecon.ledger.v1 import messages_pb2
from sqlalchemy.exc import IntegrityError

from services.kernel.errors import ValidationError
from services.kernel.identifiers import require_identifier, require_metadata, require_positive_amount
from services.kernel.money import Money, MoneyError, exponent_of, minor_units_from_json
from services.ledger.adapters.messages import event_transfer_id
from services.ledger.adapters.store import (
    AccountDefinition,
    EntryRow,
    LedgerStore,
    Reversal,
    ReversalRefused,
    TransferRecord,
)
from services.ledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    HoldAlreadyResolved,
    NotReversible,
    TransferExists,
    TransferNotFound,
    TransferRejected,
)
from services.ledger.domain.model import (
    Account,
    AccountType,
    Rejected,
    TransferInstruction,
    TransferKind,
    TransferStatus,
)

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 500
ID_LIMIT = 128
KEY_LIMIT = 255


@dataclass(frozen=True)
class BalanceView:
    account: Account
    balance_minor: int
    pending_minor: int
    available_minor: int
    as_of: datetime | None


@dataclass(frozen=True)
class NewAccount:
    id: str
    currency: str
    type: str
    allow_overdraft: bool
    overdraft_limit: object
    metadata: dict[str, str]


@dataclass(frozen=True)
class NewHold:
    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: object
    currency: str
    expires_at: datetime | None
    metadata: dict[str, str]


def encode_cursor(prefix: str, position: object) -> str:
    return base64.urlsafe_b64encode(f"{prefix}:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    found, _, value = raw.partition(":")
    if found != prefix or not value:
        raise ValidationError("cursor is not one this API returned", field="cursor", code="INVALID_CURSOR")
    return value


def _entry_position(cursor: str) -> int:
    value = decode_cursor(cursor, "e")
    if not value.isdigit():
        raise ValidationError("cursor is not one this API returned", field="cursor", code="INVALID_CURSOR")
    return int(value)


def parse_instant(value: str, field: str) -> datetime | None:
    """RFC 3339 instant or YYYY-MM-DD (UTC midnight); '' → None."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"{field} must be an RFC 3339 instant or a YYYY-MM-DD date, got {value!r}", field=field, code="INVALID_DATE"
        ) from None
    if parsed.tzinfo is None:
        raise ValidationError(f"{field} needs a time zone offset (or Z)", field=field, code="INVALID_DATE")
    return parsed


def _page_size(limit: int) -> int:
    if limit == 0:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit", code="INVALID_LIMIT")
    return limit


def _currency(value: str, field: str = "currency") -> str:
    currency = value.strip().upper()
    try:
        exponent_of(currency)
    except MoneyError as error:
        raise ValidationError(f"{field}: {error.message}", field=field, code=error.code) from None
    return currency


def _transfer_not_found(transfer_id: str) -> TransferNotFound:
    return TransferNotFound(
        f"transfer {transfer_id!r} does not exist", field="transfer_id", code="LEDGER_TRANSFER_NOT_FOUND"
    )


@dataclass
class LedgerService:
    store: LedgerStore
    default_currency: str = "USD"

    # -- posting -------------------------------------------------------------------------------

    async def post_transfers(
        self, transfers: Sequence[TransferInstruction], *, message_id: str | None = None
    ) -> list[messages_pb2.LedgerEvent]:
        """Posts each transfer at most once; returns one outcome event per transfer, in order.

        A transfer id seen before answers with its original outcome, or LEDGER_TRANSFER_EXISTS when
        it now names a different transfer. Rejections (insufficient funds, currency mismatch) are
        outcomes, not errors.
        """
        try:
            result = await self.store.post_batch(transfers, message_id=message_id)
        except IntegrityError:
            # A concurrent call inserted one of these ids first; now they are known, so this answers
            # with their recorded outcomes.
            result = await self.store.post_batch(transfers, message_id=message_id)
        if result is not None and not result.duplicates:
            return result.events  # every transfer was new: its event, in order
        fresh = (
            {}
            if result is None
            else {
                **{event_transfer_id(e): e for e in result.events},
                **result.repeats,
            }
        )
        missing = [t.transfer_id for t in transfers if t.transfer_id not in fresh]
        earlier = await self.store.transfer_events(missing) if missing else {}
        return [fresh.get(t.transfer_id) or earlier[t.transfer_id] for t in transfers]

    async def apply_message(self, transfers: Sequence[TransferInstruction], message_id: str) -> None:
        """Worker path: posts one queued batch; a redelivered message changes nothing."""
        await self.store.post_batch(transfers, message_id=message_id)

    async def handle_delivery(
        self, transfers: Sequence[TransferInstruction], message_id: str, *, last_delivery: bool
    ) -> bool:
        """Worker path for one SQS message; True when it is finished with (delete it). See handle_deliveries."""
        return (await self.handle_deliveries([(message_id, transfers, last_delivery)]))[0]

    async def handle_deliveries(
        self, deliveries: Sequence[tuple[str, Sequence[TransferInstruction], bool]]
    ) -> list[bool]:
        """Worker path for one SQS receive: (message id, transfers, last delivery?) per message; True
        for each message finished with.

        All messages are posted in ONE transaction. If that fails: message by message; a message
        that fails alone is posted transfer by transfer, so one poison transfer does not hold back
        the rest. A message with transfers still failing is left for redelivery — and on its last
        delivery those transfers are given up on (REJECTED, LEDGER_POSTING_FAILED) before SQS moves
        it to the dead-letter queue.
        """
        try:
            await self.store.post_messages([(message_id, transfers) for message_id, transfers, _ in deliveries])
            return [True] * len(deliveries)
        except Exception:
            log.exception(
                "posting received messages failed",
                extra={"fields": {"messages": [message_id for message_id, _, _ in deliveries]}},
            )
        if len(deliveries) > 1:
            return [(await self.handle_deliveries([delivery]))[0] for delivery in deliveries]
        _, transfers, last_delivery = deliveries[0]
        failed = await self.apply_one_by_one(transfers)
        if failed and last_delivery:
            await self.give_up(failed)
        return [not failed]

    async def apply_one_by_one(self, transfers: Sequence[TransferInstruction]) -> list[TransferInstruction]:
        """Fallback when a whole batch fails: each transfer in its own transaction, so one poison
        transfer does not hold back the rest. Returns those that still failed."""
        failed: list[TransferInstruction] = []
        for transfer in transfers:
            try:
                await self.store.post_batch([transfer])
            except Exception:
                log.exception("posting one transfer failed", extra={"fields": {"transfer_id": transfer.transfer_id}})
                failed.append(transfer)
        return failed

    async def give_up(self, transfers: Sequence[TransferInstruction]) -> list[str]:
        """Records transfers that failed on every delivery as REJECTED (LEDGER_POSTING_FAILED): their
        senders get a final FAILED, and a redrive from the dead-letter queue cannot post them later."""
        return await self.store.reject_unpostable(
            transfers,
            "the ledger could not post this transfer after every retry; the message is in the dead-letter queue",
        )

    # -- accounts ------------------------------------------------------------------------------

    async def create_account(self, new: NewAccount) -> tuple[Account, bool]:
        """(account, created?). Raises ValidationError and AccountExists (same id, other definition)."""
        account_id = require_identifier(new.id, "id", code="INVALID_ACCOUNT_ID", limit=ID_LIMIT)
        currency = _currency(new.currency or self.default_currency)
        try:
            kind = AccountType((new.type or AccountType.LIABILITY.value).upper())
        except ValueError:
            raise ValidationError(
                f"type must be one of {', '.join(t.value for t in AccountType)}",
                field="type",
                code="INVALID_ACCOUNT_TYPE",
            ) from None
        limit = 0
        if new.overdraft_limit is not None:
            try:
                limit = minor_units_from_json(new.overdraft_limit, currency)
            except MoneyError as error:
                raise ValidationError(
                    f"overdraftLimit: {error.message}", field="overdraftLimit", code=error.code
                ) from None
            if limit < 0:
                raise ValidationError(
                    "overdraftLimit must not be negative", field="overdraftLimit", code="INVALID_AMOUNT"
                )
        metadata = require_metadata(new.metadata, "metadata")
        definition = AccountDefinition(account_id, currency, kind, new.allow_overdraft, limit, metadata)
        account, created = await self.store.create_account(definition)
        if not created:
            same = (
                account.currency,
                account.type,
                account.allow_overdraft,
                account.overdraft_limit_minor,
                account.metadata,
            ) == (currency, kind, new.allow_overdraft, limit, metadata)
            if not same:
                raise AccountExists(
                    f"account {account_id!r} already exists with a different definition",
                    field="id",
                    code="LEDGER_ACCOUNT_EXISTS",
                )
        return account, created

    async def account(self, account_id: str) -> Account:
        """Raises AccountNotFound."""
        account = await self.store.account(account_id)
        if account is None:
            raise AccountNotFound(
                f"account {account_id!r} does not exist", field="account_id", code="LEDGER_ACCOUNT_NOT_FOUND"
            )
        return account

    async def accounts(self, *, limit: int, cursor: str) -> tuple[list[Account], str]:
        size = _page_size(limit)
        after = decode_cursor(cursor, "a") if cursor else None
        rows = await self.store.accounts_after(after, size + 1)
        next_cursor = encode_cursor("a", rows[size - 1].id) if len(rows) > size else ""
        return rows[:size], next_cursor

    # -- holds ---------------------------------------------------------------------------------

    async def create_hold(self, new: NewHold) -> TransferRecord:
        """Reserves funds. Raises ValidationError, TransferRejected (funds, currency) and
        TransferExists (the key names a different transfer)."""
        key = require_identifier(new.idempotency_key, "idempotencyKey", code="INVALID_IDEMPOTENCY_KEY", limit=KEY_LIMIT)
        source = require_identifier(new.source_account_id, "sourceAccountId", code="INVALID_ACCOUNT_ID", limit=ID_LIMIT)
        destination = require_identifier(
            new.destination_account_id, "destinationAccountId", code="INVALID_ACCOUNT_ID", limit=ID_LIMIT
        )
        if source == destination:
            raise ValidationError(
                "destinationAccountId must differ from sourceAccountId",
                field="destinationAccountId",
                code="SAME_ACCOUNT",
            )
        currency = _currency(new.currency or self.default_currency)
        amount = require_positive_amount(new.amount, currency, "amount")
        if new.expires_at is not None and new.expires_at <= datetime.now(UTC):
            raise ValidationError("expiresAt must be in the future", field="expiresAt", code="INVALID_DATE")
        metadata = require_metadata(new.metadata, "metadata")
        instruction = TransferInstruction(
            key,
            source,
            destination,
            Money(amount, currency),
            metadata,
            datetime.now(UTC),
            pending=True,
            expires_at=new.expires_at,
        )
        (event,) = await self.post_transfers([instruction])
        if event.WhichOneof("event") == "transfer_rejected":
            rejected = event.transfer_rejected
            if rejected.code == "LEDGER_TRANSFER_EXISTS":
                raise TransferExists(rejected.message, field="idempotencyKey", code=rejected.code)
            raise TransferRejected(rejected.message, code=rejected.code)
        return await self.hold(key)

    async def hold(self, hold_id: str) -> TransferRecord:
        """Raises TransferNotFound."""
        record = await self.store.transfer(hold_id)
        if record is None or record.kind is not TransferKind.HOLD:
            raise TransferNotFound(f"hold {hold_id!r} does not exist", field="hold_id", code="LEDGER_HOLD_NOT_FOUND")
        return record

    async def post_hold(self, hold_id: str, amount: object | None) -> TransferRecord:
        """Posts the whole hold, or `amount` of it. Raises TransferNotFound, ValidationError (more than
        held) and HoldAlreadyResolved (voided, expired, or posted with another amount)."""
        record = await self.hold(hold_id)
        held = record.instruction.amount
        minor = None if amount is None else require_positive_amount(amount, held.currency, "amount")
        if minor is not None and minor > held.minor_units:
            raise ValidationError(f"amount exceeds the {held} held", field="amount", code="LEDGER_AMOUNT_EXCEEDS_HOLD")
        settlement = await self.store.settle_hold(hold_id, post_minor=minor, void=False)
        assert settlement is not None
        final = settlement.record
        asked = held.minor_units if minor is None else minor
        if final.status is TransferStatus.POSTED and final.posted_amount.minor_units == asked:
            return final  # this call's effect, or the same request repeated
        raise self._already_resolved(final)

    async def void_hold(self, hold_id: str) -> TransferRecord:
        """Releases the hold. Raises TransferNotFound and HoldAlreadyResolved (already posted or expired)."""
        await self.hold(hold_id)
        settlement = await self.store.settle_hold(hold_id, post_minor=None, void=True)
        assert settlement is not None
        if settlement.record.status is TransferStatus.VOIDED:
            return settlement.record
        raise self._already_resolved(settlement.record)

    @staticmethod
    def _already_resolved(record: TransferRecord) -> HoldAlreadyResolved:
        code = "LEDGER_HOLD_EXPIRED" if record.status is TransferStatus.EXPIRED else "LEDGER_HOLD_ALREADY_RESOLVED"
        return HoldAlreadyResolved(
            f"hold {record.id!r} is already {record.status.value}",
            field="hold_id",
            code=code,
            metadata={"status": record.status.value},
        )

    async def expire_due_holds(self, batch: int = 100) -> int:
        """Releases holds past their expiry; returns how many it expired."""
        expired = 0
        for hold_id in await self.store.due_holds(batch):
            settlement = await self.store.settle_hold(hold_id, post_minor=None, void=False, expire_only=True)
            if settlement is not None and settlement.changed:
                expired += 1
        return expired

    # -- reversals -----------------------------------------------------------------------------

    async def reverse(self, transfer_id: str, idempotency_key: str, reason: str) -> Reversal:
        """Raises ValidationError, TransferNotFound, NotReversible, TransferExists and TransferRejected
        (the reversal would overdraw an account that does not allow it)."""
        key = require_identifier(idempotency_key, "idempotencyKey", code="INVALID_IDEMPOTENCY_KEY", limit=KEY_LIMIT)
        if len(reason) > 500:
            raise ValidationError("reason must be at most 500 characters", field="reason", code="INVALID_REASON")
        outcome = await self.store.reverse(transfer_id, key, reason)
        if outcome is None:
            raise _transfer_not_found(transfer_id)
        if isinstance(outcome, Rejected):
            raise TransferRejected(outcome.message, code=outcome.code)
        if isinstance(outcome, ReversalRefused):
            if outcome.id_taken:
                raise TransferExists(outcome.message, field="idempotencyKey", code="LEDGER_TRANSFER_EXISTS")
            raise NotReversible(outcome.message, field="transfer_id", code="LEDGER_NOT_REVERSIBLE")
        return outcome

    async def transfer(self, transfer_id: str) -> TransferRecord:
        """Raises TransferNotFound."""
        record = await self.store.transfer(transfer_id)
        if record is None:
            raise _transfer_not_found(transfer_id)
        return record

    # -- reads ---------------------------------------------------------------------------------

    async def balance(self, account_id: str, as_of: datetime | None = None) -> BalanceView:
        """Raises AccountNotFound."""
        account = await self.account(account_id)
        if as_of is None:
            return BalanceView(account, account.balance_minor, account.pending_minor, account.available_minor, None)
        debits, credits = await self.store.totals_as_of(account_id, as_of)
        balance = debits - credits if account.type.debit_normal else credits - debits
        return BalanceView(account, balance, 0, balance, as_of)

    async def history(
        self, account_id: str, *, limit: int, cursor: str, since: str = "", until: str = ""
    ) -> tuple[Account, list[EntryRow], str]:
        """One page of entries, newest first, and the cursor of the next page ('' at the end).

        Raises AccountNotFound and ValidationError (limit out of range, foreign cursor, bad dates).
        """
        size = _page_size(limit)
        before = _entry_position(cursor) if cursor else None
        start, end = parse_instant(since, "since"), parse_instant(until, "until")
        if start and end and start >= end:
            raise ValidationError("since must be before until", field="since", code="INVALID_DATE_RANGE")
        account = await self.account(account_id)
        rows = await self.store.entries(account_id, limit=size + 1, before_id=before, since=start, until=end)
        next_cursor = encode_cursor("e", rows[size - 1].id) if len(rows) > size else ""
        return account, rows[:size], next_cursor
