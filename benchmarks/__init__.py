"""Benchmarks that print figures (not installed; run from a checkout): see ``bench.py``."""
