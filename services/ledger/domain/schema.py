"""The configurable schema: a chart of accounts (account classes) and the transfer types a business
allows, as data, and the one rule engine that enforces them on every posting. Pure: no IO.

A schema document (YAML or JSON) is parsed into a `Schema` with precise errors (a path and a message
per problem). The ledger stores every applied version for ever; postings are checked against the
version in force when they are posted (`Schema.check`), accounts against it when they are opened
(`Schema.check_account`). With no schema applied the ledger checks nothing of this (any accounts,
auto-created, overdraft allowed).

Document shape (names in lowerCamel, amounts in integer minor units):

    accountClasses:                      # evaluated in order: an id belongs to the first class it matches
      wallet:
        type: LIABILITY                  # ASSET | LIABILITY | EQUITY | REVENUE | EXPENSE
        normalSide: CREDIT               # optional; must agree with the type
        currencies: [USD, EUR]           # optional; any currency when absent
        overdraft: forbidden             # allowed | forbidden (default allowed)
        overdraftLimitMinor: 0           # with forbidden: how far below zero it may go
        idPattern: "wallet:{userId}"     # literal id characters and {placeholders}
        autoCreate: true                 # may a transfer open such an account on first use
        metadata: {JSON Schema}          # the account's metadata (a map of strings)
        indexedMetadata: [country]       # metadata fields account lists may filter on (indexed)
        reconciliation:                  # defaults for the reconciliation context, kept as data
          rules: {date_tolerance_days: 3}          # its matching-rules document (reconciliation checks it)
          statementAccount: {metadataField: iban}  # a statement naming this value reconciles with the account
    transferTypes:
      P2P:
        debit: [wallet]                  # classes that may be debited
        credit: [wallet]                 # classes that may be credited
        limits: {USD: {min: 1, max: 100000}}   # optional; when present, other currencies are refused
        metadata: {JSON Schema}          # required metadata of the transfer
        indexedMetadata: [orderId]       # metadata fields ledger history may filter on (indexed)
        holds: true                      # may be reserved as a hold (default false)
        reversals: true                  # may be reversed (default true)
    defaultTransferType: P2P             # optional: the type of a transfer that names none
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import jsonschema_rs
import yaml

from services.kernel.errors import ValidationError
from services.kernel.money import MoneyError, exponent_of
from services.ledger.domain import rules
from services.ledger.domain.model import (
    Account,
    AccountDefinition,
    AccountType,
    Direction,
    Rejected,
    TransferInstruction,
)

# Stable codes of the rules a posting or an account can break.
TRANSFER_TYPE_REQUIRED = "SCHEMA_TRANSFER_TYPE_REQUIRED"
TRANSFER_TYPE_UNKNOWN = "SCHEMA_TRANSFER_TYPE_UNKNOWN"
ACCOUNT_CLASS_UNKNOWN = "SCHEMA_ACCOUNT_CLASS_UNKNOWN"
AUTO_CREATE_FORBIDDEN = "SCHEMA_ACCOUNT_AUTO_CREATE_FORBIDDEN"
FORBIDS_DEBIT = "SCHEMA_TRANSFER_TYPE_FORBIDS_DEBIT"
FORBIDS_CREDIT = "SCHEMA_TRANSFER_TYPE_FORBIDS_CREDIT"
CURRENCY_NOT_ALLOWED = "SCHEMA_CURRENCY_NOT_ALLOWED"
AMOUNT_BELOW_MINIMUM = "SCHEMA_AMOUNT_BELOW_MINIMUM"
AMOUNT_ABOVE_MAXIMUM = "SCHEMA_AMOUNT_ABOVE_MAXIMUM"
METADATA_INVALID = "SCHEMA_METADATA_INVALID"
# A history or account list filtered on a metadata field no class or type of the schema in force indexes.
METADATA_FIELD_NOT_INDEXED = "METADATA_FIELD_NOT_INDEXED"
INVALID_METADATA_FILTER = "INVALID_METADATA_FILTER"
HOLDS_NOT_ALLOWED = "SCHEMA_HOLDS_NOT_ALLOWED"
REVERSALS_NOT_ALLOWED = "SCHEMA_REVERSALS_NOT_ALLOWED"
ACCOUNT_TYPE_MISMATCH = "SCHEMA_ACCOUNT_TYPE_MISMATCH"
OVERDRAFT_NOT_ALLOWED = "SCHEMA_OVERDRAFT_NOT_ALLOWED"
ACCOUNT_METADATA_INVALID = "SCHEMA_ACCOUNT_METADATA_INVALID"
# Errors of the document itself and of its evolution.
SCHEMA_INVALID = "SCHEMA_INVALID"
SCHEMA_STRANDS_ACCOUNTS = "SCHEMA_STRANDS_ACCOUNTS"
SCHEMA_VERSION_CONFLICT = "SCHEMA_VERSION_CONFLICT"

NAME_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
# A placeholder stands for one segment of an id: id characters except the ':' that separates segments.
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
_LITERAL = re.compile(r"^[A-Za-z0-9._:\-]*$")
_SEGMENT = r"[A-Za-z0-9._\-]+"
# An indexed metadata field: it is written into index names and index expressions (services.ledger
# adapters), so its shape is strict — a letter, then letters, digits or _; 40 at most.
INDEXED_FIELD_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
# Account ids classified by pattern, remembered per schema version; cleared when it fills up.
_CLASS_CACHE_LIMIT = 100_000


class SchemaInvalid(ValidationError):
    """A schema document that cannot be applied; `violations` lists (path, message) pairs."""


class SchemaStrandsAccounts(ValidationError):
    """A new version would leave existing accounts matching no class, or outside their class's currencies."""


