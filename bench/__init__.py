"""Benchmarks with their own entry points: `python -m bench.<name>`."""
