"""QONNX -> FINN HW dataflow, one job a module.

settings (FINN's settings for a build, os.environ restored), noise (FINN's warnings to a log
file), stages (model -> model), coverage (which nodes became HW layers), folding, verify (QONNX vs
HW-layer python execution), estimate (the build and its typed result); deployment: deploy (the
folder), rtl (stitched RTL), vivado (tools, TCL, FINN's bitfile flow, reports), pynq_driver and
board_driver/driver.py (runs on the board). Importing this package imports neither FINN nor
QONNX; FINN's Vivado-facing modules are imported only inside the functions that run the tools.
"""
from flow.finn.errors import InputDtypeError, ParameterError
from flow.finn.estimate import (
    RESULT_FILE,
    FinnBuild,
    FinnPerformance,
    LayerEstimate,
    build_dataflow,
    estimate_qonnx,
)
from flow.finn.noise import LOG_FILE, finn_output_to
from flow.finn.settings import finn_settings
from flow.finn.verify import HwVerification, random_input_batch, verify_hw_model

__all__ = [
    "LOG_FILE", "RESULT_FILE", "FinnBuild", "FinnPerformance", "HwVerification", "InputDtypeError",
    "LayerEstimate", "ParameterError", "build_dataflow", "estimate_qonnx", "finn_output_to",
    "finn_settings", "random_input_batch", "verify_hw_model",
]
