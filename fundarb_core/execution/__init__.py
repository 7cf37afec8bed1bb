"""Execution: the venue protocol, sending orders with client-id look-up, reconciliation, risk, the ledger
model and the keeper cycle."""
