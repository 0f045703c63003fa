"""Benchmarks, soak and fuzzing, each a module run as ``python -m bench.NAME`` from the checkout."""
