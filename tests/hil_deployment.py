"""A deployment folder for HIL tests: a small real FINN MVAU, its Verilator simulator (cached),
and FINN's python execution as the golden reference (shared by test_hil and test_faults_hil)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow.hil.deployment import artefact_hashes, new_token, prepare_rtlsim_folder, read_token
from flow.hil.types import Golden

PART = "xczu3eg-sbva484-1-e"
MW, MH, SIMD, PE = 16, 10, 4, 2  # FINN estimate: MW/SIMD * MH/PE = 20 cycles per frame
CLOCK_MHZ = 200.0
N_FRAMES, BATCH = 120, 16  # 8 batches, the last one 8 frames
N_BATCHES = -(-N_FRAMES // BATCH)


# ---------------------------------------------------------------------------------------------
# a small real FINN model, its simulator, and FINN's python execution as the golden reference


def make_mvau(rng: np.random.Generator):
    """One MVAU (INT4 weights and inputs, no activation) as FINN's own tests build it."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, MW])
    outp = helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, MH])
    node = helper.make_node(
        "MVAU", ["inp", "weights"], ["outp"], domain="finn.custom_op.fpgadataflow",
        backend="fpgadataflow", MW=MW, MH=MH, SIMD=SIMD, PE=PE, inputDataType="INT4",
        weightDataType="INT4", outputDataType="INT32", ActVal=0, binaryXnorMode=0,
        noActivation=1, numInputVectors=[1], mem_mode="internal_decoupled")
    m = ModelWrapper(qonnx_make_model(helper.make_graph([node], "mvau", [inp], [outp])))
    for name, dt in (("inp", "INT4"), ("outp", "INT32"), ("weights", "INT4")):
        m.set_tensor_datatype(name, DataType[dt])
    m.set_initializer("weights", rng.integers(-8, 8, (MW, MH)).astype(np.float32))
    return m


def specialized(hw):
    """The model with every layer specialized to RTL, as FINN's build leaves it."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    m = ModelWrapper(hw.model.__deepcopy__())
    for node in m.graph.node:
        getCustomOp(node).set_nodeattr("preferred_impl_style", "rtl")
    return m.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())


def python_exec(hw, frames: np.ndarray) -> np.ndarray:
    """FINN's python execution of the unspecialized model, frame by frame."""
    import finn.core.onnx_exec as oxe

    return np.stack([oxe.execute_onnx(hw, {"inp": f[None]})["outp"][0] for f in frames])


@dataclass
class Deployment:
    folder: Path
    token_file: Path
    token: bytes
    golden: Golden
    artefacts: dict[str, str]
    accuracy: float  # of the golden outputs' classes against the labels (numpy)
    agreement: float


def build_deployment(root: Path, cache: Path) -> Deployment:
    """The MVAU's rtlsim deployment folder in root/deploy, its golden set and a token."""
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()
    rng = np.random.default_rng(7)
    hw = make_mvau(rng)
    folder = root / "deploy"
    prepare_rtlsim_folder(specialized(hw), folder, PART, CLOCK_MHZ, cache_dir=cache,
                          max_frames=32)
    x = rng.integers(-8, 8, (N_FRAMES, MW)).astype(np.float32)
    expected = python_exec(hw, x)
    labels = rng.integers(0, MH, N_FRAMES)
    classes = expected.reshape(N_FRAMES, -1).argmax(1)
    reference = classes.copy()
    reference[:10] = (reference[:10] + 1) % MH  # the "exported model" disagrees on 10 frames
    reference_logits = np.eye(MH)[reference]
    token_file = new_token(root / "token")
    return Deployment(folder, token_file, read_token(token_file),
                      Golden(x, expected, labels, reference_logits), artefact_hashes(folder),
                      float(np.mean(classes == labels)), (N_FRAMES - 10) / N_FRAMES)


