"""Several nodes on one PostgreSQL: who serves which mailboxes (leases with fencing epochs, spread by
rendezvous hashing) and what a node sees of the others. See docs/scale-out.md."""
