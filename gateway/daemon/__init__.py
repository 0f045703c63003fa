"""The process: composition and lifecycle, workers, systemd, signals, recovery, housekeeping."""
