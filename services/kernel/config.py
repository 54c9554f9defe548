"""Typed configuration read from the environment, failing fast with a clear message.

Shared settings use the PAYRECON_ prefix; each context adds its own (INGEST_, LEDGER_, RECON_).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEMO_TOKEN = "demo-token-for-testing"
# Scope names belong to the contexts (each `api/errors.py` maps its methods to scopes); here only their
# shape is checked. A scope whose action is `internal` (`ledger:internal`) guards an RPC only services
# call, which the gateway never routes. A token's scope list may say `*`: every scope but the internal
# ones, so no client token gains internal access by accident; `*:internal` grants the internal ones.
EVERY_SCOPE = "*"
EVERY_INTERNAL_SCOPE = "*:internal"
_SCOPE_SHAPE = re.compile(r"^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$")


def is_internal_scope(scope: str) -> bool:
    return scope.endswith(":internal")


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the process must not start."""


_MISSING = object()


class Env:
    """Reads typed values from a mapping (os.environ by default), naming the variable on error."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, name: str, default: object = _MISSING) -> str:
        value = self._environ.get(name)
        if value is None or value == "":
            if default is _MISSING:
                raise ConfigError(f"{name} is required but not set")
            return str(default)
        return value

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value or None

    def integer(self, name: str, default: int) -> int:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class ApiToken:
    """A bearer token known by its SHA-256 digest, with the scopes it grants."""

    name: str
    sha256_hex: str
    scopes: frozenset[str]

    def grants(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        return (EVERY_INTERNAL_SCOPE if is_internal_scope(scope) else EVERY_SCOPE) in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_api_tokens(raw: str | None, *, development: bool) -> tuple[ApiToken, ...]:
    """Parses PAYRECON_API_TOKENS: `name:sha256hex:scope,scope;name2:...`.

    `*` grants every public scope; internal scopes (service-to-service RPCs) must be listed by name.
    In development the seed's demo token is added with every scope, internal ones included, so local
    internal clients (tests, benchmarks) can call the services' own ports; the gateway routes no
    internal RPC whatever the token.
    """
    tokens: list[ApiToken] = []
    for chunk in (raw or "").split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        parts = chunk.split(":", 2)
        if len(parts) != 3 or len(parts[1]) != 64:
            raise ConfigError(
                f"PAYRECON_API_TOKENS entries must look like name:<64 hex sha256>:scope,scope (got {parts[0]!r}...)"
            )
        name, digest, scope_list = parts
        scopes = frozenset(s.strip() for s in scope_list.split(",") if s.strip())
        malformed = sorted(
            s for s in scopes if s not in (EVERY_SCOPE, EVERY_INTERNAL_SCOPE) and not _SCOPE_SHAPE.match(s)
        )
        if malformed or not scopes:
            raise ConfigError(
                f"PAYRECON_API_TOKENS: scopes of {name!r} must be `*` or context:action names, got {malformed or '[]'}"
            )
        tokens.append(ApiToken(name, digest.lower(), scopes))
    if development:
        # The demo token may call the services' own ports directly (tests, `make bench`); what keeps
        # internal RPCs private is that the gateway never routes them.
        tokens.append(ApiToken("demo", hash_token(DEMO_TOKEN), frozenset({EVERY_SCOPE, EVERY_INTERNAL_SCOPE})))
    return tuple(tokens)


@dataclass(frozen=True)
class CommonSettings:
    """Settings every service shares (PAYRECON_ prefix). Queue names and addresses belong to the
    contexts' own settings: each reads the ones it uses."""

    environment: str
    database_url: str
    redis_url: str | None
    sqs_endpoint_url: str | None
    aws_region: str
    message_groups: int
    api_tokens: tuple[ApiToken, ...] = field(repr=False)
    otlp_endpoint: str | None
    log_level: str
    # Queue settings create-queues applies and consumers rely on: how long a received message stays
    # invisible (consumers extend it while they work) and deliveries before the dead-letter queue.
    sqs_visibility_seconds: int = 60
    sqs_max_receives: int = 5
    # host:port of this process's Prometheus scrape endpoint (services.kernel.metrics); None: none.
    metrics_address: str | None = None

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @classmethod
    def from_env(cls, env: Env | None = None) -> CommonSettings:
        env = env or Env()
        environment = env.text("PAYRECON_ENV", "production")
        if environment not in {"development", "production"}:
            raise ConfigError(f"PAYRECON_ENV must be development or production, got {environment!r}")
        development = environment == "development"
        tokens = parse_api_tokens(env.optional("PAYRECON_API_TOKENS"), development=development)
        if not tokens:
            raise ConfigError("PAYRECON_API_TOKENS is required outside development (no token would work)")
        metrics_address = env.optional("PAYRECON_METRICS_ADDRESS")
        if metrics_address and not re.fullmatch(r"[^\s:]*:\d{1,5}", metrics_address):
            raise ConfigError(f"PAYRECON_METRICS_ADDRESS must be host:port, got {metrics_address!r}")
        groups = env.integer("PAYRECON_MESSAGE_GROUPS", 16)
        if not 1 <= groups <= 1024:
            raise ConfigError("PAYRECON_MESSAGE_GROUPS must be between 1 and 1024")
        return cls(
            environment=environment,
            database_url=env.text("PAYRECON_DATABASE_URL"),
            redis_url=env.optional("PAYRECON_REDIS_URL"),
            sqs_endpoint_url=env.optional("PAYRECON_SQS_ENDPOINT_URL"),
            aws_region=env.text("PAYRECON_AWS_REGION", "us-east-1"),
            message_groups=groups,
            api_tokens=tokens,
            otlp_endpoint=env.optional("PAYRECON_OTLP_ENDPOINT"),
            log_level=env.text("PAYRECON_LOG_LEVEL", "INFO").upper(),
            sqs_visibility_seconds=env.integer("PAYRECON_SQS_VISIBILITY_SECONDS", 60),
            sqs_max_receives=env.integer("PAYRECON_SQS_MAX_RECEIVES", 5),
            metrics_address=metrics_address,
        )


def port_of(address: str) -> int:
    """The port of a host:port listen address."""
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise ConfigError(f"expected host:port, got {address!r}") from None


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]
