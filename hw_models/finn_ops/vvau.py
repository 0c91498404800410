"""The RTL depthwise unit (FINN's VVAU_rtl) on every part, not only on Versal.

FINN 1.6.1 specialises a VVAU to VVAU_rtl only on Versal (`_vvu_rtl_possible` in
finn/transformation/fpgadataflow/specialize_layers.py) because finn-rtllib's only VVU compute core,
`mvu/mvu_vvu_8sx9_dsp58.sv`, instantiates DSP58 slices. Elsewhere (pynq-z1's xc7z020, zcu104's
xczu7ev) it becomes VVAU_hls, which has no RTL without Vitis HLS. The same core also holds a
behavioural model of its DSP chain (three 9x8 products summed per slot, exact integers): Verilator
always takes it (`ifdef VERILATOR`), and the `FORCE_BEHAVIORAL` parameter selects it for synthesis.
So densiflow:

- specialises a VVAU to VVAU_rtl wherever its widths fit FINN's VVU rules (`SpecializeVvauRtl`,
  run before FINN's SpecializeLayers), whatever the part;
- registers `VVAU_rtl`, FINN's class with two part-dependent changes: the DSP58 core version on
  every part (FINN raises off Versal), and off Versal a wrapper that forces the behavioural
  multipliers, which Yosys and Vivado map to the part's own DSP48 slices or to LUTs (DSP58 does
  not exist there). On Versal it is FINN's class unchanged.
"""

from __future__ import annotations

from pathlib import Path

from finn.custom_op.fpgadataflow.rtl import register_custom_op
from finn.custom_op.fpgadataflow.rtl.vectorvectoractivation_rtl import VVAU_rtl as FinnVVAU_rtl
from finn.util.basic import is_versal
from onnx import helper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.general import GiveUniqueNodeNames

from hw_models.errors import HardwareError

DSP58_CORE = 3  # mvu_vvu_axi's VERSION of the DSP58 core, the only one with a VVU mode
_SIM_ONLY = "`ifdef FINN_SIMULATION\n\t.FORCE_BEHAVIORAL(1),\n`endif\n"


def vvu_rtl_fits(inst) -> str | None:
    """None if FINN's RTL VVU can compute this VVAU, else why not (FINN's `_vvu_rtl_possible`
    without its Versal check): standalone thresholds, signed weights of at most 8 bits,
    activations of at most 8 bits or 9-bit signed, DSP (not LUT) compute."""
    idt, wdt = inst.get_input_datatype(0), inst.get_input_datatype(1)
    if not inst.get_nodeattr("noActivation"):
        return "thresholds inside the VVAU (the RTL VVU needs them standalone)"
    if inst.get_nodeattr("resType") == "lut":
        return "resType='lut' (the RTL VVU computes in DSP slices)"
    if wdt.min() >= 0 or wdt.bitwidth() > 8:
        return f"{wdt.name} weights (the RTL VVU needs signed weights of at most 8 bits)"
    if idt.bitwidth() > 8 and not (idt.bitwidth() == 9 and idt.signed()):
        return f"{idt.name} inputs (the RTL VVU takes at most 8 bits, or 9 bits signed)"
    return None


class SpecializeVvauRtl(Transformation):
    """Every unspecialised VVAU whose widths fit FINN's RTL VVU -> VVAU_rtl, on any part.

    The others (e.g. unsigned weights, or preferred_impl_style='hls') are left to FINN's
    SpecializeLayers. Attributes and node metadata (densiflow's QONNX origin) are kept.
    """

    def __init__(self, fpgapart: str):
        super().__init__()
        self.fpgapart = fpgapart

    def apply(self, model):
        changed = False
        for index, node in enumerate(list(model.graph.node)):
            if node.op_type != "VVAU" or node.domain != "finn.custom_op.fpgadataflow":
                continue
            inst = getCustomOp(node)
            if inst.get_nodeattr("preferred_impl_style") == "hls" or vvu_rtl_fits(inst):
                continue
            new = helper.make_node("VVAU_rtl", node.input, node.output, name=node.name,
                                   domain="finn.custom_op.fpgadataflow.rtl")
            new.attribute.extend(a for a in node.attribute if a.name != "preferred_impl_style")
            new.metadata_props.extend(node.metadata_props)
            model.graph.node.remove(node)
            model.graph.node.insert(index, new)
            changed = True
        if changed:
            model = model.transform(GiveUniqueNodeNames())  # as SpecializeLayers names them
        return model, changed


@register_custom_op
class VVAU_rtl(FinnVVAU_rtl):  # noqa: N801 - FINN's naming
    """FINN's VVAU_rtl; off Versal its DSP58 core runs its behavioural multipliers."""

    def _resolve_dsp_version(self, fpgapart: str) -> int:
        if is_versal(fpgapart):
            return super()._resolve_dsp_version(fpgapart)
        if self.get_nodeattr("resType") == "lut":
            raise HardwareError(f"{self.onnx_node.name}: resType='lut': FINN's RTL VVU computes "
                                "in DSP slices; set resType='dsp' (or 'auto')")
        return DSP58_CORE

    def dsp_estimation(self, fpgapart: str) -> int:
        """FINN's PE * ceil(SIMD/3) on Versal (a DSP58 sums three 8x9 products); elsewhere one
        DSP48 per product, PE * SIMD (Yosys, xc7: PE=2/3, SIMD=1..9 gave exactly that)."""
        if is_versal(fpgapart):
            return super().dsp_estimation(fpgapart)
        return self.get_nodeattr("PE") * self.get_nodeattr("SIMD")

    def generate_hdl(self, model, fpgapart: str, clk: float) -> None:
        super().generate_hdl(model, fpgapart, clk)
        if not is_versal(fpgapart):
            force_behavioural(self, fpgapart)


def force_behavioural(inst: FinnVVAU_rtl, fpgapart: str) -> None:
    """Make the generated wrapper select the core's behavioural multipliers in synthesis too
    (FINN's template does so only under `ifdef FINN_SIMULATION`)."""
    path = Path(inst.get_nodeattr("code_gen_dir_ipgen")) / (
        inst.get_nodeattr("gen_top_module") + "_wrapper.v")
    text = path.read_text()
    if text.count(_SIM_ONLY) != 1:
        raise HardwareError(f"{inst.onnx_node.name}: FINN's mvu_vvu_axi_wrapper.v changed: "
                            f"no FINN_SIMULATION FORCE_BEHAVIORAL block in {path}")
    path.write_text(text.replace(_SIM_ONLY, f"\t.FORCE_BEHAVIORAL(1),  // densiflow: no DSP58 "
                                 f"on {fpgapart}\n"))
