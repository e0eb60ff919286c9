"""Helpers for tests and benchmarks (need the dev extra); never imported at run time."""
