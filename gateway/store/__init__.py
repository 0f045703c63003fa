"""What the gateway remembers: the ledger (file states, report keys) and the sync history."""
