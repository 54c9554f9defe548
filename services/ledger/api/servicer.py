"""Thin gRPC servicer of LedgerService: proto → command → use case → proto."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from payrecon.ledger.v1 import ledger_pb2, ledger_pb2_grpc

from services.kernel.auth import current_principal
from services.kernel.errors import ValidationError
from services.kernel.grpc_server import set_http_status
from services.kernel.json_values import json_scalar
from services.kernel.money import format_minor
from services.kernel.timestamps import to_timestamp
from services.ledger.codecs import event_message, instruction_from_proto
from services.ledger.domain.model import Account
from services.ledger.domain.schema import AppliedSchema
from services.ledger.domain.transfers import TransferRecord
from services.ledger.service.ledger import LedgerService, NewAccount, NewHold

# A JSON number reaches a Struct as a double: integers beyond this may have been rounded on the way.
_DOUBLE_EXACT = 2**53


def account_message(account: Account) -> ledger_pb2.Account:
    cur = account.currency
    message = ledger_pb2.Account(
        id=account.id,
        currency=cur,
        type=account.type.value,
        allow_overdraft=account.allow_overdraft,
        overdraft_limit=format_minor(account.overdraft_limit_minor, cur),
        overdraft_limit_minor=account.overdraft_limit_minor,
        metadata=account.metadata,
        balance=format_minor(account.balance_minor, cur),
        pending=format_minor(account.pending_minor, cur),
        available=format_minor(account.available_minor, cur),
        balance_minor=account.balance_minor,
        pending_minor=account.pending_minor,
        available_minor=account.available_minor,
        status="ACTIVE",
        account_class=account.account_class or "",
    )
    if account.created_at:
        message.created_at.CopyFrom(to_timestamp(account.created_at))
    return message


def hold_message(record: TransferRecord) -> ledger_pb2.Hold:
    t = record.instruction
    cur = t.amount.currency
    posted = record.posted_amount_minor or 0
    hold = ledger_pb2.Hold(
        id=t.transfer_id,
        status=record.status.value,
        source_account_id=t.debit_account_id,
        destination_account_id=t.credit_account_id,
        amount=format_minor(t.amount.minor_units, cur),
        amount_minor=t.amount.minor_units,
        currency=cur,
        posted_amount=format_minor(posted, cur),
        posted_amount_minor=posted,
        created_at=to_timestamp(record.created_at),
        metadata=t.metadata,
        transfer_type=t.code,
    )
    if record.expires_at:
        hold.expires_at.CopyFrom(to_timestamp(record.expires_at))
    if record.resolved_at:
        hold.resolved_at.CopyFrom(to_timestamp(record.resolved_at))
    return hold


def transfer_message(record: TransferRecord) -> ledger_pb2.Transfer:
    t = record.instruction
    amount = record.posted_amount
    return ledger_pb2.Transfer(
        id=t.transfer_id,
        kind=record.kind.value,
        status=record.status.value,
        source_account_id=t.debit_account_id,
        destination_account_id=t.credit_account_id,
        amount=format_minor(amount.minor_units, amount.currency),
        amount_minor=amount.minor_units,
        currency=amount.currency,
        reverses_transfer_id=record.reverses_transfer_id or "",
        reversed_by_transfer_id=record.reversed_by or "",
        reason=record.reason or "",
        code=record.reject_code or "",
        message=record.reject_message or "",
        metadata=t.metadata,
        created_at=to_timestamp(record.created_at),
        transfer_type=t.code,
    )


def schema_message(applied: AppliedSchema | None) -> ledger_pb2.SchemaVersion:
    if applied is None:
        return ledger_pb2.SchemaVersion(version=0)
    document = struct_pb2.Struct()
    document.update(applied.document)
    return ledger_pb2.SchemaVersion(
        version=applied.version,
        document=document,
        applied_by=applied.applied_by,
        applied_at=to_timestamp(applied.applied_at),
    )


def _whole_numbers(value: object, path: str = "$") -> object:
    """A Struct's values with integral doubles as ints (the document's minor units are integers)."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and value.is_integer():
        if abs(value) > _DOUBLE_EXACT:
            raise ValidationError(
                f"{path}: {value:.0f} is beyond what a JSON number carries exactly; send documentText",
                field="document",
                code="SCHEMA_INVALID",
            )
        return int(value)
    return value


def _document_text(request: ledger_pb2.PutSchemaRequest) -> str:
    if request.document_text:
        return request.document_text
    if not request.HasField("document"):
        raise ValidationError("document or documentText is required", field="document", code="MISSING_FIELD")
    return json.dumps(_whole_numbers(json_format.MessageToDict(request.document)))


