"""Ledger use cases: post transfers, accounts, holds, reversals, balances and history."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from services.kernel.errors import NotFound, Unavailable, ValidationError
from services.kernel.instants import parse_window
from services.kernel.money import INT64_MAX, Money, MoneyError, minor_units_from_json
from services.ledger.domain import events, rules
from services.ledger.domain.errors import (
    AccountExists,
    AccountNotFound,
    TransferExists,
    TransferNotFound,
    TransferRejected,
)
from services.ledger.domain.events import LedgerEvent, outcome_event
from services.ledger.domain.model import (
    POSTING_FAILED,
    Account,
    AccountDefinition,
    AccountType,
    LedgerEntry,
    Outcome,
    Posted,
    Rejected,
    TransferInstruction,
    TransferKind,
    TransferStatus,
    accounts_to_open,
    check_transfer,
    invalid_transfer,
    post_in_order,
    settle_hold,
)
from services.ledger.domain.schema import (
    AccountRef,
    AppliedSchema,
    PostingKind,
    Schema,
    SchemaChange,
    SchemaVersionConflict,
    StrandedAccount,
    Violation,
    accounts_opened_under,
    diff,
    load_schema,
    metadata_filters,
    parse_schema,
    posting_of,
    refuse_breaking,
    stranded_accounts,
    strands_error,
    violation_error,
)
from services.ledger.domain.transfers import (
    HoldAction,
    TransferRecord,
    decide_hold,
    plan_posting,
    plan_reversal,
    require_settled_as,
    settled,
    unknown_transfers,
)
from services.ledger.service.unit_of_work import ConcurrentWrite, LedgerRepository, LedgerUnitOfWork

log = logging.getLogger(__name__)

# Tries of a queued batch (see apply_messages): as new, then reading what is stored, then once more
# for a copy another transaction was committing meanwhile. Past them, the worker's fallbacks take over.
_POSTING_ATTEMPTS = 3

DEFAULT_PAGE = 100
MAX_PAGE = 500


@dataclass(frozen=True)
class BalanceView:
    account: Account
    balance_minor: int
    pending_minor: int
    available_minor: int
    as_of: datetime | None
    last_entry_id: int = 0  # with as_of: the newest entry counted (a watermark for event consumers)
    # The class the account belongs to under the schema in force ('' for none) and that version (0: none).
    account_class: str = ""
    schema_version: int = 0


@dataclass(frozen=True)
class NewAccount:
    id: str
    currency: str
    type: str
    allow_overdraft: bool
    overdraft_limit: object
    metadata: dict[str, str]


@dataclass(frozen=True)
class Reversal:
    record: TransferRecord
    replayed: bool


@dataclass(frozen=True)
class NewHold:
    idempotency_key: str
    source_account_id: str
    destination_account_id: str
    amount: object
    currency: str
    expires_at: datetime | None
    metadata: dict[str, str]
    code: str = ""


@dataclass(frozen=True)
class SchemaPlan:
    """What applying a document does: the version in force, the changes, the accounts it would strand,
    and — once applied — the new version (None for a dry run, or a document equal to the one in force)."""

    in_force: int
    changes: list[SchemaChange]
    stranded: list[StrandedAccount]
    current: AppliedSchema | None = None  # the version in force before (None: no schema yet)
    applied: AppliedSchema | None = None


def encode_cursor(prefix: str, position: object) -> str:
    return base64.urlsafe_b64encode(f"{prefix}:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    found, _, value = raw.partition(":")
    if found != prefix or not value:
        raise _foreign_cursor()
    return value


def _foreign_cursor() -> ValidationError:
    return ValidationError("cursor is not one this API returned", field="cursor", code="INVALID_CURSOR")


def _entry_position(cursor: str) -> int:
    """An entry id: ASCII digits within int64 (the database refuses a larger one with an error)."""
    value = decode_cursor(cursor, "e")
    if not (value.isascii() and value.isdigit() and int(value) <= INT64_MAX):
        raise _foreign_cursor()
    return int(value)


def _account_position(cursor: str) -> str:
    """An account id, shaped like one (a NUL, say, is refused by the database with an error)."""
    value = decode_cursor(cursor, "a")
    if not rules.is_account_id(value):
        raise _foreign_cursor()
    return value


def _page_size(limit: int) -> int:
    if limit == 0:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit", code="INVALID_LIMIT")
    return limit


def _account_not_found(account_id: str) -> AccountNotFound:
    return AccountNotFound(
        f"account {account_id!r} does not exist", field="account_id", code="LEDGER_ACCOUNT_NOT_FOUND"
    )


def _transfer_not_found(transfer_id: str) -> TransferNotFound:
    return TransferNotFound(
        f"transfer {transfer_id!r} does not exist", field="transfer_id", code="LEDGER_TRANSFER_NOT_FOUND"
    )


@dataclass
class LedgerService:
    """The ledger's use cases. Each write is one unit of work (one transaction) that locks what it
    changes in the documented order, applies the domain's decisions and queues their events."""

    uow: LedgerUnitOfWork
    default_currency: str = "USD"
    auto_create_accounts: bool = True
    # The instant requests are judged by (a hold's expiry in the future) and events are stamped with;
    # the database's now() stamps what is stored.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False, compare=False)
    # Compiled schema versions by number: a version never changes once applied.
    _schemas: dict[int, Schema] = field(default_factory=dict, init=False, repr=False, compare=False)

    async def _schema(self, repo: LedgerRepository, *, hold: bool = True) -> Schema | None:
        """The schema in force for this transaction (None: no schema, nothing to enforce); `hold`: see
        LedgerRepository.schema_version_in_force."""
        version = await repo.schema_version_in_force(hold=hold)
        if not version:
            return None
        schema = self._schemas.get(version)
        if schema is None:
            (applied,) = await repo.schema_versions(version)
            schema = self._schemas[version] = parse_schema(applied.document).with_version(version)
        return schema

    # -- posting -------------------------------------------------------------------------------

    async def post_transfers(
        self, transfers: Sequence[TransferInstruction], *, message_id: str | None = None
    ) -> list[LedgerEvent]:
        """Posts each transfer at most once; returns one outcome event per transfer, in order. With
        `message_id`, a message applied before changes nothing (its outcomes are told again).

        A transfer id seen before answers with its original outcome, or LEDGER_TRANSFER_EXISTS when
        it now names a different transfer. Rejections (insufficient funds, currency mismatch) are
        outcomes, not errors. So is a transfer that breaks an input rule (rules.instruction_problem:
        INVALID_CURRENCY, UNKNOWN_CURRENCY, INVALID_AMOUNT, SAME_ACCOUNT, ...): it is answered in its
        place and nothing of it is stored, so its id stays free for a corrected transfer. The same goes
        for a transfer the schema in force refuses (SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT, ...; see
        services.ledger.domain.schema): nothing stored, no account opened.
        """
        refused = {i: r for i, t in enumerate(transfers) if (r := invalid_transfer(t)) is not None}
        valid = [t for i, t in enumerate(transfers) if i not in refused]
        try:
            told = await self._post_once(valid, message_id)
        except ConcurrentWrite:
            # A concurrent call recorded one of these ids first; now they are known, so this answers
            # with their recorded outcomes.
            told = await self._post_once(valid, message_id)
        missing = [t.transfer_id for t in valid if t.transfer_id not in told]
        if missing:  # in a message applied before: the outcomes recorded then
            async with self.uow.reading() as repo:
                told.update({tid: r.event() for tid, r in (await repo.transfer_records(missing)).items()})
        now = self.clock()
        return [
            outcome_event(refused[i], now) if i in refused else told[t.transfer_id] for i, t in enumerate(transfers)
        ]

    async def _post_once(
        self, transfers: Sequence[TransferInstruction], message_id: str | None
    ) -> dict[str, LedgerEvent]:
        async with self.uow.transaction() as repo:
            if message_id is not None and not await repo.claim_messages([message_id]):
                return {}
            return {e.transfer_id: e for e in await self._post(repo, list(transfers), well_formed=True)}

    async def check_transfers(self, transfers: Sequence[TransferInstruction]) -> tuple[int, list[Violation | None]]:
        """(the schema version in force, 0 for none; per transfer the rule of that version it breaks, or
        None). Stores nothing and locks no account: ingest asks this before its 202, and the posting checks
        again under the version in force then. A transfer that breaks an input rule (invalid_transfer)
        is not the schema's to judge: None here, rejected when posted."""
        async with self.uow.reading() as repo:
            # Unheld: a row lock would dirty the version's row on every check, for nothing to protect.
            schema = await self._schema(repo, hold=False)
            if schema is None or not transfers:
                return (schema.version if schema else 0), [None] * len(transfers)
            well_formed = [t for t in transfers if invalid_transfer(t) is None]
            accounts = await repo.accounts_by_id(
                {a for t in well_formed for a in (t.debit_account_id, t.credit_account_id)}
            )
        _, refused = refuse_breaking(schema, well_formed, accounts)
        broken = {id(r.transfer): Violation(r.code, r.message) for r in refused}
        return schema.version, [broken.get(id(t)) for t in transfers]

    async def apply_message(self, transfers: Sequence[TransferInstruction], message_id: str) -> None:
        """Worker path: posts one queued batch; a redelivered message changes nothing."""
        await self.apply_messages([(message_id, transfers)])

    async def apply_messages(self, messages: Sequence[tuple[str, Sequence[TransferInstruction]]]) -> bool:
        """Worker path: posts the transfers of several queued messages in ONE transaction, in message
        order. Messages applied before are skipped (SQS redelivers); False when all of them were.

        The transfers are first posted as new, without looking their ids up: a transfer reaches the
        queue once but for a resend, and the lookup was the costliest read of a batch. Should one be
        stored already, its primary key refuses the whole transaction (ConcurrentWrite) and the batch
        is posted again reading what is stored, so it is told its recorded outcome as before. A copy
        in flight in another transaction (not readable yet, refused once it commits) costs one more try."""
        assume_new = True
        for _ in range(_POSTING_ATTEMPTS - 1):
            try:
                return await self._apply_messages(messages, assume_new=assume_new)
            except ConcurrentWrite:
                log.info(
                    "a queued transfer was stored already (a resend); posting its batch again, reading what is stored",
                    extra={"fields": {"messages": [message_id for message_id, _ in messages]}},
                )
                assume_new = False
        return await self._apply_messages(messages, assume_new=False)

    async def _apply_messages(
        self, messages: Sequence[tuple[str, Sequence[TransferInstruction]]], *, assume_new: bool
    ) -> bool:
        async with self.uow.transaction() as repo:
            fresh = await repo.claim_messages([message_id for message_id, _ in messages])
            if not fresh:
                return False
            transfers = [t for message_id, batch in messages if message_id in fresh for t in batch]
            await self._post(repo, transfers, assume_new=assume_new)
            return True

    async def _post(
        self,
        repo: LedgerRepository,
        transfers: list[TransferInstruction],
        *,
        well_formed: bool = False,
        assume_new: bool = False,
    ) -> list[LedgerEvent]:
        """Posts (or, for holds, reserves) `transfers` in the caller's transaction; the events told.

        A transfer breaking an input rule is only told as rejected (see _refuse): checked before
        anything is read or written for it, it opens no account and leaves no transfer row.
        `well_formed`: the caller has just refused those itself (post_transfers). `assume_new`: the
        ids are not looked up; one that is stored already makes the insert raise ConcurrentWrite."""
        now = await repo.now()
        refusals: list[LedgerEvent] = []
        if not well_formed:
            transfers, refusals = await self._refuse(repo, transfers, now)
        known = {} if assume_new else await repo.transfer_records([t.transfer_id for t in transfers])
        plan = plan_posting(transfers, known, now)
        if not plan.fresh:
            await repo.queue_events(plan.repeats)
            return [*refusals, *plan.repeats]
        schema = await self._schema(repo)
        named = {a for t in plan.fresh for a in (t.debit_account_id, t.credit_account_id)}
        accounts = await repo.lock_accounts(named)
        fresh, breaking = plan.fresh, list[Rejected]()
        if schema is not None:
            # Refused by the schema: told like a malformed transfer, nothing stored, no account opened.
            fresh, breaking = refuse_breaking(schema, fresh, accounts)
            named = {a for t in fresh for a in (t.debit_account_id, t.credit_account_id)}
        missing = named - accounts.keys()
        if missing and self.auto_create_accounts:
            opened = accounts_to_open(fresh, missing)
            if schema is None:
                await repo.open_accounts(opened)
            else:
                await repo.open_classified_accounts(accounts_opened_under(schema, opened))
            accounts = await repo.lock_accounts(missing)
        outcomes = post_in_order(fresh, accounts)
        if schema is None:
            await repo.insert_transfers(outcomes, now)
        elif outcomes:
            await repo.insert_transfers(outcomes, now, schema_version=schema.version)
        entry_ids = iter(await repo.append_entries([o.transfer for o in outcomes if isinstance(o, Posted)], now))
        await repo.save_accounts(now)
        told = [outcome_event(o, now, next(entry_ids) if isinstance(o, Posted) else None) for o in outcomes]
        told.extend(outcome_event(r, now) for r in breaking)
        await repo.queue_events([*told, *plan.repeats])
        return [*refusals, *told, *plan.repeats]

    @staticmethod
    async def _refuse(
        repo: LedgerRepository, transfers: list[TransferInstruction], now: datetime
    ) -> tuple[list[TransferInstruction], list[LedgerEvent]]:
        """(the well-formed transfers, the rejections of the others). Transfers from the queue were
        accepted by a sender that waits for an outcome: their rejection goes through the outbox
        (ingest then shows FAILED with the code), without the metadata that may be what broke the
        rule. An id that is itself malformed was accepted by nobody: there is no one to tell."""
        valid: list[TransferInstruction] = []
        told: list[LedgerEvent] = []
        for transfer in transfers:
            refused = invalid_transfer(transfer)
            if refused is None:
                valid.append(transfer)
            else:
                told.append(outcome_event(replace(refused, transfer=replace(transfer, metadata={})), now))
        if told:
            await repo.queue_events([e for e in told if rules.is_transfer_id(e.transfer_id)])
            log.warning("refused malformed transfers", extra={"fields": {"transfers": len(told)}})
        return valid, told

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
        it to the dead-letter queue. When the database is unavailable, every message is left for
        redelivery as it is.
        """
        try:
            await self.apply_messages([(message_id, transfers) for message_id, transfers, _ in deliveries])
            return [True] * len(deliveries)
        except Unavailable:
            # The database is down, not the messages bad: smaller batches would fail alike, and giving
            # up on their transfers would be wrong. SQS redelivers them once it is back.
            log.warning("database unavailable; messages left for redelivery", extra={"fields": {"n": len(deliveries)}})
            return [False] * len(deliveries)
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
                async with self.uow.transaction() as repo:
                    await self._post(repo, [transfer])
            except Exception:
                log.exception("posting one transfer failed", extra={"fields": {"transfer_id": transfer.transfer_id}})
                failed.append(transfer)
        return failed

    async def give_up(self, transfers: Sequence[TransferInstruction]) -> list[str]:
        """Records transfers that failed on every delivery as REJECTED (LEDGER_POSTING_FAILED): their
        senders get a final FAILED, and a redrive from the dead-letter queue cannot post them later.
        Ids already recorded are left alone. Returns the ids rejected."""
        reason = "the ledger could not post this transfer after every retry; the message is in the dead-letter queue"
        async with self.uow.transaction() as repo:
            fresh = unknown_transfers(transfers, await repo.transfer_records([t.transfer_id for t in transfers]))
            if not fresh:
                return []
            now = await repo.now()
            outcomes: list[Outcome] = [Rejected(t, POSTING_FAILED, reason) for t in fresh]
            await repo.insert_transfers(outcomes, now)
            await repo.queue_events([outcome_event(o, now) for o in outcomes])
            return [t.transfer_id for t in fresh]

    # -- accounts ------------------------------------------------------------------------------

    async def create_account(self, new: NewAccount) -> tuple[Account, bool]:
        """(account, created?). With a schema in force the account must fit the class its id matches (its
        type by default). Raises ValidationError, SchemaViolation (SCHEMA_ACCOUNT_CLASS_UNKNOWN,
        SCHEMA_ACCOUNT_TYPE_MISMATCH, SCHEMA_CURRENCY_NOT_ALLOWED, SCHEMA_OVERDRAFT_NOT_ALLOWED,
        SCHEMA_ACCOUNT_METADATA_INVALID) and AccountExists (same id, other definition)."""
        account_id = rules.account_id(new.id, "id")
        currency = rules.currency(new.currency or self.default_currency)
        try:
            asked = AccountType(new.type.upper()) if new.type else None
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
        metadata = rules.metadata(new.metadata)
        async with self.uow.transaction() as repo:
            schema = await self._schema(repo)
            definition = AccountDefinition(
                account_id, currency, asked or AccountType.LIABILITY, new.allow_overdraft, limit, metadata
            )
            if schema is not None:
                found = schema.check_account(account_id, currency, asked, new.allow_overdraft, limit, metadata)
                if isinstance(found, Violation):
                    raise violation_error(found)
                definition = replace(definition, type=found.type, account_class=found.name)
            account, created = await repo.create_account(definition)
        if not created and not definition.matches(account):
            raise AccountExists(
                f"account {account_id!r} already exists with a different definition",
                field="id",
                code="LEDGER_ACCOUNT_EXISTS",
            )
        return account, created

    async def account(self, account_id: str) -> Account:
        """Raises ValidationError (a malformed id) and AccountNotFound."""
        rules.account_id(account_id, "account_id")
        async with self.uow.reading() as repo:
            account = await repo.account(account_id)
        if account is None:
            raise _account_not_found(account_id)
        return account

    async def accounts(self, *, limit: int, cursor: str, metadata: Sequence[str] = ()) -> tuple[list[Account], str]:
        """One page of accounts in id order, only those whose metadata has every `field:value` of
        `metadata` (fields the schema in force indexes for accounts). Raises ValidationError (limit out
        of range, foreign cursor, METADATA_FIELD_NOT_INDEXED, INVALID_METADATA_FILTER)."""
        size = _page_size(limit)
        after = _account_position(cursor) if cursor else None
        async with self.uow.reading() as repo:
            filters = await self._metadata_filters(repo, metadata, "accounts")
            rows = await repo.accounts_after(after, size + 1, metadata=filters)
        next_cursor = encode_cursor("a", rows[size - 1].id) if len(rows) > size else ""
        return rows[:size], next_cursor

    # -- holds ---------------------------------------------------------------------------------

    async def create_hold(self, new: NewHold) -> TransferRecord:
        """Reserves funds. Raises ValidationError, SchemaViolation (the schema in force refuses it: nothing
        is stored), TransferRejected (funds, currency) and TransferExists (the key names a different transfer)."""
        key = rules.transfer_id(new.idempotency_key, "idempotencyKey")
        source = rules.account_id(new.source_account_id, "sourceAccountId")
        destination = rules.account_id(new.destination_account_id, "destinationAccountId")
        if source == destination:
            raise ValidationError(
                "destinationAccountId must differ from sourceAccountId",
                field="destinationAccountId",
                code="SAME_ACCOUNT",
            )
        currency = rules.currency(new.currency or self.default_currency)
        amount = rules.positive_amount(new.amount, currency)
        if new.expires_at is not None and new.expires_at <= self.clock():
            raise ValidationError("expiresAt must be in the future", field="expiresAt", code="INVALID_DATE")
        instruction = TransferInstruction(
            key,
            source,
            destination,
            Money(amount, currency),
            rules.metadata(new.metadata),
            self.clock(),
            pending=True,
            expires_at=new.expires_at,
            code=rules.transfer_type(new.code),
        )
        (event,) = await self.post_transfers([instruction])
        if isinstance(event, events.TransferRejected):
            if event.code == "LEDGER_TRANSFER_EXISTS":
                raise TransferExists(event.message, field="idempotencyKey", code=event.code)
            if event.code.startswith("SCHEMA_"):
                raise violation_error(Violation(event.code, event.message))
            raise TransferRejected(event.message, code=event.code)
        return await self.hold(key)

    async def hold(self, hold_id: str) -> TransferRecord:
        """Raises ValidationError (a malformed id) and TransferNotFound."""
        rules.transfer_id(hold_id, "hold_id")
        async with self.uow.reading() as repo:
            record = (await repo.transfer_records([hold_id])).get(hold_id)
        if record is None or record.kind is not TransferKind.HOLD:
            raise TransferNotFound(f"hold {hold_id!r} does not exist", field="hold_id", code="LEDGER_HOLD_NOT_FOUND")
        return record

    async def post_hold(self, hold_id: str, amount: object | None) -> TransferRecord:
        """Posts the whole hold, or `amount` of it. Raises TransferNotFound, ValidationError (more than
        held), SchemaViolation (the schema in force refuses its accounts or amount) and
        HoldAlreadyResolved (voided, expired, or posted with another amount)."""
        held = (await self.hold(hold_id)).instruction.amount
        minor = None if amount is None else rules.positive_amount(amount, held.currency)
        if minor is not None and minor > held.minor_units:
            raise ValidationError(f"amount exceeds the {held} held", field="amount", code="LEDGER_AMOUNT_EXCEEDS_HOLD")
        final, _ = await self._settle_hold(hold_id, HoldAction.POST, minor)
        return require_settled_as(final, HoldAction.POST, minor)

    async def void_hold(self, hold_id: str) -> TransferRecord:
        """Releases the hold. Raises TransferNotFound and HoldAlreadyResolved (already posted or expired)."""
        await self.hold(hold_id)
        final, _ = await self._settle_hold(hold_id, HoldAction.VOID)
        return require_settled_as(final, HoldAction.VOID)

    async def expire_due_holds(self, batch: int = 100) -> int:
        """Releases holds past their expiry; returns how many it expired."""
        async with self.uow.reading() as repo:
            due = await repo.due_holds(batch)
        expired = 0
        for hold_id in due:
            _, changed = await self._settle_hold(hold_id, HoldAction.EXPIRE)
            expired += changed
        return expired

    async def _settle_hold(
        self, hold_id: str, action: HoldAction, post_minor: int | None = None
    ) -> tuple[TransferRecord, bool]:
        """Applies `action` to a hold in one transaction that locks the hold row first, so of racing
        calls exactly one changes it; the others find it final. Returns (the hold afterwards, changed?)."""
        async with self.uow.transaction() as repo:
            record = (await repo.transfer_records([hold_id], lock=True))[hold_id]
            now = await repo.now()
            decision = decide_hold(record, action, now, post_minor)
            if decision is None:
                return record, False
            t = record.instruction
            accounts = await repo.lock_accounts({t.debit_account_id, t.credit_account_id})
            if decision.posted_minor:  # voiding or expiring releases a reservation: never refused
                await self._enforce(
                    repo,
                    replace(t, amount=Money(decision.posted_minor, t.amount.currency)),
                    accounts,
                    PostingKind.POST_HOLD,
                )
            settle_hold(
                accounts[t.debit_account_id],
                accounts[t.credit_account_id],
                t.amount.minor_units,
                decision.posted_minor,
            )
            posted = Money(decision.posted_minor, t.amount.currency)
            entry_ids = None
            if decision.posted_minor:
                (entry_ids,) = await repo.append_entries([replace(t, amount=posted)], now)
            await repo.settle_hold(hold_id, decision, now)
            await repo.save_accounts(now)
            final = settled(record, decision, now, entry_ids)
            if entry_ids is not None:
                await repo.queue_events([events.HoldPosted(t, posted, now), final.event()])
            else:
                await repo.queue_events([events.HoldVoided(t, decision.expired, now)])
            return final, True

    async def _enforce(
        self, repo: LedgerRepository, transfer: TransferInstruction, accounts: dict[str, Account], kind: PostingKind
    ) -> Schema | None:
        """The schema in force, once it allows `transfer` as a `kind` posting; raises SchemaViolation."""
        schema = await self._schema(repo)
        if schema is not None:
            violation = schema.check(posting_of(transfer, kind, accounts))
            if violation is not None:
                raise violation_error(violation)
        return schema

    # -- reversals -----------------------------------------------------------------------------

    async def reverse(self, transfer_id: str, idempotency_key: str, reason: str) -> Reversal:
        """Posts the mirror transfer of a posted one, linked both ways. Raises ValidationError,
        TransferNotFound, NotReversible, TransferExists, SchemaViolation (its type allows no reversal)
        and TransferRejected (the reversal would overdraw an account that does not allow it)."""
        rules.transfer_id(transfer_id, "transfer_id")
        key = rules.transfer_id(idempotency_key, "idempotencyKey")
        reason = rules.reason(reason)
        async with self.uow.transaction() as repo:
            original = (await repo.transfer_records([transfer_id], lock=True)).get(transfer_id)
            if original is None:
                raise _transfer_not_found(transfer_id)
            existing = (await repo.transfer_records([key])).get(key)
            planned = plan_reversal(original, existing, key, reason)
            if isinstance(planned, TransferRecord):
                return Reversal(planned, replayed=True)
            accounts = await repo.lock_accounts({planned.debit_account_id, planned.credit_account_id})
            schema = await self._enforce(repo, planned, accounts, PostingKind.REVERSAL)
            rejection = check_transfer(planned, accounts)
            if rejection is not None:
                raise TransferRejected(rejection.message, code=rejection.code)
            post_in_order([planned], accounts)
            now = await repo.now()
            versioned = {"schema_version": schema.version} if schema else {}
            await repo.insert_transfers([Posted(planned)], now, reverses=transfer_id, reason=reason, **versioned)
            ((debit_entry, credit_entry),) = await repo.append_entries([planned], now)
            await repo.mark_reversed(transfer_id, key)
            await repo.save_accounts(now)
            await repo.queue_events(
                [
                    events.TransferPosted(planned, now, debit_entry, credit_entry),
                    events.TransferReversed(transfer_id, planned, reason, now),
                ]
            )
        record = TransferRecord(
            planned,
            TransferKind.REVERSAL,
            TransferStatus.POSTED,
            None,
            None,
            now,
            reverses_transfer_id=transfer_id,
            reason=reason,
            debit_entry_id=debit_entry,
            credit_entry_id=credit_entry,
        )
        return Reversal(record, replayed=False)

    async def transfer(self, transfer_id: str) -> TransferRecord:
        """Raises ValidationError (a malformed id) and TransferNotFound."""
        rules.transfer_id(transfer_id, "transfer_id")
        async with self.uow.reading() as repo:
            record = (await repo.transfer_records([transfer_id])).get(transfer_id)
        if record is None:
            raise _transfer_not_found(transfer_id)
        return record

    # -- reads ---------------------------------------------------------------------------------

    async def balance(self, account_id: str, as_of: datetime | None = None) -> BalanceView:
        """With the account's class under the schema in force and that version (what reconciliation takes
        a class's default matching rules from), read in the same transaction. Raises ValidationError (a
        malformed id) and AccountNotFound."""
        rules.account_id(account_id, "account_id")
        async with self.uow.reading() as repo:
            account = await repo.account(account_id)
            if account is None:
                raise _account_not_found(account_id)
            schema = await self._schema(repo, hold=False)
            totals = await repo.totals_as_of(account_id, as_of) if as_of is not None else None
        found = schema.class_of(AccountRef(account.id, account.account_class)) if schema is not None else None
        cls, version = (found.name if found else ""), (schema.version if schema else 0)
        if totals is None:
            pending, available = account.pending_minor, account.available_minor
            return BalanceView(account, account.balance_minor, pending, available, None, 0, cls, version)
        debits, credits, last_entry_id = totals
        balance = debits - credits if account.type.debit_normal else credits - debits
        return BalanceView(account, balance, 0, balance, as_of, last_entry_id, cls, version)

    async def history(
        self,
        account_id: str,
        *,
        limit: int,
        cursor: str,
        since: str = "",
        until: str = "",
        metadata: Sequence[str] = (),
    ) -> tuple[Account, list[LedgerEntry], str]:
        """One page of entries, newest first, and the cursor of the next page ('' at the end); with
        `metadata` (`field:value`, fields the schema in force indexes for transfers) only the entries of
        transfers whose metadata has them all.

        Raises AccountNotFound and ValidationError (limit out of range, foreign cursor, bad dates,
        METADATA_FIELD_NOT_INDEXED, INVALID_METADATA_FILTER).
        """
        size = _page_size(limit)
        before = _entry_position(cursor) if cursor else None
        start, end = parse_window(since, until, start_field="since", end_field="until")
        account = await self.account(account_id)
        async with self.uow.reading() as repo:
            filters = await self._metadata_filters(repo, metadata, "transfers")
            rows = await repo.entries(
                account_id, limit=size + 1, before_id=before, since=start, until=end, metadata=filters
            )
        next_cursor = encode_cursor("e", rows[size - 1].id) if len(rows) > size else ""
        return account, rows[:size], next_cursor

    async def _metadata_filters(self, repo: LedgerRepository, raw: Sequence[str], what: str) -> dict[str, str]:
        """The filters of a listing, on fields the schema in force indexes (none without a schema)."""
        if not raw:
            return {}
        schema = await self._schema(repo, hold=False)
        indexed: frozenset[str] = frozenset()
        if schema is not None:
            indexed = schema.indexed_account_metadata if what == "accounts" else schema.indexed_transfer_metadata
        return metadata_filters(raw, indexed, what)

    async def index_metadata(self) -> None:
        """Builds the indexes behind the metadata filters the schema in force declares (idempotent: run
        after each version applied and at start, in case a build was interrupted). Indexes of fields a
        later version drops are kept: history filtered under the old version stays fast."""
        async with self.uow.reading() as repo:
            schema = await self._schema(repo, hold=False)
        if schema is not None:
            await self.uow.index_metadata(
                accounts=schema.indexed_account_metadata, transfers=schema.indexed_transfer_metadata
            )

    # -- the schema ----------------------------------------------------------------------------

    async def schema(self, version: int = 0) -> AppliedSchema | None:
        """The version in force (or `version`); None when no schema was ever applied. Raises NotFound
        (SCHEMA_VERSION_NOT_FOUND)."""
        async with self.uow.reading() as repo:
            if not version:
                version = await repo.schema_version_in_force()
                if not version:
                    return None
            found = await repo.schema_versions(version)
        if not found:
            raise NotFound(f"schema version {version} does not exist", field="version", code="SCHEMA_VERSION_NOT_FOUND")
        return found[0]

    async def schema_history(self) -> list[AppliedSchema]:
        """Every version applied, oldest first, with who applied it and when."""
        async with self.uow.reading() as repo:
            return await repo.schema_versions()

    async def apply_schema(
        self, text: str, *, applied_by: str, expected_version: int | None = None, dry_run: bool = False
    ) -> SchemaPlan:
        """Applies a schema document (YAML or JSON) as the next version, for new postings only: existing
        accounts and entries are never rewritten. The same document as the one in force changes
        nothing. A dry run only says what would change.

        Raises SchemaInvalid (the document, every problem with its path), SchemaVersionConflict (the
        version in force is not `expected_version`) and SchemaStrandsAccounts (existing accounts would
        match no class, or hold a currency their class no longer allows: listed, nothing changed).

        Once a version is applied, the indexes its indexedMetadata declares are built (CONCURRENTLY,
        after the commit: postings go on meanwhile) before this returns."""
        plan = await self._apply_schema(text, applied_by, expected_version, dry_run)
        if plan.applied is not None:
            await self.index_metadata()
        return plan

    async def _apply_schema(
        self, text: str, applied_by: str, expected_version: int | None, dry_run: bool
    ) -> SchemaPlan:
        new = load_schema(text)
        async with self.uow.reading() if dry_run else self.uow.transaction() as repo:
            in_force = await (repo.schema_version_in_force() if dry_run else repo.lock_schema())
            if expected_version is not None and expected_version != in_force:
                raise SchemaVersionConflict(
                    f"the schema in force is version {in_force}, not {expected_version}",
                    field="expectedVersion",
                    code="SCHEMA_VERSION_CONFLICT",
                    metadata={"version": str(in_force)},
                )
            current, record = None, None
            if in_force:
                (record,) = await repo.schema_versions(in_force)
                current = parse_schema(record.document)
            changes = diff(current, new)
            stranded = stranded_accounts(new, await repo.existing_accounts())
            plan = SchemaPlan(in_force, changes, stranded, record)
            if dry_run or (current is not None and not changes):
                return plan
            if stranded:
                raise strands_error(stranded)
            document = json.dumps(new.document(), sort_keys=True)
            applied = await repo.add_schema_version(in_force + 1, document, applied_by or "unknown")
            log.info("schema applied", extra={"fields": {"version": applied.version, "by": applied.applied_by}})
            return replace(plan, applied=applied)

    async def ping(self) -> None:
        await self.uow.ping()