class SchemaVersionConflict(ValidationError):
    """The schema in force is not the version the caller expected (someone applied another first)."""


class SchemaViolation(ValidationError):
    """A posting or an account the schema in force refuses; `code` is the rule's (SCHEMA_*)."""


@dataclass(frozen=True)
class AppliedSchema:
    """A version as the ledger keeps it, for ever: who applied it and when."""

    version: int
    document: Mapping[str, Any]
    applied_by: str
    applied_at: datetime


class PostingKind(StrEnum):
    TRANSFER = "TRANSFER"
    HOLD = "HOLD"
    POST_HOLD = "POST_HOLD"
    VOID_HOLD = "VOID_HOLD"
    REVERSAL = "REVERSAL"


@dataclass(frozen=True)
class Violation:
    """The rule a posting or an account breaks: a stable `code` and a message for people."""

    code: str
    message: str


class AccountRef(NamedTuple):
    """An account a posting names: `created_class` is the class it was opened under (None for accounts
    opened with no schema, or not opened yet); `exists` is False when the posting would open it.
    (Tuples, not dataclasses: one is built per account of every posting checked.)"""

    id: str
    created_class: str | None = None
    exists: bool = True


class Posting(NamedTuple):
    kind: PostingKind
    code: str
    debit: AccountRef
    credit: AccountRef
    amount_minor: int
    currency: str
    metadata: Mapping[str, str] = {}  # never mutated


@dataclass(frozen=True)
class AmountLimit:
    min_minor: int = 1
    max_minor: int | None = None


