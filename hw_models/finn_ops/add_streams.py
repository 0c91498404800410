"""AddStreams: integer elementwise add of two equal-shape NHWC streams (a residual block's join).

FINN removed its AddStreams layer in favour of ElementwiseAdd, whose RTL backend finn-plus 1.6.1
allows only on Versal with a float operand; an integer residual add stays HLS there. This op keeps
old FINN's AddStreams attributes (NumChannels, PE, numInputVectors) with one datatype per input
(inputDataTypes), and `AddStreams_rtl` is densiflow's RTL for it (rtl/add_streams.sv). The python
execution (numpy add) is the reference semantics.
"""

from __future__ import annotations

import numpy as np
from finn.custom_op.fpgadataflow import register_custom_op
from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp
from finn.custom_op.fpgadataflow.rtl import register_custom_op as register_rtl_op
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend
from qonnx.core.datatype import BaseDataType, DataType

from hw_models.errors import HardwareError
from hw_models.finn_ops.hdl import (
    install_core,
    ipi_commands,
    rtl_file_list,
    stream_ports,
    write_wrapper,
)


def sum_datatype(a: BaseDataType, b: BaseDataType) -> BaseDataType:
    """The narrowest INTn/UINTn that holds every a + b.

    For two equal types this is old FINN's AddStreams rule (one bit more than the input); with
    mixed signedness an unsigned input of the wider width needs a second bit
    (UINT4 + INT4 spans -8..22: INT6).
    """
    for dt in (a, b):
        if not dt.is_integer() or dt.get_canonical_name() == "BIPOLAR":
            raise HardwareError(
                f"AddStreams adds two's-complement integers; {dt.get_canonical_name()} is not one "
                "(use INTn/UINTn activations before the add)"
            )
    lo, hi = int(a.min() + b.min()), int(a.max() + b.max())
    if lo >= 0:
        return DataType[f"UINT{max(hi.bit_length(), 1)}"]
    bits = max((-lo - 1).bit_length(), hi.bit_length()) + 1
    return DataType[f"INT{bits}"]


@register_custom_op
class AddStreams(HWCustomOp):
    """Elementwise add of two integer streams of NumChannels channels, PE lanes per word."""

    def get_nodeattr_types(self) -> dict:
        attrs = super().get_nodeattr_types()
        attrs.update(
            {
                "NumChannels": ("i", True, 0),
                "PE": ("i", True, 0),
                # FINN DataTypes of the two inputs; the output type follows (sum_datatype)
                "inputDataTypes": ("strings", True, [""]),
                # all but the channel axis, e.g. [1, 4, 4] for a 4x4 NHWC map, batch 1
                "numInputVectors": ("ints", False, [1]),
                "inFIFODepths": ("ints", False, [2, 2]),
            }
        )
        return attrs

    def _folds(self) -> int:
        ch, pe = self.get_nodeattr("NumChannels"), self.get_nodeattr("PE")
        if pe < 1 or ch % pe:
            raise HardwareError(
                f"{self.onnx_node.name}: PE={pe} does not divide NumChannels={ch}; choose a "
                "divisor of the channel count"
            )
        return ch // pe

    def get_normal_input_shape(self, ind: int = 0) -> tuple[int, ...]:
        return (*self.get_nodeattr("numInputVectors"), self.get_nodeattr("NumChannels"))

    def get_folded_input_shape(self, ind: int = 0) -> tuple[int, ...]:
        vecs = self.get_nodeattr("numInputVectors")
        return (*vecs, self._folds(), self.get_nodeattr("PE"))

    def get_normal_output_shape(self, ind: int = 0) -> tuple[int, ...]:
        return self.get_normal_input_shape()

    def get_folded_output_shape(self, ind: int = 0) -> tuple[int, ...]:
        return self.get_folded_input_shape()

    def get_input_datatype(self, ind: int = 0) -> BaseDataType:
        names = self.get_nodeattr("inputDataTypes")
        if len(names) != 2:
            raise HardwareError(
                f"{self.onnx_node.name}: inputDataTypes={names}; AddStreams needs two, one per "
                "input"
            )
        return DataType[names[ind]]

    def get_output_datatype(self, ind: int = 0) -> BaseDataType:
        return sum_datatype(self.get_input_datatype(0), self.get_input_datatype(1))

    def get_instream_width(self, ind: int = 0) -> int:
        return self.get_nodeattr("PE") * self.get_input_datatype(ind).bitwidth()

    def get_outstream_width(self, ind: int = 0) -> int:
        return self.get_nodeattr("PE") * self.get_output_datatype().bitwidth()

    def infer_node_datatype(self, model) -> None:
        names = [model.get_tensor_datatype(t).get_canonical_name() for t in self.onnx_node.input]
        self.set_nodeattr("inputDataTypes", names)
        model.set_tensor_datatype(self.onnx_node.output[0], self.get_output_datatype())

    def verify_node(self) -> list[str]:
        if len(self.onnx_node.input) != 2:
            raise HardwareError(
                f"{self.onnx_node.name}: AddStreams has {len(self.onnx_node.input)} inputs, needs 2"
            )
        self._folds()
        self.get_output_datatype()
        return []

    def get_exp_cycles(self) -> int:
        """Words per frame: the RTL takes one word pair per cycle when both inputs are valid."""
        return int(np.prod(self.get_folded_output_shape()[:-1]))

    def execute_node(self, context, graph) -> None:  # noqa: ARG002
        """numpy add of the two inputs (exact in float32 for sums of up to 24 bits)."""
        node = self.onnx_node
        a, b = context[node.input[0]], context[node.input[1]]
        shape = self.get_normal_input_shape()
        if a.shape != shape or b.shape != shape:
            raise HardwareError(
                f"{node.name}: inputs of shapes {a.shape} and {b.shape}, expected {shape} each"
            )
        out = a.astype(np.int64) + b.astype(np.int64)
        context[node.output[0]] = out.astype(np.float32)


