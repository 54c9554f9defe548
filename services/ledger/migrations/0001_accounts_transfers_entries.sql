-- Accounts carry their running totals; entries are append-only; balances = Σ entries, kept in the
-- same transaction as the entries they summarize.
CREATE TABLE accounts (
    id                    text PRIMARY KEY,
    currency              char(3)     NOT NULL,
    type                  text        NOT NULL CHECK (type IN ('ASSET', 'LIABILITY', 'EQUITY', 'REVENUE', 'EXPENSE')),
    allow_overdraft       boolean     NOT NULL,
    overdraft_limit_minor bigint      NOT NULL DEFAULT 0 CHECK (overdraft_limit_minor >= 0),
    metadata              jsonb       NOT NULL DEFAULT '{}',
    debits_posted         bigint      NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted        bigint      NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending        bigint      NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending       bigint      NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- One row per transfer id ever seen, posted or rejected: the id is the exactly-once guard.
CREATE TABLE transfers (
    id                text PRIMARY KEY,
    debit_account_id  text        NOT NULL,
    credit_account_id text        NOT NULL,
    amount_minor      bigint      NOT NULL CHECK (amount_minor > 0),
    currency          char(3)     NOT NULL,
    status            text        NOT NULL CHECK (status IN ('POSTED', 'REJECTED')),
    reject_code       text,
    reject_message    text,
    metadata          jsonb       NOT NULL DEFAULT '{}',
    accepted_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account_id <> credit_account_id)
);

CREATE SEQUENCE entries_id_seq;

CREATE TABLE entries (
    id           bigint PRIMARY KEY DEFAULT nextval('entries_id_seq'),
    transfer_id  text        NOT NULL REFERENCES transfers (id),
    account_id   text        NOT NULL REFERENCES accounts (id),
    direction    text        NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    currency     char(3)     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transfer_id, direction)
);
ALTER SEQUENCE entries_id_seq OWNED BY entries.id;

CREATE INDEX entries_by_account ON entries (account_id, id DESC);
CREATE INDEX entries_by_account_time ON entries (account_id, created_at);

-- Messages already applied (SQS may redeliver): a cheap first guard before the transfer ids.
CREATE TABLE processed_messages (
    id           text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    message_group text        NOT NULL,
    payload       bytea       NOT NULL,
    traceparent   text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
