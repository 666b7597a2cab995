"""Benchmarks that print figures; `make bench` runs each as a module (`python -m bench.score`)."""
