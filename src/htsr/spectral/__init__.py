"""Pure spectral math: arrays in, numbers or frozen dataclasses out (no pandas, no I/O)."""
