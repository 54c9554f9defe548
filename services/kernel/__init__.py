"""Shared kernel: configuration, logging, database, messaging, auth, telemetry and gRPC plumbing.

Nothing here knows about transfers, ledgers or statements; business rules live in each context.
"""
