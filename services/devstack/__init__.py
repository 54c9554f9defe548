"""The local stack: embedded PostgreSQL and Redis (unless URLs are given), an SQS-compatible server,
the three services, the ledger worker and Envoy — what `make run` and the tests start."""
