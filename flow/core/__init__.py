"""Errors, file I/O and progress: what every layer may use."""