class _MetadataRule:
    """A JSON Schema over a metadata map, compiled once (jsonschema-rs: a valid map costs well under a
    microsecond, which matters at thousands of transfers a second)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = dict(schema)
        self._validator = jsonschema_rs.validator_for(self.schema)

    def problem(self, metadata: Mapping[str, str]) -> str | None:
        """The first problem of `metadata`, as 'path: message', or None when it conforms."""
        instance = metadata if isinstance(metadata, dict) else dict(metadata)
        if self._validator.is_valid(instance):
            return None
        error = next(iter(self._validator.iter_errors(instance)))
        where = "/".join(str(p) for p in error.instance_path)
        return f"metadata{'/' + where if where else ''}: {error.message}"


@dataclass(frozen=True, eq=False)
class AccountClass:
    name: str
    type: AccountType
    id_pattern: str
    currencies: frozenset[str] = frozenset()
    overdraft_allowed: bool = True
    overdraft_limit_minor: int = 0
    auto_create: bool = True
    metadata_schema: Mapping[str, Any] | None = None
    reconciliation: Mapping[str, Any] = field(default_factory=dict)
    indexed_metadata: tuple[str, ...] = ()
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _metadata: _MetadataRule | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", compile_id_pattern(self.id_pattern))
        object.__setattr__(self, "_metadata", _MetadataRule(self.metadata_schema) if self.metadata_schema else None)

    @property
    def normal_side(self) -> Direction:
        return Direction.DEBIT if self.type.debit_normal else Direction.CREDIT

    def matches(self, account_id: str) -> bool:
        return self._regex.fullmatch(account_id) is not None

    def allows_currency(self, currency: str) -> bool:
        return not self.currencies or currency in self.currencies

    def metadata_problem(self, metadata: Mapping[str, str]) -> str | None:
        return self._metadata.problem(metadata) if self._metadata else None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type.value, "normalSide": self.normal_side.value}
        if self.currencies:
            doc["currencies"] = sorted(self.currencies)
        doc["overdraft"] = "allowed" if self.overdraft_allowed else "forbidden"
        if not self.overdraft_allowed:
            doc["overdraftLimitMinor"] = self.overdraft_limit_minor
        doc["idPattern"] = self.id_pattern
        doc["autoCreate"] = self.auto_create
        if self.metadata_schema:
            doc["metadata"] = dict(self.metadata_schema)
        if self.indexed_metadata:
            doc["indexedMetadata"] = list(self.indexed_metadata)
        if self.reconciliation:
            doc["reconciliation"] = dict(self.reconciliation)
        return doc


@dataclass(frozen=True, eq=False)
class TransferType:
    code: str
    debit_classes: frozenset[str]
    credit_classes: frozenset[str]
    limits: Mapping[str, AmountLimit] = field(default_factory=dict)
    metadata_schema: Mapping[str, Any] | None = None
    holds_allowed: bool = False
    reversals_allowed: bool = True
    indexed_metadata: tuple[str, ...] = ()
    _metadata: _MetadataRule | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_metadata", _MetadataRule(self.metadata_schema) if self.metadata_schema else None)

    @property
    def has_metadata_rule(self) -> bool:
        return self._metadata is not None

    def metadata_problem(self, metadata: Mapping[str, str]) -> str | None:
        return self._metadata.problem(metadata) if self._metadata else None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"debit": sorted(self.debit_classes), "credit": sorted(self.credit_classes)}
        if self.limits:
            doc["limits"] = {
                cur: {"min": lim.min_minor, **({"max": lim.max_minor} if lim.max_minor is not None else {})}
                for cur, lim in sorted(self.limits.items())
            }
        if self.metadata_schema:
            doc["metadata"] = dict(self.metadata_schema)
        if self.indexed_metadata:
            doc["indexedMetadata"] = list(self.indexed_metadata)
        doc["holds"] = self.holds_allowed
        doc["reversals"] = self.reversals_allowed
        return doc


def compile_id_pattern(pattern: str) -> re.Pattern[str]:
    """`wallet:{userId}` → a regex matching `wallet:` then one segment. Raises ValueError."""
    parts, end = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        parts.append(_literal(pattern[end : m.start()]))
        parts.append(_SEGMENT)
        end = m.end()
    parts.append(_literal(pattern[end:]))
    if not pattern:
        raise ValueError("must not be empty")
    return re.compile("".join(parts))


def _literal(text: str) -> str:
    if not _LITERAL.fullmatch(text):
        raise ValueError(
            "must be account id characters (letters, digits and . _ : -) and {placeholders}, got " + repr(text)
        )
    return re.escape(text)


class Schema:
    """One version of the schema, compiled: classes in order, types by code, and the rule engine."""

    def __init__(
        self,
        classes: Iterable[AccountClass],
        types: Iterable[TransferType],
        default_type: str | None = None,
        version: int = 0,
    ) -> None:
        self.classes: dict[str, AccountClass] = {c.name: c for c in classes}
        self.types: dict[str, TransferType] = {t.code: t for t in types}
        self.default_type = default_type
        self.version = version
        self._by_id: dict[str, AccountClass | None] = {}
        # (kind, code, debit class, debit exists, credit class, credit exists, currency) → the type
        # that allows it, for combinations seen before (see check).
        self._allowed: dict[tuple[object, ...], TransferType] = {}

    def with_version(self, version: int) -> Schema:
        return Schema(self.classes.values(), self.types.values(), self.default_type, version)

    def document(self) -> dict[str, Any]:
        """The canonical document: what is stored, served and diffed."""
        doc: dict[str, Any] = {
            "accountClasses": {name: c.document() for name, c in self.classes.items()},
            "transferTypes": {code: t.document() for code, t in self.types.items()},
        }
        if self.default_type:
            doc["defaultTransferType"] = self.default_type
        return doc

    @property
    def indexed_account_metadata(self) -> frozenset[str]:
        """The account metadata fields some class indexes: what account lists may filter on."""
        return frozenset(f for c in self.classes.values() for f in c.indexed_metadata)

    @property
    def indexed_transfer_metadata(self) -> frozenset[str]:
        """The transfer metadata fields some type indexes: what ledger history may filter on."""
        return frozenset(f for t in self.types.values() for f in t.indexed_metadata)

    # -- classification --------------------------------------------------------------------------

    def class_by_id(self, account_id: str) -> AccountClass | None:
        """The first class whose id pattern matches, remembered for the next posting."""
        try:
            return self._by_id[account_id]
        except KeyError:
            pass
        found = next((c for c in self.classes.values() if c.matches(account_id)), None)
        if len(self._by_id) >= _CLASS_CACHE_LIMIT:
            self._by_id.clear()
        self._by_id[account_id] = found
        return found

    def class_of(self, account: AccountRef) -> AccountClass | None:
        """The class an account opened under, while this version keeps it; else the one its id matches."""
        if account.created_class is not None:
            cls = self.classes.get(account.created_class)
            if cls is not None:
                return cls
        return self.class_by_id(account.id)

    # -- the rule engine ---------------------------------------------------------------------------

    def transfer_type(self, code: str) -> TransferType | Violation:
        effective = code or self.default_type
        if not effective:
            return Violation(TRANSFER_TYPE_REQUIRED, "a transfer type (code) is required by the schema in force")
        found = self.types.get(effective)
        if found is None:
            return Violation(
                TRANSFER_TYPE_UNKNOWN, f"transfer type {effective!r} is not in schema version {self.version}"
            )
        return found

    def check(self, posting: Posting) -> Violation | None:
        """The first rule `posting` breaks under this version, or None when it may be posted.

        A void releases a reservation and is always allowed. A reversal mirrors a posting accepted
        before: only its type's `reversals` applies. Posting a hold checks the accounts and the
        maximum again (the hold's metadata was checked when it was made; a partial post may be below
        the minimum).

        What depends only on the type, the accounts' classes and the currency is decided once per
        combination and remembered; each posting then costs a few dict lookups, its limits and its
        metadata."""
        debit, credit = posting.debit, posting.credit
        return self._check(
            posting.kind,
            posting.code,
            debit.id,
            debit.created_class,
            debit.exists,
            credit.id,
            credit.created_class,
            credit.exists,
            posting.amount_minor,
            posting.currency,
            posting.metadata,
        )

    def _check(
        self,
        kind: PostingKind,
        code: str,
        debit_id: str,
        debit_class: str | None,
        debit_exists: bool,
        credit_id: str,
        credit_class: str | None,
        credit_exists: bool,
        amount_minor: int,
        currency: str,
        metadata: Mapping[str, str],
    ) -> Violation | None:
        """check, on a posting's parts: the batch path calls it without building a Posting per transfer."""
        if kind is PostingKind.VOID_HOLD:
            return None
        classes = self.classes
        debit_cls = (classes.get(debit_class) if debit_class else None) or self.class_by_id(debit_id)
        credit_cls = (classes.get(credit_class) if credit_class else None) or self.class_by_id(credit_id)
        key = (kind, code, debit_cls, debit_exists, credit_cls, credit_exists, currency)
        ttype = self._allowed.get(key)
        if ttype is None:
            verdict = self._check_kind_and_classes(
                kind,
                code,
                AccountRef(debit_id, debit_class, debit_exists),
                debit_cls,
                AccountRef(credit_id, credit_class, credit_exists),
                credit_cls,
                currency,
            )
            if isinstance(verdict, Violation):
                return verdict
            ttype = verdict
            if len(self._allowed) >= _CLASS_CACHE_LIMIT:
                self._allowed.clear()
            self._allowed[key] = ttype
        if kind is PostingKind.REVERSAL:
            return None
        if ttype.limits:
            limit = ttype.limits.get(currency)
            if limit is None:
                return Violation(CURRENCY_NOT_ALLOWED, f"transfer type {ttype.code!r} does not allow {currency}")
            if amount_minor < limit.min_minor and kind is not PostingKind.POST_HOLD:
                return Violation(
                    AMOUNT_BELOW_MINIMUM,
                    f"transfer type {ttype.code!r} needs at least {limit.min_minor} minor units of {currency}",
                )
            if limit.max_minor is not None and amount_minor > limit.max_minor:
                return Violation(
                    AMOUNT_ABOVE_MAXIMUM,
                    f"transfer type {ttype.code!r} allows at most {limit.max_minor} minor units of {currency}",
                )
        if ttype.has_metadata_rule and kind is not PostingKind.POST_HOLD:
            problem = ttype.metadata_problem(metadata)
            if problem is not None:
                return Violation(METADATA_INVALID, f"transfer type {ttype.code!r}: {problem}")
        return None

    def _check_kind_and_classes(
        self,
        kind: PostingKind,
        code: str,
        debit: AccountRef,
        debit_cls: AccountClass | None,
        credit: AccountRef,
        credit_cls: AccountClass | None,
        currency: str,
    ) -> TransferType | Violation:
        """The rules that depend on the type, the accounts' classes and the currency, not the amount."""
        found = self.transfer_type(code)
        if isinstance(found, Violation):
            return found
        ttype = found
        if kind is PostingKind.REVERSAL:
            if not ttype.reversals_allowed:
                return Violation(REVERSALS_NOT_ALLOWED, f"transfer type {ttype.code!r} does not allow reversals")
            return ttype
        if kind is PostingKind.HOLD and not ttype.holds_allowed:
            return Violation(HOLDS_NOT_ALLOWED, f"transfer type {ttype.code!r} does not allow holds")
        for ref, cls, allowed, refusal, side in (
            (debit, debit_cls, ttype.debit_classes, FORBIDS_DEBIT, "debit"),
            (credit, credit_cls, ttype.credit_classes, FORBIDS_CREDIT, "credit"),
        ):
            if cls is None:
                return Violation(ACCOUNT_CLASS_UNKNOWN, f"account {ref.id!r} matches no account class")
            if not ref.exists and not cls.auto_create:
                return Violation(
                    AUTO_CREATE_FORBIDDEN,
                    f"account {ref.id!r} does not exist and class {cls.name!r} is not opened by transfers",
                )
            if cls.name not in allowed:
                return Violation(
                    refusal,
                    f"transfer type {ttype.code!r} may not {side} account {ref.id!r} of class {cls.name!r}",
                )
            if not cls.allows_currency(currency):
                return Violation(
                    CURRENCY_NOT_ALLOWED, f"class {cls.name!r} of account {ref.id!r} does not hold {currency}"
                )
        return ttype

    def check_account(
        self,
        account_id: str,
        currency: str,
        account_type: AccountType | None,
        allow_overdraft: bool,
        overdraft_limit_minor: int,
        metadata: Mapping[str, str],
    ) -> AccountClass | Violation:
        """The class an account opened with this definition belongs to, or the rule it breaks.
        `account_type` None: the class's type."""
        cls = self.class_by_id(account_id)
        if cls is None:
            return Violation(ACCOUNT_CLASS_UNKNOWN, f"account {account_id!r} matches no account class")
        if account_type is not None and account_type is not cls.type:
            return Violation(
                ACCOUNT_TYPE_MISMATCH, f"class {cls.name!r} accounts are {cls.type.value}, not {account_type.value}"
            )
        if not cls.allows_currency(currency):
            return Violation(CURRENCY_NOT_ALLOWED, f"class {cls.name!r} does not hold {currency}")
        if not cls.overdraft_allowed and (allow_overdraft or overdraft_limit_minor > cls.overdraft_limit_minor):
            return Violation(
                OVERDRAFT_NOT_ALLOWED,
                f"class {cls.name!r} allows an overdraft of at most {cls.overdraft_limit_minor} minor units",
            )
        problem = cls.metadata_problem(metadata)
        if problem is not None:
            return Violation(ACCOUNT_METADATA_INVALID, f"class {cls.name!r}: {problem}")
        return cls


