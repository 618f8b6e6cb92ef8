"""Measurements too long for the test suite. Each module prints its figures and records them in RESULTS.md."""
