"""HDL generation for a folded, specialized FINN dataflow graph (no Vivado needed)."""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.errors import HardwareError

log = logging.getLogger(__name__)

# The part only selects the DSP flavour of the RTL MVAU (DSP48E2 here); under Verilator the MVU
# always uses its behavioural model, so any UltraScale+ part gives the same cycle behaviour.
DEFAULT_FPGA_PART = "xczu3eg-sbva484-1-e"
DEFAULT_CLK_NS = 5.0
# Node kinds the stitcher knows how to wire; anything else is refused with a reason. Pool_rtl,
# GlobalAccPool_rtl, DuplicateStreams_rtl and AddStreams_rtl are densiflow's (hw_models.finn_ops).
SUPPORTED_OPS = (
    "MVAU_rtl",
    "VVAU_rtl",
    "Thresholding_rtl",
    "ConvolutionInputGenerator_rtl",
    "FMPadding_rtl",
    "StreamingDataWidthConverter_rtl",
    "StreamingFIFO_rtl",
    "Pool_rtl",
    "GlobalAccPool_rtl",
    "DuplicateStreams_rtl",
    "AddStreams_rtl",
)
_WEIGHTED = ("MVAU_rtl", "VVAU_rtl")

DEPLOY_HINT = (
    "To make the network simulatable (and deployable with FINN's and densiflow's RTL) change "
    "the plan or architecture: signed weights and activations of at least 2 bits in every "
    "layer (no 1-bit/bipolar layers), and preferred_impl_style='rtl' for every layer (import "
    "hw_models.finn_ops before SpecializeLayers, for pooling, forks and residual adds)."
)


def ensure_finn_settings() -> None:
    """Initialise FINN's global settings (dummy ones, FINN_BUILD_DIR in a temp folder) if unset."""
    from finn.util.exception import FINNUserError
    from finn.util.settings import get_settings, initialize_dummy_settings

    try:
        get_settings()
        return
    except FINNUserError:
        pass
    if not os.environ.get("FINN_BUILD_DIR"):
        build_dir = Path(tempfile.gettempdir()) / "densiflow_finn_build"
        build_dir.mkdir(parents=True, exist_ok=True)
        os.environ["FINN_BUILD_DIR"] = str(build_dir)
    Path(os.environ["FINN_BUILD_DIR"]).mkdir(parents=True, exist_ok=True)
    initialize_dummy_settings()


def load_model(model: ModelWrapper | str | Path) -> ModelWrapper:
    """A ModelWrapper from a wrapper or an .onnx path."""
    if isinstance(model, ModelWrapper):
        return model
    path = Path(model)
    if not path.is_file():
        raise HardwareError(f"model file {path} does not exist")
    return ModelWrapper(str(path))


@dataclass(frozen=True)
class Unsupported:
    """One node the RTL simulator cannot handle, and why."""

    name: str
    op_type: str
    reason: str


def _hls_reason(model: ModelWrapper, node, inst) -> str:
    base = node.op_type[: -len("_hls")]
    if base in ("MVAU", "VVAU"):
        wdt = inst.get_input_datatype(1)
        idt = inst.get_input_datatype(0)
        if wdt.bitwidth() < 2 or idt.bitwidth() < 2 or inst.get_nodeattr("binaryXnorMode"):
            return (
                f"{wdt.name} weights x {idt.name} activations: 1-bit (bipolar/XNOR) layers "
                "have no RTL variant"
            )
        if not wdt.signed():
            return f"unsigned weights ({wdt.name}): the RTL MVU needs signed weights"
        return "specialized to HLS (set preferred_impl_style='rtl', >=2-bit signed weights)"
    if base in ("Pool", "GlobalAccPool", "DuplicateStreams", "AddStreams"):
        return (f"specialized to HLS: densiflow has {base}_rtl (import hw_models.finn_ops before "
                "SpecializeLayers, preferred_impl_style='rtl')")
    return f"{base} exists only as HLS in FINN's library"