# -- parsing -------------------------------------------------------------------------------------

_CLASS_KEYS = {
    "type",
    "normalSide",
    "currencies",
    "overdraft",
    "overdraftLimitMinor",
    "idPattern",
    "autoCreate",
    "metadata",
    "indexedMetadata",
    "reconciliation",
}
_TYPE_KEYS = {"debit", "credit", "limits", "metadata", "indexedMetadata", "holds", "reversals"}
_TOP_KEYS = {"accountClasses", "transferTypes", "defaultTransferType"}


class _Problems:
    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.found.append((path, message))


# A chart of accounts is a few kilobytes; this bounds what one PutSchema makes the ledger parse.
DOCUMENT_LIMIT = 1_000_000


def load_schema(text: str) -> Schema:
    """A schema from YAML or JSON text (JSON is YAML). Raises SchemaInvalid."""
    if len(text) > DOCUMENT_LIMIT:
        raise SchemaInvalid(
            f"the document must be at most {DOCUMENT_LIMIT:,} characters", code=SCHEMA_INVALID, field="document"
        )
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"
        problem = getattr(error, "problem", None) or str(error)
        raise SchemaInvalid(
            f"{where}: {problem}", code=SCHEMA_INVALID, field="document", violations=[(where, str(problem))]
        ) from None
    try:
        # An escape such as "\ud800" decodes to half a character: no text can hold it, nor PostgreSQL.
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        problem = "holds text that is not valid Unicode (a lone surrogate escape such as \\ud800)"
        raise SchemaInvalid(
            f"document: {problem}", code=SCHEMA_INVALID, field="document", violations=[("$", problem)]
        ) from None
    except (TypeError, ValueError):
        pass  # not JSON data (a YAML date, say): parse_schema says what is wrong with it
    return parse_schema(raw)


