"""Benchmarks (``make bench``): ratios measured within one run, never timed assertions."""
