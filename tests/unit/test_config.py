import pytest

from services.ingest.config import IngestSettings, cores, ingest_process_count
from services.kernel.auth import find_token
from services.kernel.config import DEMO_TOKEN, CommonSettings, ConfigError, Env, hash_token


def test_missing_database_url_stops_startup_with_its_name() -> None:
    with pytest.raises(ConfigError, match="PAYRECON_DATABASE_URL"):
        CommonSettings.from_env(Env({"PAYRECON_ENV": "development"}))


def test_production_needs_tokens_and_ignores_the_demo_token() -> None:
    with pytest.raises(ConfigError, match="PAYRECON_API_TOKENS"):
        CommonSettings.from_env(Env({"PAYRECON_DATABASE_URL": "postgresql://x/y"}))
    digest = hash_token("s3cret")
    settings = CommonSettings.from_env(
        Env(
            {
                "PAYRECON_DATABASE_URL": "postgresql://x/y",
                "PAYRECON_API_TOKENS": f"ops:{digest}:ops:read",
            }
        )
    )
    assert find_token(settings.api_tokens, "s3cret") is not None
    assert find_token(settings.api_tokens, DEMO_TOKEN) is None


def test_development_accepts_the_demo_token() -> None:
    settings = CommonSettings.from_env(
        Env({"PAYRECON_ENV": "development", "PAYRECON_DATABASE_URL": "postgresql://x/y"})
    )
    token = find_token(settings.api_tokens, DEMO_TOKEN)
    assert token is not None and token.grants("transactions:write") and token.grants("ops:read")


def test_malformed_token_entries_and_scopes_are_refused() -> None:
    with pytest.raises(ConfigError):
        CommonSettings.from_env(Env({"PAYRECON_DATABASE_URL": "postgresql://x/y", "PAYRECON_API_TOKENS": "x:abc:*"}))
    for scopes in ("Money Print", "transactions", ""):
        with pytest.raises(ConfigError, match="scopes of 'x'"):
            CommonSettings.from_env(
                Env({"PAYRECON_DATABASE_URL": "postgresql://x/y", "PAYRECON_API_TOKENS": f"x:{'a' * 64}:{scopes}"})
            )
    settings = CommonSettings.from_env(
        Env({"PAYRECON_DATABASE_URL": "postgresql://x/y", "PAYRECON_API_TOKENS": f"x:{'a' * 64}:ledger:read"})
    )
    assert settings.api_tokens[0].grants("ledger:read") and not settings.api_tokens[0].grants("ledger:write")


def test_ingest_requires_redis_and_a_known_default_currency() -> None:
    base = {"PAYRECON_ENV": "development", "PAYRECON_DATABASE_URL": "postgresql://x/y"}
    with pytest.raises(ConfigError, match="PAYRECON_REDIS_URL"):
        IngestSettings.from_env(Env(base))
    with pytest.raises(ConfigError, match="INGEST_DEFAULT_CURRENCY"):
        IngestSettings.from_env(Env({**base, "PAYRECON_REDIS_URL": "redis://x", "INGEST_DEFAULT_CURRENCY": "ZZZ"}))


def test_internal_scopes_are_granted_by_name_only() -> None:
    """`*` means every public scope: a client token configured with it cannot call internal RPCs."""
    from services.ledger.api.errors import SCOPES

    internal = SCOPES["PostTransfers"]
    star, named = hash_token("star"), hash_token("service")
    settings = CommonSettings.from_env(
        Env(
            {
                "PAYRECON_DATABASE_URL": "postgresql://x/y",
                "PAYRECON_API_TOKENS": f"client:{star}:*;payments:{named}:{internal}",
            }
        )
    )
    client, service = find_token(settings.api_tokens, "star"), find_token(settings.api_tokens, "service")
    assert client is not None and service is not None
    assert not client.grants(internal) and client.grants(SCOPES["CreateHold"])
    assert service.grants(internal) and not service.grants(SCOPES["CreateHold"])
    development = CommonSettings.from_env(
        Env({"PAYRECON_ENV": "development", "PAYRECON_DATABASE_URL": "postgresql://x/y"})
    )
    demo = find_token(development.api_tokens, DEMO_TOKEN)
    assert demo is not None and demo.grants(internal)  # development only: local internal clients


