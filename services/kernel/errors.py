"""The base of every context's typed business errors. Pure Python: no grpc, no IO.

Each context raises subclasses of DomainError; each context's `api/errors.py` maps them to a gRPC
status and a stable machine code (see services.kernel.grpc_errors for the mechanism).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DomainError(Exception):
    """Base of every business error. `field` names the offending input when there is one; `code`, when
    given, refines the table's machine code (VALIDATION_ERROR → AMOUNT_PRECISION); `violations` lists
    (field, description) pairs when the input has several problems (google.rpc.BadRequest on the wire)."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)


class ValidationError(DomainError):
    """The request is malformed; nothing was changed."""


class NotFound(DomainError):
    """The named thing does not exist."""


class Unavailable(DomainError):
    """A dependency (database, queue) cannot be reached now; nothing was changed and a retry may succeed."""
