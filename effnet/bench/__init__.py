"""Benchmarks that print figures (``python -m effnet.bench <what>``); not tests."""
