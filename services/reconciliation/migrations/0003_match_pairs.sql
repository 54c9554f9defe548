-- The one-to-one matches of a large run, in columns: one row per chunk of pairs instead of one row per
-- match (a run over a million lines writes a few rows, not a million). Read back with unnest, in
-- `matches`' shape (see the store's run_matches).
CREATE TABLE match_pairs (
    run_id             uuid               NOT NULL,
    chunk              integer            NOT NULL,
    account_id         text               NOT NULL,
    statement_line_ids bigint[]           NOT NULL,
    entry_ids          bigint[]           NOT NULL,  -- the account's ledger entries (their transfer ids on read)
    rule_index         smallint[]         NOT NULL,  -- into rules
    rules              text[]             NOT NULL,
    confidences        double precision[] NOT NULL,
    breakdown_index    integer[]          NOT NULL,  -- into breakdowns
    breakdowns         jsonb              NOT NULL,  -- a JSON array of per-criterion scores
    amount_differences bigint[]           NOT NULL,
    PRIMARY KEY (run_id, chunk)
);
-- Arrays of numbers compress poorly and are read whole: stored out of line, uncompressed.
ALTER TABLE match_pairs ALTER COLUMN statement_line_ids SET STORAGE EXTERNAL,
    ALTER COLUMN entry_ids SET STORAGE EXTERNAL, ALTER COLUMN rule_index SET STORAGE EXTERNAL,
    ALTER COLUMN confidences SET STORAGE EXTERNAL, ALTER COLUMN breakdown_index SET STORAGE EXTERNAL,
    ALTER COLUMN amount_differences SET STORAGE EXTERNAL;
