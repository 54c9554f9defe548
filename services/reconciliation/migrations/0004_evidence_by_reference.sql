-- A large run writes a hundred thousand cases and as many discrepancies: building their JSON at write
-- time was most of the run's database time. Both are now stored as columns and rendered when read.

-- A case whose evidence is records (statement lines, ledger entries) keeps their ids; the records are
-- never changed or deleted, so rendering them when the case is read shows what the run saw. Evidence
-- given as a document (balance drift, unbalanced transfer, ...) stays in `evidence`.
ALTER TABLE cases
    ALTER COLUMN evidence DROP NOT NULL,
    ADD COLUMN evidence_rule text,
    ADD COLUMN days_apart    integer,
    ADD COLUMN line_ids      bigint[],
    ADD COLUMN entry_ids     bigint[],
    ADD COLUMN debit_normal  boolean,
    ADD CONSTRAINT cases_evidence_present CHECK (evidence IS NOT NULL OR evidence_rule IS NOT NULL);

-- The evidence document of records named by id, as matching_run.findings_of renders it in Python:
-- amounts in major units with the currency's decimals (`exponents`: currency -> decimals), ledger
-- amounts signed from the account's view, dates ISO.
CREATE FUNCTION case_evidence(
    account text, rule text, days_apart integer, line_ids bigint[], entry_ids bigint[], debit_normal boolean,
    exponents jsonb
) RETURNS jsonb LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
SELECT jsonb_build_object(
    'rule', rule,
    'statementLines', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
            'statementLineId', l.id::text, 'line', l.line_no, 'bankAccount', s.bank_account,
            'amount', round(l.amount_minor::numeric / power(10::numeric, (exponents ->> l.currency::text)::integer),
                            (exponents ->> l.currency::text)::integer)::text,
            'currency', l.currency, 'valueDate', to_char(l.value_date, 'YYYY-MM-DD'),
            'bookingDate', to_char(l.booking_date, 'YYYY-MM-DD'), 'reference', l.reference,
            'endToEndId', l.end_to_end_id, 'description', l.description, 'counterparty', l.counterparty)
            ORDER BY u.n)
        FROM unnest(line_ids) WITH ORDINALITY AS u(id, n)
        JOIN statement_lines l ON l.id = u.id JOIN statements s ON s.id = l.statement_id), '[]'::jsonb),
    'ledgerEntries', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
            'transferId', e.transfer_id, 'entryId', e.entry_id, 'direction', e.direction,
            'amount', round((CASE WHEN (e.direction = 'DEBIT') = debit_normal THEN e.amount_minor
                                  ELSE -e.amount_minor END)::numeric
                            / power(10::numeric, (exponents ->> e.currency::text)::integer),
                            (exponents ->> e.currency::text)::integer)::text,
            'currency', e.currency,
            'postedAt', to_char(e.posted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                || CASE WHEN extract(microseconds FROM e.posted_at)::bigint % 1000000 <> 0
                        THEN to_char(e.posted_at AT TIME ZONE 'UTC', '.US') ELSE '' END || '+00:00',
            'reference', e.reference, 'endToEndId', e.end_to_end_id)
            ORDER BY u.n)
        FROM unnest(entry_ids) WITH ORDINALITY AS u(id, n)
        JOIN ledger_entries e ON e.account_id = account AND e.entry_id = u.id), '[]'::jsonb))
    || CASE WHEN days_apart IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('daysApart', days_apart) END
$$;

-- A run's discrepancies, a row each in the order the report lists them (the report keeps the rest).
CREATE TABLE run_discrepancies (
    run_id              uuid    NOT NULL REFERENCES runs (id),
    n                   integer NOT NULL,
    type                text    NOT NULL,
    severity            text    NOT NULL,
    message             text    NOT NULL,
    transaction_id      text    NOT NULL,
    amount_minor        bigint,
    currency            text    NOT NULL,
    case_id             text    NOT NULL,
    statement_line_ids  text[]  NOT NULL,
    ledger_transfer_ids text[]  NOT NULL,
    PRIMARY KEY (run_id, n)
);

INSERT INTO run_discrepancies
SELECT r.id, d.n - 1, coalesce(d.value ->> 'type', ''), coalesce(d.value ->> 'severity', ''),
       coalesce(d.value ->> 'message', ''), coalesce(d.value ->> 'transaction_id', ''),
       CASE WHEN d.value ->> 'amount_minor' ~ '^-?[0-9]{1,18}$' THEN (d.value ->> 'amount_minor')::bigint END,
       coalesce(d.value ->> 'currency', ''), coalesce(d.value ->> 'case_id', ''),
       ARRAY(SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.value -> 'statement_line_ids') = 'array'
                                                   THEN d.value -> 'statement_line_ids' ELSE '[]' END)),
       ARRAY(SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.value -> 'ledger_transfer_ids') = 'array'
                                                   THEN d.value -> 'ledger_transfer_ids' ELSE '[]' END))
FROM runs r
CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(r.report -> 'discrepancies') = 'array'
                                             THEN r.report -> 'discrepancies' ELSE '[]' END)
    WITH ORDINALITY AS d(value, n);
UPDATE runs SET report = report - 'discrepancies' WHERE report ? 'discrepancies';

-- A case's opening is the first event of its history, read from the case itself (who: the system,
-- when: opened_at): a run that finds a hundred thousand breaks writes no second row for each. The
-- OPENED rows written so far say the same (written in the transaction that set opened_at).
DELETE FROM case_events WHERE action = 'OPENED' AND actor = 'system' AND reason = 'run found it';
