"""Errors of the synthesis step."""

from hw_models.errors import HardwareError


class SynthesisError(HardwareError):
    """Yosys is missing, a source no longer matches its patch, or a node failed to synthesise."""
