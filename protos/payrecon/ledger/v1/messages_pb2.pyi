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
    __slots__ = ("transfer_id", "debit_account_id", "credit_account_id", "amount", "metadata", "accepted_at")
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
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: _money_pb2.Money
    metadata: _containers.ScalarMap[str, str]
    accepted_at: _timestamp_pb2.Timestamp
    def __init__(self, transfer_id: _Optional[str] = ..., debit_account_id: _Optional[str] = ..., credit_account_id: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

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

class LedgerEvent(_message.Message):
    __slots__ = ("sequence", "transfer_posted", "transfer_rejected")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_POSTED_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_REJECTED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    transfer_posted: TransferPosted
    transfer_rejected: TransferRejected
    def __init__(self, sequence: _Optional[int] = ..., transfer_posted: _Optional[_Union[TransferPosted, _Mapping]] = ..., transfer_rejected: _Optional[_Union[TransferRejected, _Mapping]] = ...) -> None: ...

class LedgerEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[LedgerEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[LedgerEvent, _Mapping]]] = ...) -> None: ...
