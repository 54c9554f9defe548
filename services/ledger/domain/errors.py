"""Ledger's typed errors. Rejections of a transfer carry a stable machine code in `code`."""

from __future__ import annotations

from services.kernel.errors import DomainError, NotFound, ValidationError


class InvalidTransfer(ValidationError):
    """A transfer request that can never be posted as given."""


class AccountNotFound(NotFound):
    """No such account."""


class TransferRejected(DomainError):
    """Posting was refused (insufficient funds, currency mismatch, ...)."""
