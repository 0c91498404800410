"""User-facing errors of the hardware models (hw_models never imports flow)."""


class HardwareError(Exception):
    """Base of hardware-side errors a user can cause: unknown board, bad node, failed build."""


class UnknownBoardError(HardwareError):
    """A board name is not in the catalogue."""


class SimulationError(HardwareError):
    """The RTL simulation cannot be built or run, or produced no or inconsistent output."""


class CacheError(HardwareError):
    """A cache folder cannot be used (a file, a dangling link, unwritable) or an entry is
    damaged beyond a rebuild."""
