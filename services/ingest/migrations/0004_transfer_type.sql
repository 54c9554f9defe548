-- The transfer type (a code of the ledger's schema) a request names, kept so a redrive publishes
-- the same transfer. NULL for requests that name none, and for every request before this.
ALTER TABLE requests ADD COLUMN transfer_type text;
