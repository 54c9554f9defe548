import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReconcileAccountRequest(_message.Message):
    __slots__ = ("account_id", "start_date", "end_date")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    start_date: str
    end_date: str
    def __init__(self, account_id: _Optional[str] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ...) -> None: ...

class Period(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Discrepancy(_message.Message):
    __slots__ = ("type", "transaction_id", "severity", "expected", "actual", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    transaction_id: str
    severity: str
    expected: str
    actual: str
    message: str
    def __init__(self, type: _Optional[str] = ..., transaction_id: _Optional[str] = ..., severity: _Optional[str] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReconciliationReport(_message.Message):
    __slots__ = ("report_id", "account_id", "period", "transaction_count", "discrepancy_count", "balanced", "expected_balance", "actual_balance", "discrepancies", "currency", "created_at")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCY_COUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BALANCE_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_BALANCE_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    account_id: str
    period: Period
    transaction_count: int
    discrepancy_count: int
    balanced: bool
    expected_balance: str
    actual_balance: str
    discrepancies: _containers.RepeatedCompositeFieldContainer[Discrepancy]
    currency: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, report_id: _Optional[str] = ..., account_id: _Optional[str] = ..., period: _Optional[_Union[Period, _Mapping]] = ..., transaction_count: _Optional[int] = ..., discrepancy_count: _Optional[int] = ..., balanced: _Optional[bool] = ..., expected_balance: _Optional[str] = ..., actual_balance: _Optional[str] = ..., discrepancies: _Optional[_Iterable[_Union[Discrepancy, _Mapping]]] = ..., currency: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
