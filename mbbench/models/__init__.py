"""Encoders: the reference ModernBERT, attention backends, competitor adapters and the registry."""
