"""Ingest: the write front door. Validates, enforces idempotency, records request + outbox in one
transaction, answers 202, relays to SQS FIFO and learns outcomes from ledger events."""
