"""Benchmarks: run as modules (`python -m bench.score`), so bench/select.py never shadows the stdlib select."""
