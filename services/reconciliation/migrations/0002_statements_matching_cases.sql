-- Statements imported from bank files, the matches found against the ledger, and the cases
-- (discrepancies) with their lifecycle and audit trail.

-- The projection keeps the references matching needs (from the transfer's metadata).
ALTER TABLE ledger_entries ADD COLUMN reference text;
ALTER TABLE ledger_entries ADD COLUMN end_to_end_id text;
CREATE INDEX ledger_entries_by_entry ON ledger_entries (account_id, entry_id);

-- One imported file. The same bytes for the same account are imported once.
CREATE TABLE statement_imports (
    id             uuid PRIMARY KEY,
    account_id     text        NOT NULL,
    format         text        NOT NULL,
    sha256         text        NOT NULL,
    file_name      text        NOT NULL DEFAULT '',
    statements     integer     NOT NULL,
    lines          integer     NOT NULL,
    summary        jsonb       NOT NULL,
    created_by     text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, sha256)
);

-- One statement (report, notification) of a file; several per file, possibly several bank accounts.
CREATE TABLE statements (
    id                    bigserial PRIMARY KEY,
    import_id             uuid        NOT NULL REFERENCES statement_imports (id),
    account_id            text        NOT NULL,
    bank_account          text        NOT NULL,
    statement_ref         text,
    currency              char(3)     NOT NULL,
    opening_balance_minor bigint,
    closing_balance_minor bigint,
    opening_date          date,
    closing_date          date,
    balance_check         text        NOT NULL,
    continuity            text        NOT NULL
);
CREATE INDEX statements_by_account ON statements (account_id, bank_account, closing_date, id);

CREATE TABLE statement_lines (
    id                    bigserial PRIMARY KEY,
    import_id             uuid        NOT NULL,
    statement_id          bigint      NOT NULL,
    account_id            text        NOT NULL,
    line_no               integer     NOT NULL,
    amount_minor          bigint      NOT NULL,
    currency              char(3)     NOT NULL,
    booking_date          date,
    value_date            date        NOT NULL,
    reference             text,
    end_to_end_id         text,
    description           text        NOT NULL DEFAULT '',
    counterparty          text,
    reversal              boolean     NOT NULL DEFAULT false,
    status                text        NOT NULL DEFAULT 'BOOKED'
);
CREATE INDEX statement_lines_by_account ON statement_lines (account_id, value_date);

-- Matching rules per account, versioned: a new version never rewrites an old one.
CREATE TABLE matching_rules (
    account_id  text        NOT NULL,
    version     integer     NOT NULL,
    rules       jsonb       NOT NULL,
    created_by  text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, version)
);

-- Matches of the newest run over each window: statement line ids ↔ ledger transfer ids.
CREATE TABLE matches (
    id                 bigserial PRIMARY KEY,
    run_id             uuid        NOT NULL,
    account_id         text        NOT NULL,
    kind               text        NOT NULL,
    statement_line_ids bigint[]    NOT NULL,
    transfer_ids       text[]      NOT NULL,
    rule               text        NOT NULL,
    confidence         double precision NOT NULL,
    breakdown          jsonb       NOT NULL,
    amount_difference_minor bigint NOT NULL DEFAULT 0
);
CREATE INDEX matches_by_run ON matches (run_id);

-- A discrepancy is a case. `fingerprint` identifies the same break found again by a later run, so a
-- case is opened once, resolved when the data no longer shows it, and reopened if it comes back.
CREATE TABLE cases (
    id            uuid PRIMARY KEY,
    account_id    text        NOT NULL,
    kind          text        NOT NULL,
    fingerprint   text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED')),
    severity      text        NOT NULL,
    message       text        NOT NULL,
    amount_minor  bigint,
    currency      text        NOT NULL DEFAULT '',
    evidence      jsonb       NOT NULL,
    window_start  timestamptz,
    window_end    timestamptz,
    adjustment_transfer_id text,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, fingerprint)
);
CREATE INDEX cases_by_status ON cases (status, opened_at);
CREATE INDEX cases_by_account ON cases (account_id, opened_at);

CREATE TABLE case_events (
    id        bigserial PRIMARY KEY,
    case_id   uuid        NOT NULL REFERENCES cases (id),
    action    text        NOT NULL,
    actor     text        NOT NULL,
    reason    text        NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_events_by_case ON case_events (case_id, id);

ALTER TABLE runs ADD COLUMN rules_version integer NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN watermark text NOT NULL DEFAULT 'CURRENT';