def test_ingest_redrive_defaults_and_refuses_a_zero_age() -> None:
    base = {
        "PAYRECON_ENV": "development",
        "PAYRECON_DATABASE_URL": "postgresql://x/y",
        "PAYRECON_REDIS_URL": "redis://x",
    }
    settings = IngestSettings.from_env(Env(base))
    assert (settings.redrive_after_seconds, settings.redrive_batch) == (60, 500)
    with pytest.raises(ConfigError, match="INGEST_REDRIVE_AFTER_SECONDS"):
        IngestSettings.from_env(Env({**base, "INGEST_REDRIVE_AFTER_SECONDS": "0"}))
    with pytest.raises(ConfigError, match="INGEST_REDRIVE_BATCH"):
        IngestSettings.from_env(Env({**base, "INGEST_REDRIVE_BATCH": "-1"}))


def test_ingest_group_commit_defaults_and_refuses_limits_out_of_range() -> None:
    base = {
        "PAYRECON_ENV": "development",
        "PAYRECON_DATABASE_URL": "postgresql://x/y",
        "PAYRECON_REDIS_URL": "redis://x",
    }
    settings = IngestSettings.from_env(Env(base))
    defaults = (settings.group_commit_window_ms, settings.group_commit_max_rows, settings.group_commit_max_writes)
    assert defaults == (5, 256, 2)
    for name, value in (
        ("INGEST_GROUP_COMMIT_WINDOW_MS", "-1"),
        ("INGEST_GROUP_COMMIT_WINDOW_MS", "101"),
        ("INGEST_GROUP_COMMIT_MAX_ROWS", "0"),
        ("INGEST_GROUP_COMMIT_MAX_ROWS", "10001"),
        ("INGEST_GROUP_COMMIT_MAX_WRITES", "0"),
    ):
        with pytest.raises(ConfigError, match=name):
            IngestSettings.from_env(Env({**base, name: value}))


def test_ingest_schema_precheck_needs_a_ledger_token_outside_development_and_sane_timings() -> None:
    base = {
        "PAYRECON_ENV": "development",
        "PAYRECON_DATABASE_URL": "postgresql://x/y",
        "PAYRECON_REDIS_URL": "redis://x",
    }
    settings = IngestSettings.from_env(Env(base))
    assert (settings.ledger_token, settings.schema_refresh_ms, settings.schema_check_timeout_ms) == (
        DEMO_TOKEN,
        1000,
        500,
    )
    production = {**base, "PAYRECON_ENV": "production", "PAYRECON_API_TOKENS": f"a:{hash_token('t')}:*"}
    with pytest.raises(ConfigError, match="INGEST_LEDGER_TOKEN"):
        IngestSettings.from_env(Env(production))
    assert IngestSettings.from_env(Env({**production, "INGEST_LEDGER_TOKEN": "svc"})).ledger_token == "svc"
    for name, value in (("INGEST_SCHEMA_REFRESH_MS", "0"), ("INGEST_SCHEMA_CHECK_TIMEOUT_MS", "20000")):
        with pytest.raises(ConfigError, match=name):
            IngestSettings.from_env(Env({**base, name: value}))


def test_ingest_processes_default_to_the_cores_and_refuse_zero() -> None:
    assert ingest_process_count(Env({})) == max(1, cores() // 2)  # the whole stack shares the cores
    assert ingest_process_count(Env({"INGEST_PROCESSES": "3"})) == 3
    for bad in ("0", "65", "two"):
        with pytest.raises(ConfigError, match="INGEST_PROCESSES"):
            ingest_process_count(Env({"INGEST_PROCESSES": bad}))
