"""Measurement: latency profiling under edge profiles, evaluation, reports."""
