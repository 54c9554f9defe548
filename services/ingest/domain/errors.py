"""Ingest's typed errors; services.ingest.api.errors maps them to gRPC statuses and machine codes."""

from __future__ import annotations

from services.kernel.errors import DomainError, NotFound, ValidationError


class InvalidSubmission(ValidationError):
    """The submission breaks a rule; `code` says which (MISSING_FIELD, AMOUNT_PRECISION, ...)."""


class IdempotencyKeyReused(DomainError):
    """The key was already used with a different request."""


class UnknownTransaction(NotFound):
    """No request was ever accepted under this key."""
