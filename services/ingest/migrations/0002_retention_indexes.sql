-- Retention purge: find expired keys by age, and delete their outbox rows without scanning the table
-- (the outbox → requests foreign key needs the index on the referencing side too).
CREATE INDEX requests_expiry ON requests (expires_at) WHERE status <> 'PROCESSING';
CREATE INDEX outbox_by_request ON outbox (idempotency_key);
