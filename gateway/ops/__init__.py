"""What people run: the command line, offline check, history, show, status, replay."""
