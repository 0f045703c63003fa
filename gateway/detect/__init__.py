"""Detection: inotify hints and reconcile scans (watch), readiness (settle), the claim (detector)."""
