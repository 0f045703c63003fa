"""Many files' work as one: group commits of syncs and transactions, shared thread jobs."""
