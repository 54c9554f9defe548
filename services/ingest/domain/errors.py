"""Ingest's typed errors; services.ingest.api.errors maps them to gRPC statuses and machine codes."""

from __future__ import annotations

from services.kernel.errors import DomainError, NotFound, ValidationError


class InvalidSubmission(ValidationError):
    """The submission breaks a rule; `code` says which (MISSING_FIELD, AMOUNT_PRECISION, ...)."""


class IdempotencyKeyReused(DomainError):
    """The key was already used with a different request."""


class UnknownTransaction(NotFound):
    """No request was ever accepted under this key."""


class SchemaRefused(ValidationError):
    """The ledger's schema in force refuses the transfer (checked before the 202); `code` is the
    rule's (SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT, SCHEMA_METADATA_INVALID, ...). Nothing was stored."""
