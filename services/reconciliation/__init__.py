"""Reconciliation: the auditor. Keeps its own projection of ledger entries (from ledger events) and
checks it, and later external statements, against the ledger."""
