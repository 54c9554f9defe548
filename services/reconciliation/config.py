"""Reconciliation settings (RECON_ prefix) on top of the shared PAYRECON_ ones."""

from __future__ import annotations

from dataclasses import dataclass

from services.kernel.config import DEMO_TOKEN, CommonSettings, ConfigError, Env


@dataclass(frozen=True)
class ReconciliationSettings:
    common: CommonSettings
    ledger_token: str
    address: str
    ledger_address: str
    events_queue: str  # the ledger's events, reconciliation's copy
    watermark_wait_seconds: float  # how long a report waits for ledger events still in flight
    suspense_account: str  # where POST_ADJUSTMENT books the other side of a correction
    continuous_interval_seconds: float  # how often days with new ledger entries are matched again
    ingest_address: str
    not_posted_after_seconds: int  # a 202 older than this and not posted is an ACCEPTED_NOT_POSTED case

    @classmethod
    def from_env(cls, env: Env | None = None) -> ReconciliationSettings:
        env = env or Env()
        common = CommonSettings.from_env(env)
        token = env.optional("RECON_LEDGER_TOKEN") or (DEMO_TOKEN if common.development else None)
        if token is None:
            raise ConfigError(
                "RECON_LEDGER_TOKEN (a token with accounts:read, transactions:read and ledger:internal) is required outside development"
            )
        return cls(
            common=common,
            ledger_token=token,
            address=env.text("PAYRECON_RECONCILIATION_ADDRESS", "127.0.0.1:50053"),
            ledger_address=env.text("PAYRECON_LEDGER_ADDRESS", "127.0.0.1:50052"),
            events_queue=env.text("PAYRECON_RECON_EVENTS_QUEUE", "payrecon-ledger-events-recon.fifo"),
            watermark_wait_seconds=env.integer("RECON_WATERMARK_WAIT_SECONDS", 5),
            suspense_account=env.text("RECON_SUSPENSE_ACCOUNT", "suspense"),
            continuous_interval_seconds=env.integer("RECON_CONTINUOUS_INTERVAL_SECONDS", 2),
            ingest_address=env.text("PAYRECON_INGEST_ADDRESS", "127.0.0.1:50051"),
            not_posted_after_seconds=env.integer("RECON_NOT_POSTED_AFTER_SECONDS", 300),
        )
