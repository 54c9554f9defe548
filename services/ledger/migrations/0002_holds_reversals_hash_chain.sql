-- Holds and reversals live in `transfers` (kind), pending amounts on accounts; every entry is chained
-- by hash to the previous entry of its account, and the account keeps the head of its chain.
ALTER TABLE transfers DROP CONSTRAINT transfers_status_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_status_check
    CHECK (status IN ('POSTED', 'REJECTED', 'PENDING', 'VOIDED', 'EXPIRED'));
ALTER TABLE transfers
    ADD COLUMN kind                 text NOT NULL DEFAULT 'TRANSFER' CHECK (kind IN ('TRANSFER', 'HOLD', 'REVERSAL')),
    ADD COLUMN posted_amount_minor  bigint CHECK (posted_amount_minor > 0),
    ADD COLUMN expires_at           timestamptz,
    ADD COLUMN resolved_at          timestamptz,
    ADD COLUMN reverses_transfer_id text UNIQUE REFERENCES transfers (id),
    ADD COLUMN reversed_by          text,
    ADD COLUMN reason               text;
ALTER TABLE transfers ADD CONSTRAINT posted_within_held
    CHECK (posted_amount_minor IS NULL OR posted_amount_minor <= amount_minor);
CREATE INDEX holds_expiring ON transfers (expires_at) WHERE status = 'PENDING' AND expires_at IS NOT NULL;

ALTER TABLE accounts ADD COLUMN chain_head bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000';

ALTER TABLE entries ADD COLUMN hash bytea;

-- Chain what exists already, with the same canonical form the ledger writes (entry_hash in
-- services/ledger/domain/chain.py): sha256(previous hash || 'id|transfer|account|direction|amount|currency|µs').
DO $$
DECLARE
    e record;
    head bytea;
    current_account text := NULL;
BEGIN
    FOR e IN SELECT id, transfer_id, account_id, direction, amount_minor, currency,
                    (extract(epoch FROM created_at) * 1000000)::bigint AS micros
             FROM entries ORDER BY account_id, id
    LOOP
        IF current_account IS DISTINCT FROM e.account_id THEN
            IF current_account IS NOT NULL THEN
                UPDATE accounts SET chain_head = head WHERE id = current_account;
            END IF;
            current_account := e.account_id;
            head := decode(repeat('00', 32), 'hex');
        END IF;
        head := sha256(head || convert_to(concat_ws('|', e.id, e.transfer_id, e.account_id, e.direction,
                                                    e.amount_minor, e.currency, e.micros), 'UTF8'));
        UPDATE entries SET hash = head WHERE id = e.id;
    END LOOP;
    IF current_account IS NOT NULL THEN
        UPDATE accounts SET chain_head = head WHERE id = current_account;
    END IF;
END $$;

ALTER TABLE entries ALTER COLUMN hash SET NOT NULL;

-- Entries are append-only: the database refuses to change or delete one.
CREATE FUNCTION refuse_entry_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only (% on entry %)', TG_OP, OLD.id;
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_entry_change();