def parse_json_schema(text: str) -> Schema:
    """A schema from a stored JSON document (trusted, yet checked like any other)."""
    return parse_schema(json.loads(text))


def parse_schema(raw: object) -> Schema:
    """A schema from a parsed document. Raises SchemaInvalid listing every problem found, each with its path."""
    problems = _Problems()
    if not isinstance(raw, Mapping):
        problems.add("$", "the document must be a mapping with accountClasses and transferTypes")
        _raise(problems)
        raise AssertionError("unreachable")
    for key in raw:
        if key not in _TOP_KEYS:
            problems.add(f"$.{key}", f"unknown key; expected one of {', '.join(sorted(_TOP_KEYS))}")
    classes = _parse_classes(raw.get("accountClasses"), problems)
    types = _parse_types(raw.get("transferTypes"), set(classes), problems)
    default = raw.get("defaultTransferType")
    if default is not None and (not isinstance(default, str) or default not in types):
        problems.add("$.defaultTransferType", f"must name a transfer type, got {default!r}")
    _raise(problems)
    return Schema(classes.values(), types.values(), default)


def _raise(problems: _Problems) -> None:
    if problems.found:
        first_path, first = problems.found[0]
        more = f" (and {len(problems.found) - 1} more)" if len(problems.found) > 1 else ""
        raise SchemaInvalid(
            f"{first_path}: {first}{more}", code=SCHEMA_INVALID, field="document", violations=problems.found
        )


def _mapping(value: object, path: str, problems: _Problems, *, required: bool = True) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        problems.add(path, "must be a mapping")
        return {}
    return value


def _bool(value: object, default: bool, path: str, problems: _Problems) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        problems.add(path, f"must be true or false, got {value!r}")
        return default
    return value


def _minor(value: object, path: str, problems: _Problems) -> int | None:
    # bool is an int in Python; a float (1.5 or 1e3) is never minor units.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**63 - 1:
        problems.add(path, f"must be a whole number of minor units between 0 and 2^63-1, got {value!r}")
        return None
    return value


