"""Ledger settings (LEDGER_ prefix) on top of the shared PAYRECON_ ones."""

from __future__ import annotations

from dataclasses import dataclass

from services.kernel.config import CommonSettings, ConfigError, Env
from services.kernel.money import MoneyError, exponent_of


@dataclass(frozen=True)
class LedgerSettings:
    common: CommonSettings
    auto_create_accounts: bool
    worker_receivers: int
    default_currency: str
    hold_expiry_interval_seconds: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> LedgerSettings:
        env = env or Env()
        receivers = env.int("LEDGER_WORKER_RECEIVERS", 4)
        if not 1 <= receivers <= 64:
            raise ConfigError("LEDGER_WORKER_RECEIVERS must be between 1 and 64")
        currency = env.str("LEDGER_DEFAULT_CURRENCY", "USD")
        try:
            exponent_of(currency)
        except MoneyError as error:
            raise ConfigError(f"LEDGER_DEFAULT_CURRENCY: {error.message}") from None
        return cls(
            common=CommonSettings.from_env(env),
            auto_create_accounts=env.bool("LEDGER_AUTO_CREATE_ACCOUNTS", True),
            worker_receivers=receivers,
            default_currency=currency,
            hold_expiry_interval_seconds=env.int("LEDGER_HOLD_EXPIRY_INTERVAL_SECONDS", 1),
        )
