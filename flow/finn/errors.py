"""Errors of the FINN build that name the argument at fault, so a caller can say its own name."""
from __future__ import annotations

from flow.core.errors import ConfigError, DensiflowError, ModelError


class InputDtypeError(ModelError):
    """The model input's integer datatype is missing or not usable; carries the tensor name.

    `str(err)` names the API argument `input_dtype`; `err.message("--input-dtype")` names a
    command-line option instead.
    """

    def __init__(self, source: str, tensor: str, problem: str):
        self.source, self.tensor, self.problem = source, tensor, problem
        super().__init__(self.message("input_dtype"))

    def message(self, option: str) -> str:
        """The one-line error naming `option` as the fix."""
        return (
            f"{self.source}: input {self.tensor!r} {self.problem}; set {option}, e.g. 'UINT8' "
            "for 8-bit images (0..255) or 'UINT5' for values 0..16 (the digits data set)"
        )


class ParameterError(ConfigError):
    """A build parameter is out of range; carries the parameter's name.

    `str(err)` names the API argument (e.g. `target_fps`); `err.message("--target-fps")` names a
    command-line option instead.
    """

    def __init__(self, parameter: str, problem: str):
        self.parameter, self.problem = parameter, problem
        super().__init__(self.message(parameter))

    def message(self, name: str) -> str:
        """The one-line error naming the parameter as `name`."""
        return f"{name} {self.problem}"


class DeployError(DensiflowError):
    """A deployment cannot be made: bad inputs, a folder densiflow did not make, a failed tool."""


class VivadoError(DeployError):
    """Vivado or Vitis HLS is missing, or one of FINN's runs of them failed."""
