"""DuplicateStreams_rtl: densiflow's RTL for FINN's DuplicateStreams (the fork of a residual block).

FINN's `InferDuplicateStreamsLayer` inserts a `DuplicateStreams` node for every tensor with two or
more consumers; finn-plus 1.6.1 has only an HLS backend for it. This backend is
`rtl/duplicate_streams.sv`: one word register and one pending bit per output, one word per cycle.
"""

from __future__ import annotations

from finn.custom_op.fpgadataflow.duplicatestreams import DuplicateStreams
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


@register_custom_op
class DuplicateStreams_rtl(DuplicateStreams, RTLBackend):  # noqa: N801 - FINN's naming
    """FINN's DuplicateStreams with densiflow's RTL (rtl/duplicate_streams.sv)."""

    def get_nodeattr_types(self) -> dict:
        attrs = DuplicateStreams.get_nodeattr_types(self)
        attrs.update(RTLBackend.get_nodeattr_types(self))
        return attrs

    def verify_node(self) -> list[str]:
        n = self.get_num_output_streams()
        if n < 2 or n != len(self.onnx_node.output):
            raise HardwareError(
                f"{self.onnx_node.name}: NumOutputStreams={n} with {len(self.onnx_node.output)} "
                "outputs; a DuplicateStreams needs NumOutputStreams == outputs >= 2"
            )
        return []

    def generate_hdl(self, model, fpgapart: str, clk: float) -> None:  # noqa: ARG002
        self.verify_node()
        gen = self.get_nodeattr("code_gen_dir_ipgen")
        top = self.get_verilog_top_module_name()
        self.set_nodeattr("gen_top_module", top)
        core = install_core("duplicate_streams", gen, top)
        n, w = self.get_num_output_streams(), self.get_instream_width_padded()
        ports = stream_ports("in0_V", w, True)
        for i in range(n):
            ports += stream_ports(f"out{i}_V", self.get_outstream_width_padded(i), False)
        body = [
            f"\twire [{w - 1}:0] data;",
            f"\twire [{n - 1}:0] vld;",
            f"\twire [{n - 1}:0] rdy;",
            f"\t{core} #(.N({n}), .WIDTH({w})) core (",
            "\t\t.clk(ap_clk), .rst_n(ap_rst_n),",
            "\t\t.s_tdata(in0_V_TDATA), .s_tvalid(in0_V_TVALID), .s_tready(in0_V_TREADY),",
            "\t\t.m_tdata(data), .m_tvalid(vld), .m_tready(rdy)",
            "\t);",
        ]
        for i in range(n):
            body += [
                f"\tassign out{i}_V_TDATA = data;",
                f"\tassign out{i}_V_TVALID = vld[{i}];",
                f"\tassign rdy[{i}] = out{i}_V_TREADY;",
            ]
        write_wrapper(gen, top, ports, body)
        self.set_nodeattr("ipgen_path", gen)
        self.set_nodeattr("ip_path", gen)

    def get_rtl_file_list(self, abspath: bool = False) -> list[str]:
        return rtl_file_list(self, "duplicate_streams", abspath)

    def code_generation_ipi(self) -> list[str]:
        return ipi_commands(self)

    def execute_node(self, context, graph) -> None:
        """FINN's python execution (copy to every output); "rtlsim" goes to FINN's RTL backend."""
        if self.get_nodeattr("exec_mode") == "rtlsim":
            RTLBackend.execute_node(self, context, graph)
        else:
            DuplicateStreams.execute_node(self, context, graph)

    # get_exp_cycles: FINN's words per frame (NumChannels/PE * prod(numInputVectors)) is exact:
    # the RTL takes one input word per cycle while every consumer is ready.

    def lut_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """LUTs: two per output stream (its pending bit's next state and its term of s_tready).

        The word register is WIDTH flip-flops with a clock enable and costs no LUT. Yosys
        (synth_xilinx, xc7) gives exactly 2N for N = 2, 3, 4 at 8 to 32 bits.
        """
        return 2 * self.get_num_output_streams()

    def bram_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No memory: one word register."""
        return 0

    def dsp_estimation(self, fpgapart: str) -> int:  # noqa: ARG002
        """No arithmetic."""
        return 0