def _expected_version(request: ledger_pb2.PutSchemaRequest, context: grpc.aio.ServicerContext[Any, Any]) -> int | None:
    """The body's expectedVersion, else a REST If-Match header (`3`, `"3"` or `W/"3"`), else None."""
    if request.HasField("expected_version"):
        return request.expected_version
    for key, value in context.invocation_metadata() or ():
        if key == "if-match":
            raw = (value.decode() if isinstance(value, bytes) else value).strip().removeprefix("W/").strip('"')
            if not raw.isdigit():
                raise ValidationError(
                    'If-Match must be the schema version in force, e.g. "3"', field="If-Match", code="INVALID_IF_MATCH"
                )
            return int(raw)
    return None


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, ledger: LedgerService) -> None:
        self._ledger = ledger

    async def GetBalance(
        self,
        request: ledger_pb2.GetBalanceRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.GetBalanceRequest, ledger_pb2.Balance],
    ) -> ledger_pb2.Balance:
        as_of = request.as_of.ToDatetime(tzinfo=UTC) if request.HasField("as_of") else None
        view = await self._ledger.balance(request.account_id, as_of)
        currency = view.account.currency
        return ledger_pb2.Balance(
            account_id=view.account.id,
            currency=currency,
            balance=format_minor(view.balance_minor, currency),
            pending=format_minor(view.pending_minor, currency),
            available=format_minor(view.available_minor, currency),
            balance_minor=view.balance_minor,
            pending_minor=view.pending_minor,
            available_minor=view.available_minor,
            as_of=to_timestamp(view.as_of or datetime.now(UTC)),
            account_type=view.account.type.value,
            last_entry_id=view.last_entry_id,
            account_class=view.account_class,
            schema_version=view.schema_version,
        )

    async def ListLedgerEntries(
        self,
        request: ledger_pb2.ListLedgerEntriesRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.ListLedgerEntriesRequest, ledger_pb2.ListLedgerEntriesResponse],
    ) -> ledger_pb2.ListLedgerEntriesResponse:
        account, rows, next_cursor = await self._ledger.history(
            request.account_id,
            limit=request.limit,
            cursor=request.cursor,
            since=request.since,
            until=request.until,
            metadata=list(request.metadata),
        )
        entries = []
        for row in rows:
            signed = row.signed_minor(account)
            entries.append(
                ledger_pb2.LedgerEntry(
                    id=row.id,
                    transfer_id=row.transfer_id,
                    account_id=row.account_id,
                    entry_type=row.direction,
                    amount=format_minor(signed, row.currency),
                    amount_minor=signed,
                    currency=row.currency,
                    source_account_id=row.debit_account_id,
                    destination_account_id=row.credit_account_id,
                    status=row.status,
                    metadata=row.metadata,
                    created_at=to_timestamp(row.created_at),
                )
            )
        return ledger_pb2.ListLedgerEntriesResponse(account_id=account.id, entries=entries, next_cursor=next_cursor)

    async def PostTransfers(
        self,
        request: ledger_pb2.PostTransfersRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.PostTransfersRequest, ledger_pb2.PostTransfersResponse],
    ) -> ledger_pb2.PostTransfersResponse:
        events = await self._ledger.post_transfers([instruction_from_proto(t) for t in request.transfers])
        return ledger_pb2.PostTransfersResponse(outcomes=[event_message(e) for e in events])

    async def CheckTransfers(
        self,
        request: ledger_pb2.CheckTransfersRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.CheckTransfersRequest, ledger_pb2.CheckTransfersResponse],
    ) -> ledger_pb2.CheckTransfersResponse:
        version, verdicts = await self._ledger.check_transfers([instruction_from_proto(t) for t in request.transfers])
        return ledger_pb2.CheckTransfersResponse(
            schema_version=version,
            verdicts=[
                ledger_pb2.TransferVerdict(code=v.code, message=v.message) if v else ledger_pb2.TransferVerdict()
                for v in verdicts
            ],
        )

    async def CreateAccount(
        self,
        request: ledger_pb2.CreateAccountRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.CreateAccountRequest, ledger_pb2.Account],
    ) -> ledger_pb2.Account:
        account, created = await self._ledger.create_account(
            NewAccount(
                request.id,
                request.currency,
                request.type,
                request.allow_overdraft,
                json_scalar(request.overdraft_limit, request.HasField("overdraft_limit")),
                dict(request.metadata),
            )
        )
        if created:
            await set_http_status(context, 201)
        return account_message(account)

    async def GetAccount(
        self,
        request: ledger_pb2.GetAccountRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.GetAccountRequest, ledger_pb2.Account],
    ) -> ledger_pb2.Account:
        return account_message(await self._ledger.account(request.account_id))

    async def ListAccounts(
        self,
        request: ledger_pb2.ListAccountsRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.ListAccountsRequest, ledger_pb2.ListAccountsResponse],
    ) -> ledger_pb2.ListAccountsResponse:
        accounts, next_cursor = await self._ledger.accounts(
            limit=request.limit, cursor=request.cursor, metadata=list(request.metadata)
        )
        return ledger_pb2.ListAccountsResponse(accounts=[account_message(a) for a in accounts], next_cursor=next_cursor)

    async def CreateHold(
        self,
        request: ledger_pb2.CreateHoldRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.CreateHoldRequest, ledger_pb2.Hold],
    ) -> ledger_pb2.Hold:
        expires_at = request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None
        record = await self._ledger.create_hold(
            NewHold(
                request.idempotency_key,
                request.source_account_id,
                request.destination_account_id,
                json_scalar(request.amount, request.HasField("amount")),
                request.currency,
                expires_at,
                dict(request.metadata),
                request.code,
            )
        )
        return hold_message(record)

    async def GetHold(
        self,
        request: ledger_pb2.GetHoldRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.GetHoldRequest, ledger_pb2.Hold],
    ) -> ledger_pb2.Hold:
        return hold_message(await self._ledger.hold(request.hold_id))

    async def PostHold(
        self,
        request: ledger_pb2.PostHoldRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.PostHoldRequest, ledger_pb2.Hold],
    ) -> ledger_pb2.Hold:
        amount = json_scalar(request.amount, request.HasField("amount"))
        return hold_message(await self._ledger.post_hold(request.hold_id, amount))

    async def VoidHold(
        self,
        request: ledger_pb2.VoidHoldRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.VoidHoldRequest, ledger_pb2.Hold],
    ) -> ledger_pb2.Hold:
        return hold_message(await self._ledger.void_hold(request.hold_id))

    async def ReverseTransfer(
        self,
        request: ledger_pb2.ReverseTransferRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.ReverseTransferRequest, ledger_pb2.Transfer],
    ) -> ledger_pb2.Transfer:
        reversal = await self._ledger.reverse(request.transfer_id, request.idempotency_key, request.reason)
        if not reversal.replayed:
            await set_http_status(context, 201)
        return transfer_message(reversal.record)

    async def GetTransfer(
        self,
        request: ledger_pb2.GetTransferRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.GetTransferRequest, ledger_pb2.Transfer],
    ) -> ledger_pb2.Transfer:
        return transfer_message(await self._ledger.transfer(request.transfer_id))

    async def GetSchema(
        self,
        request: ledger_pb2.GetSchemaRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.GetSchemaRequest, ledger_pb2.SchemaVersion],
    ) -> ledger_pb2.SchemaVersion:
        return schema_message(await self._ledger.schema(request.version))

    async def PutSchema(
        self,
        request: ledger_pb2.PutSchemaRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.PutSchemaRequest, ledger_pb2.PutSchemaResponse],
    ) -> ledger_pb2.PutSchemaResponse:
        plan = await self._ledger.apply_schema(
            _document_text(request),
            applied_by=current_principal(),
            expected_version=_expected_version(request, context),
            dry_run=request.dry_run,
        )
        in_force = plan.applied or plan.current
        return ledger_pb2.PutSchemaResponse(
            applied=plan.applied is not None,
            previous_version=plan.in_force,
            schema=schema_message(in_force),
            changes=[
                ledger_pb2.SchemaChange(
                    change=c.change, what=c.what, name=c.name, fields=list(c.fields), description=c.describe()
                )
                for c in plan.changes
            ],
            stranded=[ledger_pb2.StrandedAccount(account_id=a.id, reason=a.reason) for a in plan.stranded],
        )

    async def ListSchemaVersions(
        self,
        request: ledger_pb2.ListSchemaVersionsRequest,
        context: grpc.aio.ServicerContext[ledger_pb2.ListSchemaVersionsRequest, ledger_pb2.ListSchemaVersionsResponse],
    ) -> ledger_pb2.ListSchemaVersionsResponse:
        return ledger_pb2.ListSchemaVersionsResponse(
            versions=[schema_message(a) for a in await self._ledger.schema_history()]
        )
