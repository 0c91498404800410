"""User-facing error classes: each names the input at fault and what is allowed, in one line."""


class DensiflowError(Exception):
    """Base of every error a user can cause; the CLI prints its message without a traceback."""


class ConfigError(DensiflowError, ValueError):
    """A recipe, plan or option value is unknown or out of range (a ValueError for pydantic)."""


class DataError(DensiflowError):
    """A dataset path or file layout is wrong."""


class ModelError(DensiflowError):
    """A model, plan or ONNX file does not fit what the flow supports."""


class VerificationError(DensiflowError):
    """Two levels of the flow (PyTorch, QONNX, FINN, RTL) disagree beyond tolerance."""


class RunFolderError(DensiflowError):
    """A run folder is not densiflow's, is in use by another process, or is unfinished."""


class ArtefactError(DensiflowError):
    """A saved artefact is missing, damaged or changed since the step that wrote it."""


class FileSystemError(DensiflowError):
    """The machine refused a file operation (full disk, read-only folder, no permission, a path
    of the wrong kind) or a path leads out of the folder densiflow may touch; exit status 1."""


class JournalError(DensiflowError):
    """A journal (search study, HIL batches) is damaged beyond the torn tail densiflow repairs."""