def _currency(value: object, path: str, problems: _Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(path, f"must be an ISO 4217 code, got {value!r}")
        return None
    try:
        exponent_of(value)
    except MoneyError as error:
        problems.add(path, error.message)
        return None
    return value


def _indexed_fields(value: object, path: str, problems: _Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add(path, "must be a list of metadata field names")
        return ()
    fields: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not INDEXED_FIELD_SHAPE.fullmatch(name):
            problems.add(
                f"{path}[{i}]", f"an indexed field is a letter then up to 39 letters, digits or _, got {name!r}"
            )
        elif name not in fields:
            fields.append(name)
    return tuple(fields)


def _metadata_schema(value: object, path: str, problems: _Problems) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, "must be a JSON Schema (a mapping)")
        return None
    try:
        schema = json.loads(json.dumps(value))  # plain JSON values only
    except (TypeError, ValueError) as error:  # YAML dates and the like
        problems.add(path, f"not a JSON document: {error}")
        return None
    try:
        jsonschema_rs.meta.validate(schema)
        jsonschema_rs.validator_for(schema)
    except jsonschema_rs.ValidationError as error:
        where = ".".join(str(p) for p in error.instance_path)
        problems.add(f"{path}{'.' + where if where else ''}", f"not a valid JSON Schema: {error.message}")
        return None
    except ValueError as error:  # unresolvable $ref, a regex jsonschema-rs cannot compile, ...
        problems.add(path, f"not a usable JSON Schema: {error}")
        return None
    return dict(schema)


def _reconciliation(value: object, indexed: tuple[str, ...], path: str, problems: _Problems) -> Mapping[str, Any]:
    """A class's defaults for the reconciliation context, checked only as far as the ledger can without
    knowing reconciliation's rules: `rules` is a mapping (the matching-rules document, which reconciliation
    validates when it uses it) and `statementAccount.metadataField` names one of the class's indexed
    metadata fields (statements are routed by a filtered account list, which only indexed fields allow).
    Other keys are kept as they are: documents applied before this shape existed still load."""
    block = _mapping(value, path, problems, required=False)
    if "rules" in block and not isinstance(block["rules"], Mapping):
        problems.add(f"{path}.rules", "must be a mapping: the matching rules document (e.g. {date_tolerance_days: 3})")
    if "statementAccount" in block:
        statement_account = _mapping(block["statementAccount"], f"{path}.statementAccount", problems)
        for key in statement_account:
            if key != "metadataField":
                problems.add(f"{path}.statementAccount.{key}", "unknown key; expected metadataField")
        name = statement_account.get("metadataField")
        if statement_account and not (isinstance(name, str) and name in indexed):
            declared = ", ".join(indexed) or "none"
            problems.add(
                f"{path}.statementAccount.metadataField",
                f"must name one of the class's indexedMetadata fields ({declared}), got {name!r}",
            )
    return block


def _parse_classes(value: object, problems: _Problems) -> dict[str, AccountClass]:
    classes: dict[str, AccountClass] = {}
    for name, spec in _mapping(value, "$.accountClasses", problems).items():
        path = f"$.accountClasses.{name}"
        if not isinstance(name, str) or not NAME_SHAPE.fullmatch(name):
            problems.add(path, "a class name is a letter then up to 63 letters, digits, _ or -")
            continue
        spec = _mapping(spec, path, problems)
        before = len(problems.found)
        for key in spec:
            if key not in _CLASS_KEYS:
                problems.add(f"{path}.{key}", f"unknown key; expected one of {', '.join(sorted(_CLASS_KEYS))}")
        try:
            kind = AccountType(str(spec.get("type", "")).upper())
        except ValueError:
            problems.add(f"{path}.type", f"must be one of {', '.join(t.value for t in AccountType)}")
            kind = AccountType.LIABILITY
        side = spec.get("normalSide")
        if side is not None:
            expected = Direction.DEBIT if kind.debit_normal else Direction.CREDIT
            if str(side).upper() != expected.value:
                problems.add(f"{path}.normalSide", f"{kind.value} accounts are {expected.value}-normal, got {side!r}")
        currencies_raw = spec.get("currencies", [])
        currencies: set[str] = set()
        if not isinstance(currencies_raw, list):
            problems.add(f"{path}.currencies", "must be a list of ISO 4217 codes")
        else:
            for i, cur in enumerate(currencies_raw):
                code = _currency(cur, f"{path}.currencies[{i}]", problems)
                if code:
                    currencies.add(code)
        overdraft = spec.get("overdraft", "allowed")
        if overdraft not in ("allowed", "forbidden"):
            problems.add(f"{path}.overdraft", f"must be allowed or forbidden, got {overdraft!r}")
        limit = 0
        if "overdraftLimitMinor" in spec:
            limit = _minor(spec["overdraftLimitMinor"], f"{path}.overdraftLimitMinor", problems) or 0
        pattern = spec.get("idPattern")
        if not isinstance(pattern, str):
            problems.add(f"{path}.idPattern", "is required: the shape of the class's account ids, e.g. wallet:{userId}")
            pattern = ""
        else:
            try:
                compile_id_pattern(pattern)
            except ValueError as error:
                problems.add(f"{path}.idPattern", str(error))
        auto_create = _bool(spec.get("autoCreate"), True, f"{path}.autoCreate", problems)
        metadata = _metadata_schema(spec.get("metadata"), f"{path}.metadata", problems)
        indexed = _indexed_fields(spec.get("indexedMetadata"), f"{path}.indexedMetadata", problems)
        reconciliation = _reconciliation(spec.get("reconciliation"), indexed, f"{path}.reconciliation", problems)
        if len(problems.found) > before:
            continue
        classes[name] = AccountClass(
            name,
            kind,
            pattern,
            frozenset(currencies),
            overdraft == "allowed",
            limit,
            auto_create,
            metadata,
            json.loads(json.dumps(dict(reconciliation))),
            indexed,
        )
    return classes


def _parse_types(value: object, class_names: set[str], problems: _Problems) -> dict[str, TransferType]:
    types: dict[str, TransferType] = {}
    for code, spec in _mapping(value, "$.transferTypes", problems).items():
        path = f"$.transferTypes.{code}"
        if not isinstance(code, str) or not rules.is_transfer_type(code):
            problems.add(path, "a transfer type code is 1-64 letters, digits, _ . or -")
            continue
        spec = _mapping(spec, path, problems)
        before = len(problems.found)
        for key in spec:
            if key not in _TYPE_KEYS:
                problems.add(f"{path}.{key}", f"unknown key; expected one of {', '.join(sorted(_TYPE_KEYS))}")
        sides: dict[str, frozenset[str]] = {}
        for side in ("debit", "credit"):
            names = spec.get(side)
            if not isinstance(names, list) or not names:
                problems.add(f"{path}.{side}", "must list the account classes it may apply to")
                sides[side] = frozenset()
                continue
            for i, name in enumerate(names):
                if name not in class_names:
                    problems.add(f"{path}.{side}[{i}]", f"unknown account class {name!r}")
            sides[side] = frozenset(str(n) for n in names)
        limits: dict[str, AmountLimit] = {}
        for cur, spec_limit in _mapping(spec.get("limits"), f"{path}.limits", problems, required=False).items():
            lpath = f"{path}.limits.{cur}"
            if _currency(cur, lpath, problems) is None:
                continue
            bounds = _mapping(spec_limit, lpath, problems)
            for key in bounds:
                if key not in ("min", "max"):
                    problems.add(f"{lpath}.{key}", "unknown key; expected min or max")
            low = _minor(bounds.get("min", 1), f"{lpath}.min", problems)
            high = _minor(bounds["max"], f"{lpath}.max", problems) if "max" in bounds else None
            if low is not None and high is not None and low > high:
                problems.add(lpath, f"min {low} is above max {high}")
            limits[cur] = AmountLimit(max(low or 1, 1), high)
        metadata = _metadata_schema(spec.get("metadata"), f"{path}.metadata", problems)
        holds = _bool(spec.get("holds"), False, f"{path}.holds", problems)
        reversals = _bool(spec.get("reversals"), True, f"{path}.reversals", problems)
        indexed = _indexed_fields(spec.get("indexedMetadata"), f"{path}.indexedMetadata", problems)
        if len(problems.found) > before:
            continue
        types[code] = TransferType(code, sides["debit"], sides["credit"], limits, metadata, holds, reversals, indexed)
    return types


# -- evolution -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaChange:
    """One difference between two versions: `change` is added, removed or changed."""

    change: str
    what: str  # accountClass, transferType or defaultTransferType
    name: str
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.change]
        label = {"accountClass": "account class", "transferType": "transfer type"}.get(self.what, self.what)
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{sign} {label} {self.name}{detail}"


