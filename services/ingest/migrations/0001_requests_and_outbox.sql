-- Accepted requests (durable idempotency truth) and the transactional outbox feeding SQS.
CREATE TABLE requests (
    idempotency_key        text PRIMARY KEY,
    fingerprint            text        NOT NULL,
    message_id             uuid        NOT NULL UNIQUE,
    source_account_id      text        NOT NULL,
    destination_account_id text        NOT NULL,
    amount_minor           bigint      NOT NULL CHECK (amount_minor > 0),
    currency               char(3)     NOT NULL,
    metadata               jsonb       NOT NULL DEFAULT '{}',
    status                 text        NOT NULL DEFAULT 'PROCESSING'
                                       CHECK (status IN ('PROCESSING', 'COMPLETED', 'FAILED')),
    error_code             text,
    error_message          text,
    accepted_at            timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz NOT NULL,
    completed_at           timestamptz
);

CREATE INDEX requests_processing ON requests (accepted_at) WHERE status = 'PROCESSING';

CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    idempotency_key text        NOT NULL REFERENCES requests (idempotency_key),
    message_group   text        NOT NULL,
    payload         bytea       NOT NULL,
    traceparent     text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
