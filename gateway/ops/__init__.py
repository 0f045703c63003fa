"""What people run beside the daemon: offline check, history, show, status, replay, the drain summary."""