def diff(old: Schema | None, new: Schema) -> list[SchemaChange]:
    """What applying `new` over `old` (None: no schema yet) changes, classes first, then types."""
    before = old.document() if old is not None else {"accountClasses": {}, "transferTypes": {}}
    after = new.document()
    changes: list[SchemaChange] = []
    for section, what in (("accountClasses", "accountClass"), ("transferTypes", "transferType")):
        a, b = before[section], after[section]
        for name in b:
            if name not in a:
                changes.append(SchemaChange("added", what, name))
            elif a[name] != b[name]:
                keys = sorted(k for k in a[name].keys() | b[name].keys() if a[name].get(k) != b[name].get(k))
                changes.append(SchemaChange("changed", what, name, tuple(keys)))
        changes.extend(SchemaChange("removed", what, name) for name in a if name not in b)
    old_default, new_default = before.get("defaultTransferType"), after.get("defaultTransferType")
    if old_default != new_default:
        kind = "added" if old_default is None else "removed" if new_default is None else "changed"
        changes.append(SchemaChange(kind, "defaultTransferType", str(new_default or old_default)))
    return changes


@dataclass(frozen=True)
class ExistingAccount:
    id: str
    currency: str
    created_class: str | None = None


@dataclass(frozen=True)
class StrandedAccount:
    id: str
    reason: str