@register_rtl_op
class AddStreams_rtl(AddStreams, RTLBackend):  # noqa: N801 - FINN's naming
    """AddStreams with densiflow's RTL (rtl/add_streams.sv)."""

    def get_nodeattr_types(self) -> dict:
        attrs = AddStreams.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def generate_hdl(self, model, fpgapart: str, clk: float) -> None:  # noqa: ARG002
        self.verify_node()
        gen = self.get_nodeattr("code_gen_dir_ipgen")
        top = self.get_verilog_top_module_name()
        self.set_nodeattr("gen_top_module", top)
        core = install_core("add_streams", gen, top)
        a, b, o = (self.get_input_datatype(0), self.get_input_datatype(1),
                   self.get_output_datatype())
        wa, wb = self.get_instream_width_padded(0), self.get_instream_width_padded(1)
        wo = self.get_outstream_width_padded()
        ports = [*stream_ports("in0_V", wa, True), *stream_ports("in1_V", wb, True),
                 *stream_ports("out0_V", wo, False)]
        params = {
            "PE": self.get_nodeattr("PE"),
            "A_BITS": a.bitwidth(), "A_SIGNED": int(a.signed()),
            "B_BITS": b.bitwidth(), "B_SIGNED": int(b.signed()),
            "O_BITS": o.bitwidth(), "A_WIDTH": wa, "B_WIDTH": wb, "O_WIDTH": wo,
        }
        body = [
            f"\t{core} #(" + ", ".join(f".{k}({v})" for k, v in params.items()) + ") core (",
            "\t\t.clk(ap_clk), .rst_n(ap_rst_n),",
            "\t\t.a_tdata(in0_V_TDATA), .a_tvalid(in0_V_TVALID), .a_tready(in0_V_TREADY),",
            "\t\t.b_tdata(in1_V_TDATA), .b_tvalid(in1_V_TVALID), .b_tready(in1_V_TREADY),",
            "\t\t.m_tdata(out0_V_TDATA), .m_tvalid(out0_V_TVALID), .m_tready(out0_V_TREADY)",
            "\t);",
        ]
        write_wrapper(gen, top, ports, body)
        self.set_nodeattr("ipgen_path", gen)
        self.set_nodeattr("ip_path", gen)

    def get_rtl_file_list(self, abspath: bool = False) -> list[str]:
        return rtl_file_list(self, "add_streams", abspath)

    def code_generation_ipi(self) -> list[str]:
        return ipi_commands(self)

    def execute_node(self, context, graph) -> None:
        """numpy add (AddStreams); "rtlsim" goes to FINN's RTL backend."""
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            AddStreams.execute_node(self, context, graph)

    def lut_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """LUTs: one per sum bit (the carry chain's propagate LUTs), PE * O_BITS, plus 2 for the
        handshake. Yosys (synth_xilinx, xc7): 9, 21, 21 against 7, 22, 20 for
        (PE, O_BITS) = (1, 5), (4, 5), (2, 9)."""
        return self.get_nodeattr("PE") * self.get_output_datatype().bitwidth() + 2

    def bram_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No memory: one output register."""
        return 0

    def dsp_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """Adders go to LUTs and carry chains, not DSPs."""
        return 0
