"""Pool_rtl: densiflow's RTL for FINN's Pool (max pooling and the accumulating average pools).

FINN's `InferPool` turns a MaxPool / QuantAvgPool2d into a depthwise Im2Col (then a
ConvolutionInputGenerator, `depthwise=1`) followed by `Pool`; finn-plus 1.6.1 has only an HLS
backend for it. This backend is `rtl/pool.sv`: it reads the sliding-window stream in the depthwise
layout (OFM_H, OFM_W, Channels/PE, K, PE), one word per cycle, and writes one word of PE channels
per window. Functions: "MaxPool" (the window's maximum), "QuantAvgPool" (the window's sum shifted
right by `Size` bits, as FINN's python execution and finn-hlslib's QuantAvgPoolFunction do) and
"AccPool" (the sum). "AvgPool" (a true mean, a division) is refused.
"""

from __future__ import annotations

import math

import numpy as np
from finn.custom_op.fpgadataflow.pool import Pool
from finn.custom_op.fpgadataflow.rtl import register_custom_op
from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

from hw_models.errors import HardwareError
from hw_models.finn_ops.hdl import (
    install_core,
    ipi_commands,
    rtl_file_list,
    stream_ports,
    write_wrapper,
)

CORE = "pool"
FUNCTIONS = ("MaxPool", "QuantAvgPool", "AccPool")


@register_custom_op
class Pool_rtl(Pool, RTLBackend):  # noqa: N801 - FINN's naming
    """FINN's Pool with densiflow's RTL (rtl/pool.sv)."""

    def get_nodeattr_types(self) -> dict:
        attrs = Pool.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def window(self) -> int:
        """Elements per pooling window (the product of KernelSize)."""
        return int(np.prod(self.get_nodeattr("KernelSize")))

    def accumulator_bits(self) -> int:
        """Width of the running value per lane: the input's for MaxPool, else the exact sum's."""
        if self.get_nodeattr("Function") == "MaxPool":
            return self.get_input_datatype().bitwidth()
        return self._get_accumulator_datatype().bitwidth()

    def shift(self) -> int:
        """Right shift of the sum: `Size` for QuantAvgPool (InferPool's QuantAvgPool2d shifts)."""
        quant = self.get_nodeattr("Function") == "QuantAvgPool"
        return int(self.get_nodeattr("Size")) if quant else 0

    def check_supported(self) -> None:
        """HardwareError naming the node when the RTL cannot implement its attributes."""
        name, fxn = self.onnx_node.name, self.get_nodeattr("Function")
        if fxn not in FUNCTIONS:
            raise HardwareError(
                f"{name}: Pool Function {fxn!r} has no RTL in densiflow (a mean needs a "
                f"division); use one of {', '.join(FUNCTIONS)} (QuantAvgPool: sum and shift)"
            )
        idt = self.get_input_datatype()
        if not idt.is_integer() or not self.get_output_datatype().is_integer():
            raise HardwareError(f"{name}: Pool_rtl needs integer datatypes, got {idt.name}")
        if self.get_nodeattr("Channels") % self.get_nodeattr("PE"):
            raise HardwareError(
                f"{name}: PE={self.get_nodeattr('PE')} does not divide "
                f"Channels={self.get_nodeattr('Channels')}"
            )

    def generate_hdl(self, model, fpgapart: str, clk: float) -> None:  # noqa: ARG002
        self.check_supported()
        gen = self.get_nodeattr("code_gen_dir_ipgen")
        top = self.get_verilog_top_module_name()
        self.set_nodeattr("gen_top_module", top)
        core = install_core(CORE, gen, top)
        win, wout = self.get_instream_width_padded(), self.get_outstream_width_padded()
        params = {
            "PE": self.get_nodeattr("PE"),
            "K": self.window(),
            "IN_BITS": self.get_input_datatype().bitwidth(),
            "OUT_BITS": self.get_output_datatype().bitwidth(),
            "ACC_BITS": self.accumulator_bits(),
            "SIGNED": int(self.get_input_datatype().signed()),
            "IS_MAX": int(self.get_nodeattr("Function") == "MaxPool"),
            "SHIFT": self.shift(),
            "IN_STREAM_BITS": win,
            "OUT_STREAM_BITS": wout,
        }
        ports = stream_ports("in0_V", win, True) + stream_ports("out0_V", wout, False)
        write_wrapper(gen, top, ports, core_instance(core, params))
        self.set_nodeattr("ipgen_path", gen)
        self.set_nodeattr("ip_path", gen)

    def get_rtl_file_list(self, abspath: bool = False) -> list[str]:
        return rtl_file_list(self, CORE, abspath)

    def code_generation_ipi(self) -> list[str]:
        return ipi_commands(self)

    def execute_node(self, context, graph) -> None:
        """FINN's python execution of Pool; "rtlsim" goes to FINN's RTL backend."""
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            Pool.execute_node(self, context, graph)

    # get_exp_cycles: FINN's Pool figure, Channels*K/PE * OFM_H*OFM_W * BatchSize (the input words
    # per frame), is exact: the RTL takes one input word per cycle.

    def lut_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """LUTs: per lane and bit of the running value about 2 (an ACC_BITS adder or IN_BITS
        comparator, 1 LUT/bit on the carry chain, and the select between the first word of a
        window and the new value, 1 LUT/bit; the shift is wiring), plus about 2*ceil(log2 K) + 2
        for the window counter and the handshake. Yosys (xc7) on 2-lane INT4 pools: 24 LUT
        (MaxPool, estimate 22), 31 (QuantAvgPool, 30).
        """
        pe, acc = self.get_nodeattr("PE"), self.accumulator_bits()
        counter = 2 * max(1, math.ceil(math.log2(self.window()))) + 2
        return 2 * pe * acc + counter

    def bram_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No memory: one running value and one output word per lane, in flip-flops."""
        return 0

    def dsp_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No multiplication."""
        return 0


def core_instance(core: str, params: dict[str, int]) -> list[str]:
    """Wrapper body: `core` with `params` between the wrapper's in0_V and out0_V."""
    par = ", ".join(f".{k}({v})" for k, v in params.items())
    return [
        f"\t{core} #({par}) core (",
        "\t\t.clk(ap_clk), .rst_n(ap_rst_n),",
        "\t\t.s_tdata(in0_V_TDATA), .s_tvalid(in0_V_TVALID), .s_tready(in0_V_TREADY),",
        "\t\t.m_tdata(out0_V_TDATA), .m_tvalid(out0_V_TVALID), .m_tready(out0_V_TREADY)",
        "\t);",
    ]
