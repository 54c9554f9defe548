import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from payrecon.common.v1 import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferRequest(_message.Message):
    __slots__ = ("transfer_id", "debit_account_id", "credit_account_id", "amount", "metadata", "accepted_at", "pending", "expires_at")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: _money_pb2.Money
    metadata: _containers.ScalarMap[str, str]
    accepted_at: _timestamp_pb2.Timestamp
    pending: bool
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[str] = ..., debit_account_id: _Optional[str] = ..., credit_account_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pending: _Optional[bool] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TransferBatch(_message.Message):
    __slots__ = ("transfers",)
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    transfers: _containers.RepeatedCompositeFieldContainer[TransferRequest]
    def __init__(self, transfers: _Optional[_Iterable[_Union[TransferRequest, _Mapping]]] = ...) -> None: ...

class TransferPosted(_message.Message):
    __slots__ = ("transfer_id", "debit_account_id", "credit_account_id", "amount", "posted_at", "debit_entry_id", "credit_entry_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: _money_pb2.Money
    posted_at: _timestamp_pb2.Timestamp
    debit_entry_id: int
    credit_entry_id: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, transfer_id: _Optional[str] = ..., debit_account_id: _Optional[str] = ..., credit_account_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., debit_entry_id: _Optional[int] = ..., credit_entry_id: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TransferRejected(_message.Message):
    __slots__ = ("transfer_id", "code", "message", "rejected_at", "debit_account_id", "credit_account_id", "amount")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    code: str
    message: str
    rejected_at: _timestamp_pb2.Timestamp
    debit_account_id: str
    credit_account_id: str
    amount: _money_pb2.Money
    def __init__(self, transfer_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., rejected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., debit_account_id: _Optional[str] = ..., credit_account_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class HoldCreated(_message.Message):
    __slots__ = ("hold_id", "debit_account_id", "credit_account_id", "amount", "created_at", "expires_at")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    debit_account_id: str
    credit_account_id: str
    amount: _money_pb2.Money
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., debit_account_id: _Optional[str] = ..., credit_account_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HoldPosted(_message.Message):
    __slots__ = ("hold_id", "held", "posted", "posted_at")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    POSTED_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    held: _money_pb2.Money
    posted: _money_pb2.Money
    posted_at: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., held: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., posted: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class HoldVoided(_message.Message):
    __slots__ = ("hold_id", "held", "expired", "voided_at")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    VOIDED_AT_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    held: _money_pb2.Money
    expired: bool
    voided_at: _timestamp_pb2.Timestamp
    def __init__(self, hold_id: _Optional[str] = ..., held: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., expired: _Optional[bool] = ..., voided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TransferReversed(_message.Message):
    __slots__ = ("transfer_id", "reversal_id", "reason", "reversed_at")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    REVERSAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVERSED_AT_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    reversal_id: str
    reason: str
    reversed_at: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[str] = ..., reversal_id: _Optional[str] = ..., reason: _Optional[str] = ..., reversed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerEvent(_message.Message):
    __slots__ = ("sequence", "transfer_posted", "transfer_rejected", "hold_created", "hold_posted", "hold_voided", "transfer_reversed")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_POSTED_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_REJECTED_FIELD_NUMBER: _ClassVar[int]
    HOLD_CREATED_FIELD_NUMBER: _ClassVar[int]
    HOLD_POSTED_FIELD_NUMBER: _ClassVar[int]
    HOLD_VOIDED_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_REVERSED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    transfer_posted: TransferPosted
    transfer_rejected: TransferRejected
    hold_created: HoldCreated
    hold_posted: HoldPosted
    hold_voided: HoldVoided
    transfer_reversed: TransferReversed
    def __init__(self, sequence: _Optional[int] = ..., transfer_posted: _Optional[_Union[TransferPosted, _Mapping]] = ..., transfer_rejected: _Optional[_Union[TransferRejected, _Mapping]] = ..., hold_created: _Optional[_Union[HoldCreated, _Mapping]] = ..., hold_posted: _Optional[_Union[HoldPosted, _Mapping]] = ..., hold_voided: _Optional[_Union[HoldVoided, _Mapping]] = ..., transfer_reversed: _Optional[_Union[TransferReversed, _Mapping]] = ...) -> None: ...

class LedgerEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[LedgerEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[LedgerEvent, _Mapping]]] = ...) -> None: ...
