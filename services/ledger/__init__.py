"""Ledger: the book of record. Posts each transfer exactly once as balanced double entries, keeps
balances equal to the sum of entries, and emits outcome events through its own outbox."""
