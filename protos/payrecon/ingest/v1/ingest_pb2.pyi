import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransactionInput(_message.Message):
    __slots__ = ("source_account_id", "destination_account_id", "amount", "currency", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    source_account_id: str
    destination_account_id: str
    amount: _struct_pb2.Value
    currency: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, source_account_id: _Optional[str] = ..., destination_account_id: _Optional[str] = ..., amount: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., currency: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SubmitTransactionRequest(_message.Message):
    __slots__ = ("transaction", "idempotency_key")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    transaction: TransactionInput
    idempotency_key: str
    def __init__(self, transaction: _Optional[_Union[TransactionInput, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitTransactionResponse(_message.Message):
    __slots__ = ("status", "idempotency_key", "message_id", "poll_url", "expires_at", "replayed")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    POLL_URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    status: str
    idempotency_key: str
    message_id: str
    poll_url: str
    expires_at: _timestamp_pb2.Timestamp
    replayed: bool
    def __init__(self, status: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., message_id: _Optional[str] = ..., poll_url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetTransactionStatusRequest(_message.Message):
    __slots__ = ("idempotency_key",)
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    def __init__(self, idempotency_key: _Optional[str] = ...) -> None: ...

class TransactionResult(_message.Message):
    __slots__ = ("id", "source_account_id", "destination_account_id", "amount", "currency", "status", "created_at", "amount_minor")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MINOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    source_account_id: str
    destination_account_id: str
    amount: _struct_pb2.Value
    currency: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    amount_minor: int
    def __init__(self, id: _Optional[str] = ..., source_account_id: _Optional[str] = ..., destination_account_id: _Optional[str] = ..., amount: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., currency: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., amount_minor: _Optional[int] = ...) -> None: ...

class TransactionError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class TransactionStatus(_message.Message):
    __slots__ = ("status", "idempotency_key", "result", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: str
    idempotency_key: str
    result: TransactionResult
    error: TransactionError
    def __init__(self, status: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., result: _Optional[_Union[TransactionResult, _Mapping]] = ..., error: _Optional[_Union[TransactionError, _Mapping]] = ...) -> None: ...

class GetQueueStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("queue_url", "message_count", "in_flight_count", "visibility_timeout", "is_fifo", "content_deduplication", "dlq_url", "dlq_message_count", "outbox_pending", "timestamp", "redriven", "stuck")
    QUEUE_URL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_COUNT_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    IS_FIFO_FIELD_NUMBER: _ClassVar[int]
    CONTENT_DEDUPLICATION_FIELD_NUMBER: _ClassVar[int]
    DLQ_URL_FIELD_NUMBER: _ClassVar[int]
    DLQ_MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_PENDING_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    REDRIVEN_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    queue_url: str
    message_count: int
    in_flight_count: int
    visibility_timeout: int
    is_fifo: bool
    content_deduplication: bool
    dlq_url: str
    dlq_message_count: int
    outbox_pending: int
    timestamp: _timestamp_pb2.Timestamp
    redriven: int
    stuck: int
    def __init__(self, queue_url: _Optional[str] = ..., message_count: _Optional[int] = ..., in_flight_count: _Optional[int] = ..., visibility_timeout: _Optional[int] = ..., is_fifo: _Optional[bool] = ..., content_deduplication: _Optional[bool] = ..., dlq_url: _Optional[str] = ..., dlq_message_count: _Optional[int] = ..., outbox_pending: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., redriven: _Optional[int] = ..., stuck: _Optional[int] = ...) -> None: ...

class GetCacheStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("connected", "total_keys", "prefix", "default_ttl", "memory_usage", "timestamp")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_KEYS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    connected: bool
    total_keys: int
    prefix: str
    default_ttl: int
    memory_usage: str
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, connected: _Optional[bool] = ..., total_keys: _Optional[int] = ..., prefix: _Optional[str] = ..., default_ttl: _Optional[int] = ..., memory_usage: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Health(_message.Message):
    __slots__ = ("status", "timestamp")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    status: str
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetReadinessRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReadinessComponents(_message.Message):
    __slots__ = ("database", "cache", "queue")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    database: str
    cache: str
    queue: str
    def __init__(self, database: _Optional[str] = ..., cache: _Optional[str] = ..., queue: _Optional[str] = ...) -> None: ...

class Readiness(_message.Message):
    __slots__ = ("status", "components", "timestamp")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    status: str
    components: ReadinessComponents
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[str] = ..., components: _Optional[_Union[ReadinessComponents, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