def stranded_accounts(new: Schema, accounts: Iterable[ExistingAccount]) -> list[StrandedAccount]:
    """Existing accounts `new` would leave matching no class, or outside their class's currencies.
    Accounts are never rewritten, so such a version is refused."""
    stranded: list[StrandedAccount] = []
    for account in accounts:
        cls = new.class_of(AccountRef(account.id, account.created_class))
        if cls is None:
            stranded.append(StrandedAccount(account.id, "matches no account class"))
        elif not cls.allows_currency(account.currency):
            stranded.append(
                StrandedAccount(account.id, f"holds {account.currency}, which class {cls.name!r} does not allow")
            )
    return stranded


def strands_error(stranded: list[StrandedAccount], limit: int = 100) -> SchemaStrandsAccounts:
    """The refusal of a version that strands accounts, listing them (the first `limit` in detail)."""
    shown = stranded[:limit]
    more = f" and {len(stranded) - limit} more" if len(stranded) > limit else ""
    return SchemaStrandsAccounts(
        f"the new version would strand {len(stranded)} existing account(s): "
        + ", ".join(s.id for s in shown[:10])
        + (" ..." if len(stranded) > 10 else "")
        + more,
        code=SCHEMA_STRANDS_ACCOUNTS,
        field="document",
        violations=[(f"accounts/{s.id}", s.reason) for s in shown],
        metadata={"stranded": str(len(stranded))},
    )


# -- enforcement on the ledger's own objects ---------------------------------------------------


def account_ref(account_id: str, accounts: Mapping[str, Account]) -> AccountRef:
    account = accounts.get(account_id)
    if account is None:
        return AccountRef(account_id, None, exists=False)
    return AccountRef(account_id, account.account_class)


def posting_of(transfer: TransferInstruction, kind: PostingKind, accounts: Mapping[str, Account]) -> Posting:
    return Posting(
        kind,
        transfer.code,
        account_ref(transfer.debit_account_id, accounts),
        account_ref(transfer.credit_account_id, accounts),
        transfer.amount.minor_units,
        transfer.amount.currency,
        transfer.metadata,
    )


def refuse_breaking(
    schema: Schema, transfers: list[TransferInstruction], accounts: Mapping[str, Account]
) -> tuple[list[TransferInstruction], list[Rejected]]:
    """(the transfers and holds `schema` allows, in order; the rejections of the others). Accounts not
    in `accounts` would be opened by the transfer."""
    allowed: list[TransferInstruction] = []
    refused: list[Rejected] = []
    check = schema._check
    for transfer in transfers:
        debit, credit = accounts.get(transfer.debit_account_id), accounts.get(transfer.credit_account_id)
        violation = check(
            PostingKind.HOLD if transfer.pending else PostingKind.TRANSFER,
            transfer.code,
            transfer.debit_account_id,
            debit.account_class if debit is not None else None,
            debit is not None,
            transfer.credit_account_id,
            credit.account_class if credit is not None else None,
            credit is not None,
            transfer.amount.minor_units,
            transfer.amount.currency,
            transfer.metadata,
        )
        if violation is None:
            allowed.append(transfer)
        else:
            refused.append(Rejected(transfer, violation.code, violation.message))
    return allowed, refused


def accounts_opened_under(schema: Schema, currencies: Mapping[str, str]) -> list[AccountDefinition]:
    """The definitions of accounts a transfer opens (id → currency) under their class: its type and
    overdraft policy, no metadata. Every id has a class: refuse_breaking checked them."""
    opened = []
    for account_id, currency in sorted(currencies.items()):
        cls = schema.class_by_id(account_id)
        if cls is None:
            raise ValueError(f"account {account_id!r} matches no class")
        opened.append(
            AccountDefinition(
                account_id, currency, cls.type, cls.overdraft_allowed, cls.overdraft_limit_minor, {}, cls.name
            )
        )
    return opened


def violation_error(violation: Violation) -> SchemaViolation:
    return SchemaViolation(violation.message, code=violation.code)


# -- querying by metadata ----------------------------------------------------------------------


def metadata_filters(raw: Iterable[str], indexed: frozenset[str], what: str) -> dict[str, str]:
    """`field:value` filters as a map, each field one the schema in force indexes for `what`
    (accounts or transfers). Raises ValidationError: INVALID_METADATA_FILTER (no `:`, or a field twice),
    METADATA_FIELD_NOT_INDEXED (a field no class or type declares in indexedMetadata)."""
    filters: dict[str, str] = {}
    for item in raw:
        name, colon, value = item.partition(":")
        if not colon or not name:
            raise ValidationError(
                f"metadata filter {item!r} must be field:value", field="metadata", code=INVALID_METADATA_FILTER
            )
        if name not in indexed:
            declared = ", ".join(sorted(indexed)) or "none (no schema in force declares indexedMetadata)"
            raise ValidationError(
                f"metadata field {name!r} is not indexed for {what}; indexed: {declared}",
                field="metadata",
                code=METADATA_FIELD_NOT_INDEXED,
            )
        if name in filters and filters[name] != value:
            raise ValidationError(
                f"metadata field {name!r} is filtered on twice", field="metadata", code=INVALID_METADATA_FILTER
            )
        filters[name] = value
    return filters
