"""The durable on-disk mailbox: layout, atomic hand-offs by rename, claim, lock and recovery."""
