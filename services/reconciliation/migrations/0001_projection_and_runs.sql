-- The reconciliation context's own copy of posted ledger entries, built from TransferPosted events.
CREATE TABLE ledger_entries (
    transfer_id  text        NOT NULL,
    account_id   text        NOT NULL,
    direction    text        NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    currency     char(3)     NOT NULL,
    entry_id     bigint      NOT NULL,
    posted_at    timestamptz NOT NULL,
    PRIMARY KEY (transfer_id, direction)
);

CREATE INDEX ledger_entries_by_account ON ledger_entries (account_id, posted_at);

-- Every reconciliation run and the report it produced.
CREATE TABLE runs (
    id                uuid PRIMARY KEY,
    account_id        text        NOT NULL,
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    transaction_count bigint      NOT NULL,
    discrepancy_count bigint      NOT NULL,
    balanced          boolean     NOT NULL,
    report            jsonb       NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX runs_by_account ON runs (account_id, created_at DESC);
