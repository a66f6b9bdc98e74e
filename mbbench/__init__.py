"""mbbench: benchmark and design-space explorer for encoder transformers, centred on ModernBERT."""

__version__ = "0.1.0"
