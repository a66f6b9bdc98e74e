"""The GPU basket, local GPU detection, the performance model and the memory model."""
