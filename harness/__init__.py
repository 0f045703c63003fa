"""Driving a real gateway from outside, for the tests and the benchmarks alike: a config for a throwaway
spool, files dropped the way institutions drop them, the daemon as a real process, what it wrote."""
