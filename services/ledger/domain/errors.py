"""Ledger's typed errors. Rejections of a transfer carry a stable machine code in `code`."""

from __future__ import annotations

from services.kernel.errors import DomainError, NotFound, ValidationError


class InvalidTransfer(ValidationError):
    """A transfer request that can never be posted as given."""


class AccountNotFound(NotFound):
    """No such account."""


class TransferRejected(DomainError):
    """Posting was refused (insufficient funds, currency mismatch, ...)."""


class AccountExists(DomainError):
    """An account with this id exists with a different definition."""


class TransferNotFound(NotFound):
    """No transfer (or hold) with this id."""


class HoldAlreadyResolved(DomainError):
    """The hold was already posted, voided or expired (by another call that won)."""


class NotReversible(DomainError):
    """Only a posted transfer that is not itself a reversal can be reversed, once."""


class TransferExists(DomainError):
    """The id is already used by a different transfer."""
