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
    address: str
    worker_address: str  # the worker's health (grpc.health.v1) only
    transfers_queue: str  # consumed by the worker
    event_queues: tuple[str, ...]  # the ledger's events go to each subscriber's queue (ingest, reconciliation)

    @classmethod
    def from_env(cls, env: Env | None = None) -> LedgerSettings:
        env = env or Env()
        receivers = env.integer("LEDGER_WORKER_RECEIVERS", 4)
        if not 1 <= receivers <= 64:
            raise ConfigError("LEDGER_WORKER_RECEIVERS must be between 1 and 64")
        currency = env.text("LEDGER_DEFAULT_CURRENCY", "USD")
        try:
            exponent_of(currency)
        except MoneyError as error:
            raise ConfigError(f"LEDGER_DEFAULT_CURRENCY: {error.message}") from None
        return cls(
            common=CommonSettings.from_env(env),
            auto_create_accounts=env.flag("LEDGER_AUTO_CREATE_ACCOUNTS", True),
            worker_receivers=receivers,
            default_currency=currency,
            hold_expiry_interval_seconds=env.integer("LEDGER_HOLD_EXPIRY_INTERVAL_SECONDS", 1),
            address=env.text("PAYRECON_LEDGER_ADDRESS", "127.0.0.1:50052"),
            worker_address=env.text("LEDGER_WORKER_ADDRESS", "127.0.0.1:50054"),
            transfers_queue=env.text("PAYRECON_TRANSFERS_QUEUE", "payrecon-transfers.fifo"),
            event_queues=(
                env.text("PAYRECON_INGEST_EVENTS_QUEUE", "payrecon-ledger-events-ingest.fifo"),
                env.text("PAYRECON_RECON_EVENTS_QUEUE", "payrecon-ledger-events-recon.fifo"),
            ),
        )
