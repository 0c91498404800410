"""User-facing error classes: each names the input at fault and what is allowed."""


class DensiflowError(Exception):
    """Base of every error a user can cause; the CLI prints its message without a traceback."""


class ConfigError(DensiflowError):
    """A recipe or plan field is unknown or out of range."""


class DataError(DensiflowError):
    """A dataset path or file layout is wrong."""


class ModelError(DensiflowError):
    """A model, plan or ONNX file does not fit what the flow supports."""


class VerificationError(DensiflowError):
    """Two levels of the flow (PyTorch, QONNX, FINN, RTL) disagree beyond tolerance."""
