"""Benchmarks that print JSON: ``python -m bench.broker --json``."""
