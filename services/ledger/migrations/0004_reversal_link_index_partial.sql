-- Only reversals carry reverses_transfer_id: index (and keep unique) just those rows, so ordinary
-- transfers pay no index insert for a NULL.
ALTER TABLE transfers DROP CONSTRAINT transfers_reverses_transfer_id_key;
CREATE UNIQUE INDEX transfers_one_reversal_each ON transfers (reverses_transfer_id)
    WHERE reverses_transfer_id IS NOT NULL;
