"""GlobalAccPool_rtl: densiflow's RTL for FINN's GlobalAccPool (global average pooling's sum).

FINN's `InferGlobalAccPoolLayer` turns a GlobalAveragePool into `GlobalAccPool` (the per-channel
sum over all pixels, in the accumulator datatype of `get_output_datatype`) followed by a Mul 1/N;
finn-plus 1.6.1 has only an HLS backend for it. This backend is `rtl/global_acc_pool.sv`: one input
word of PE channels per cycle, the running sums of the NumChannels/PE folds in a small memory, and
each fold's total sent while the frame's last pixel streams in.
"""

from __future__ import annotations

import math

import numpy as np
from finn.custom_op.fpgadataflow.globalaccpool import GlobalAccPool
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
from hw_models.finn_ops.pool import core_instance

CORE = "global_acc_pool"


@register_custom_op
class GlobalAccPool_rtl(GlobalAccPool, RTLBackend):  # noqa: N801 - FINN's naming
    """FINN's GlobalAccPool with densiflow's RTL (rtl/global_acc_pool.sv)."""

    def get_nodeattr_types(self) -> dict:
        attrs = GlobalAccPool.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def folds(self) -> int:
        """Channel folds: NumChannels / PE."""
        return self.get_nodeattr("NumChannels") // self.get_nodeattr("PE")

    def pixels(self) -> int:
        """Pixels summed per frame: the product of numInputVectors after the batch."""
        vecs = list(self.get_nodeattr("numInputVectors"))
        return int(np.prod(vecs[1:])) if len(vecs) == 3 else 1

    def check_supported(self) -> None:
        """HardwareError naming the node when the RTL cannot implement its attributes."""
        name, vecs = self.onnx_node.name, list(self.get_nodeattr("numInputVectors"))
        ch, pe = self.get_nodeattr("NumChannels"), self.get_nodeattr("PE")
        if len(vecs) != 3:
            raise HardwareError(
                f"{name}: GlobalAccPool_rtl needs numInputVectors [batch, H, W], got {vecs}"
            )
        if pe < 1 or ch % pe:
            raise HardwareError(f"{name}: PE={pe} does not divide NumChannels={ch}")
        if not self.get_input_datatype().is_integer():
            raise HardwareError(
                f"{name}: GlobalAccPool_rtl needs an integer input, got "
                f"{self.get_input_datatype().name}"
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
            "CF": self.folds(),
            "PIX": self.pixels(),
            "IN_BITS": self.get_input_datatype().bitwidth(),
            "ACC_BITS": self.get_output_datatype().bitwidth(),
            "SIGNED": int(self.get_input_datatype().signed()),
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
        """FINN's python execution of GlobalAccPool; "rtlsim" goes to FINN's RTL backend."""
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            GlobalAccPool.execute_node(self, context, graph)

    def get_exp_cycles(self) -> int:
        """Input words per frame (batch * H * W * NumChannels/PE): the RTL takes one per cycle
        and sends the sums while the last pixel streams in (FINN's HLS figure adds NumChannels/PE
        cycles for a separate output phase)."""
        return int(np.prod(self.get_folded_input_shape()[:-1]))

    def lut_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """LUTs: per lane and accumulator bit about 2 (the adder on the carry chain and the
        first-pixel select); for CF > 1 folds the sums in LUT RAM, a RAM32M (4 LUTs) per 6 bits
        and 32 folds (CF = 1 keeps them in flip-flops); about 2 per bit of the fold and pixel
        counters. Yosys (xc7): 57 LUT for PE=2, CF=4, INT8 sums (estimate 56), 57 for PE=4, CF=1
        (estimate 74).
        """
        pe, acc, cf = self.get_nodeattr("PE"), self.get_output_datatype().bitwidth(), self.folds()
        ram = 0 if cf == 1 else 4 * math.ceil(pe * acc / 6) * math.ceil(cf / 32)
        counters = 2 * sum(math.ceil(math.log2(max(n, 2))) for n in (cf, self.pixels()))
        return 2 * pe * acc + ram + counters

    def bram_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No block RAM: the fold sums are LUT RAM (CF * PE * ACC_BITS bits, small for any CNN)."""
        return 0

    def dsp_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No multiplication (the 1/N Mul after the node is not part of it)."""
        return 0
