"""Measurement: timing, throughput passes, maximum batch search, telemetry."""
