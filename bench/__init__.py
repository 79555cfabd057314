"""Benchmarks: each prints its measurement as a ratio against the physical limit on this machine."""