def unsupported_nodes(model: ModelWrapper) -> list[Unsupported]:
    """Every node of the graph the RTL simulator cannot build, with the reason."""
    from hw_models.rtlsim.sources import custom_op

    bad: list[Unsupported] = []
    for node in model.graph.node:
        op = node.op_type
        try:
            inst = custom_op(node)
        except Exception:  # noqa: BLE001 - any lookup failure means: not a FINN HW node
            bad.append(Unsupported(node.name, op, "not a FINN dataflow (HW) node"))
            continue
        if op.endswith("_hls"):
            bad.append(Unsupported(node.name, op, _hls_reason(model, node, inst)))
        elif not op.endswith("_rtl"):
            bad.append(
                Unsupported(node.name, op, "not specialized: run SpecializeLayers (rtl) first")
            )
        elif op not in SUPPORTED_OPS:
            bad.append(Unsupported(node.name, op, "no stitching support for this RTL node kind"))
        elif op in _WEIGHTED:
            if inst.get_nodeattr("mem_mode") != "internal_decoupled":
                bad.append(
                    Unsupported(
                        node.name,
                        op,
                        f"mem_mode={inst.get_nodeattr('mem_mode')!r}; only "
                        "'internal_decoupled' (weights streamed from on-chip memory) is supported",
                    )
                )
            elif _attr(inst, "pumpedCompute") or _attr(inst, "pumpedMemory"):
                bad.append(
                    Unsupported(node.name, op, "double-pumped compute/memory needs a 2x clock")
                )
            elif op == "MVAU_rtl" and inst.get_nodeattr("TH") != 1:
                bad.append(Unsupported(node.name, op, "tiled MVU (TH>1) is not supported"))
            elif op == "VVAU_rtl" and inst.get_nodeattr("resType") == "lut":
                bad.append(Unsupported(node.name, op, "resType='lut': FINN's RTL VVU is DSP-only "
                                       "(set resType='dsp')"))
            elif _attr(inst, "mlo_max_iter") or _attr(inst, "bodies"):
                bad.append(Unsupported(node.name, op, "loop-rolled (MLO) layers are not supported"))
        elif op == "Thresholding_rtl":
            if inst.get_nodeattr("mlo_max_iter") or inst.get_nodeattr("bodies"):
                bad.append(Unsupported(node.name, op, "loop-rolled (MLO) layers are not supported"))
        elif op == "ConvolutionInputGenerator_rtl" and inst.get_nodeattr("dynamic_mode"):
            bad.append(Unsupported(node.name, op, "dynamic_mode needs AXI-lite configuration"))
        elif op == "StreamingFIFO_rtl" and inst.get_nodeattr("impl_style") != "rtl":
            bad.append(
                Unsupported(
                    node.name, op, f"impl_style={inst.get_nodeattr('impl_style')!r} (only 'rtl')"
                )
            )
    return bad


def _attr(inst, name: str):
    """A node attribute, None where the op has no such attribute."""
    try:
        return inst.get_nodeattr(name)
    except AttributeError:
        return None


def check_rtl_graph(model: ModelWrapper) -> None:
    """Raise HardwareError listing every node that has no simulatable RTL implementation."""
    bad = unsupported_nodes(model)
    if bad:
        lines = "\n".join(f"  - {b.name} ({b.op_type}): {b.reason}" for b in bad)
        raise HardwareError(
            f"{len(bad)} node(s) of the dataflow graph cannot be simulated as RTL:\n{lines}\n"
            + DEPLOY_HINT
        )


def _minimize(model: ModelWrapper) -> ModelWrapper:
    """Apply FINN's weight/accumulator minimisation and threshold rounding (idempotent)."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    model = model.transform(MinimizeWeightBitWidth())
    model = model.transform(MinimizeAccumulatorWidth())
    model = model.transform(RoundAndClipThresholds())
    return model


def _source_key(model: ModelWrapper, fpgapart: str, clk_ns: float) -> str:
    """Hash of everything HDL generation depends on: the model, the part, the clock, FINN."""
    import finn

    h = hashlib.sha256(model.model.SerializeToString())
    h.update(f"\n{fpgapart}\n{clk_ns}\n{Path(finn.__file__).parent}\n".encode())
    h.update(_finn_version().encode())
    return h.hexdigest()


@functools.cache
def _finn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("finn-plus")
    except PackageNotFoundError:
        return "?"


def _generated_before(out: Path, key: str, names: list[str]) -> ModelWrapper | None:
    """The model generate_rtl saved in `out` for the same source key, if every node has HDL."""
    path = out / "rtl_model.onnx"
    if not path.is_file():
        return None
    try:
        prev = ModelWrapper(str(path))
    except Exception:  # noqa: BLE001 - an unreadable leftover is regenerated
        return None
    if prev.get_metadata_prop("rtlsim_source_key") != key:
        return None
    from qonnx.custom_op.registry import getCustomOp

    dirs = [getCustomOp(n).get_nodeattr("code_gen_dir_ipgen") for n in prev.graph.node]
    if dirs != [str(out / n) for n in names] or not all((out / n).is_dir() for n in names):
        return None  # other nodes, or a folder moved since
    if prev.get_metadata_prop("rtlsim_files_sha") != _files_sha(out, names):
        return None  # a file was changed, added or removed since
    return prev


def _files_sha(out: Path, names: list[str]) -> str:
    """Hash of every file generated for the nodes (paths and contents)."""
    h = hashlib.sha256()
    for name in names:
        for f in sorted((out / name).rglob("*")):
            if f.is_file():
                h.update(f.relative_to(out).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _generate_nodes(model: ModelWrapper, out: Path, fpgapart: str, clk_ns: float) -> None:
    """FINN's HDL generation of every node into out/<node name>/ (fresh folders)."""
    from qonnx.custom_op.registry import getCustomOp

    out.mkdir(parents=True, exist_ok=True)
    for node in model.graph.node:
        inst = getCustomOp(node)
        node_dir = out / node.name
        if node_dir.exists():
            shutil.rmtree(node_dir)
        node_dir.mkdir()
        inst.set_nodeattr("code_gen_dir_ipgen", str(node_dir))
        try:
            # what PrepareIP's _codegen_single_node does for a node without code (a VVAU_rtl
            # off Versal: hw_models.finn_ops.vvau's, with the behavioural multipliers forced)
            inst.code_generation_ipgen(model, fpgapart, clk_ns)
        except Exception as exc:  # FINN raises plain exceptions for out-of-range parameters
            raise HardwareError(
                f"HDL generation failed for node {node.name} ({node.op_type}): {exc}"
            ) from exc
        log.debug("generated HDL for %s (%s) in %s", node.name, node.op_type, node_dir)
        if node.op_type == "MVAU_rtl" and inst.get_nodeattr("SIMD") == inst.get_nodeattr("MW"):
            log.warning(
                "%s: SIMD == MW (%d); finn-rtllib's MVU can overflow its output queue under "
                "backpressure in this folding (seen with finn-plus 1.6.1); prefer MW/SIMD >= 2",
                node.name,
                inst.get_nodeattr("MW"),
            )


def generate_rtl(
    model: ModelWrapper | str | Path,
    out_dir: str | Path,
    fpgapart: str = DEFAULT_FPGA_PART,
    clk_ns: float = DEFAULT_CLK_NS,
) -> ModelWrapper:
    """Generate each node's HDL into out_dir/<node name>/ and return the annotated model copy.

    The model is the folded, specialized child model of a StreamingDataflowPartition (a DAG:
    forks by DuplicateStreams, joins by AddStreams; hw_models.finn_ops registers them). This is
    FINN's PrepareIP, node by node, with one fixed folder per node (so that regenerating the same
    model reproduces the same files and the simulator build cache hits). The result is also
    saved as out_dir/rtl_model.onnx; called again for the same model, part and clock, it returns
    that saved model without generating anything.
    """
    ensure_finn_settings()
    model = load_model(model)
    model = ModelWrapper(copy.deepcopy(model.model))
    check_rtl_graph(model)
    names = [n.name for n in model.graph.node]
    if len(set(names)) != len(names) or "" in names:
        raise HardwareError(
            f"node names must be unique and non-empty (run GiveUniqueNodeNames): {names}"
        )
    out = Path(out_dir).resolve()
    key = _source_key(model, fpgapart, clk_ns)
    done = _generated_before(out, key, names)
    if done is not None:
        log.info("rtlsim: HDL of this model is already in %s", out)
        return done
    model = _minimize(model)
    from hw_models.rtlsim.stitch import dataflow_graph

    dataflow_graph(model)  # refuses graphs the stitcher cannot wire, before any HDL is written

    _generate_nodes(model, out, fpgapart, clk_ns)
    model.set_metadata_prop("rtlsim_fpgapart", fpgapart)
    model.set_metadata_prop("rtlsim_clk_ns", str(clk_ns))
    model.set_metadata_prop("rtlsim_source_key", key)
    model.set_metadata_prop("rtlsim_files_sha", _files_sha(out, names))
    model.save(str(out / "rtl_model.onnx"))
    return model
