"""Top-level Verilog for a linear chain of generated FINN RTL nodes.

Node i's out0_V feeds node i+1's in0_V. Every stream is an "edge": edge 0 is the chain input,
edge i the output of node i-1, edge N the chain output. The top exports each edge's TVALID and
TREADY (dbg_vld / dbg_rdy) so that the harness can say where a stalled stream stopped.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.errors import HardwareError
from hw_models.rtlsim.sources import NodeSources

TOP_MODULE = "rtlsim_top"


@dataclass(frozen=True)
class NodeInfo:
    """Stream interface facts of one chain node (JSON-able)."""

    name: str
    op_type: str
    in_width: int  # padded (AXI) widths
    out_width: int
    in_bits: int  # unpadded widths
    out_bits: int
    in_words: int  # stream words per frame
    out_words: int
    in_elems: int  # elements per stream word
    out_elems: int
    exp_cycles: int


def chain_nodes(model: ModelWrapper) -> list:
    """The nodes of a linear chain in stream order; HardwareError for any other graph shape."""
    nodes = list(model.graph.node)
    if not nodes:
        raise HardwareError("the dataflow model has no nodes")
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise HardwareError(
            f"only single-input single-output chains can be simulated; the model has "
            f"{len(model.graph.input)} inputs and {len(model.graph.output)} outputs"
        )
    first = model.find_consumer(model.graph.input[0].name)
    if first is None:
        raise HardwareError(f"the model input {model.graph.input[0].name} feeds no node")
    chain = [first]
    while True:
        consumers = model.find_consumers(chain[-1].output[0])
        if not consumers:
            break
        if len(consumers) > 1:
            raise HardwareError(
                f"node {chain[-1].name} feeds {len(consumers)} nodes "
                f"({', '.join(c.name for c in consumers)}): branching graphs are not supported"
            )
        nxt = consumers[0]
        if list(nxt.input).index(chain[-1].output[0]) != 0:
            raise HardwareError(f"node {nxt.name} takes {chain[-1].name}'s output on a side input")
        chain.append(nxt)
    if chain[-1].output[0] != model.graph.output[0].name or len(chain) != len(nodes):
        raise HardwareError(
            "the model is not one linear chain from its input to its output "
            f"({len(chain)} of {len(nodes)} nodes on the path)"
        )
    return chain


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def node_info(node) -> NodeInfo:
    """Stream widths, words and elements per frame of one node."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    fin = inst.get_folded_input_shape(0)
    fout = inst.get_folded_output_shape(0)
    return NodeInfo(
        name=node.name,
        op_type=node.op_type,
        in_width=int(inst.get_instream_width_padded(0)),
        out_width=int(inst.get_outstream_width_padded(0)),
        in_bits=int(inst.get_instream_width(0)),
        out_bits=int(inst.get_outstream_width(0)),
        in_words=_prod(fin[:-1]),
        out_words=_prod(fout[:-1]),
        in_elems=int(fin[-1]),
        out_elems=int(fout[-1]),
        exp_cycles=int(inst.get_exp_cycles()),
    )


def check_links(infos: list[NodeInfo]) -> None:
    """Raise HardwareError naming both nodes where a producer's stream does not fit its consumer."""
    for a, b in itertools.pairwise(infos):
        if a.out_width != b.in_width or a.out_bits != b.in_bits:
            raise HardwareError(
                f"stream width mismatch between {a.name} ({a.op_type}) and {b.name} ({b.op_type}): "
                f"{a.name} writes {a.out_bits}-bit words ({a.out_width} bits on the bus), "
                f"{b.name} reads {b.in_bits}-bit words ({b.in_width} bits); insert a "
                "StreamingDataWidthConverter (FINN's InsertDWC) or fix the folding"
            )
        if a.out_words != b.in_words or a.out_elems != b.in_elems:
            raise HardwareError(
                f"stream shape mismatch between {a.name} ({a.op_type}) and {b.name} ({b.op_type}): "
                f"{a.name} writes {a.out_words} words of {a.out_elems} elements per frame, "
                f"{b.name} reads {b.in_words} words of {b.in_elems}"
            )


# ---------------------------------------------------------------------------------------------
# Port parsing (ANSI-style module headers as FINN's templates write them)

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_ATTRS = re.compile(r"\(\*.*?\*\)", re.DOTALL)


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at text[start]."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for i in range(start, len(text)):
        c = text[i]
        if c in pairs:
            stack.append(pairs[c])
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
    raise ValueError("unbalanced brackets")


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def parse_ports(text: str, module: str) -> dict[str, str]:
    """{port name: 'input'|'output'|'inout'} of `module` declared in Verilog `text`."""
    text = _ATTRS.sub(" ", _COMMENTS.sub(" ", text))
    m = re.search(r"\bmodule\s+" + re.escape(module) + r"\b", text)
    if not m:
        raise ValueError(f"module {module} not found")
    pos = m.end()
    while text[pos].isspace():
        pos += 1
    if text[pos] == "#":
        pos = text.index("(", pos)
        pos = _balanced(text, pos)
        while text[pos].isspace():
            pos += 1
    if text[pos] != "(":
        raise ValueError(f"module {module}: no port list")
    header = text[pos + 1 : _balanced(text, pos) - 1]
    ports: dict[str, str] = {}
    direction = None
    for item in _split_top(header):
        item = item.strip()
        d = re.match(r"(input|output|inout)\b(.*)$", item, re.DOTALL)
        if d:
            direction, item = d.group(1), d.group(2)
        if direction is None:
            raise ValueError(f"module {module}: non-ANSI port list")
        item = re.sub(r"\[[^\]]*\]", " ", item)
        idents = re.findall(r"[A-Za-z_]\w*", item)
        if idents:
            ports[idents[-1]] = direction
    return ports


def find_ports(files: list[Path], module: str) -> dict[str, str]:
    """Ports of `module`, searched in the given files."""
    for f in files:
        text = f.read_text()
        if re.search(r"\bmodule\s+" + re.escape(module) + r"\b", text):
            return parse_ports(text, module)
    raise HardwareError(f"module {module} is not defined in {', '.join(map(str, files))}")


# ---------------------------------------------------------------------------------------------
# Top-level module



def _instance(
    module: str,
    inst: str,
    ports: dict[str, str],
    conn: dict[str, str],
    params: dict[str, str],
) -> str:
    """Instantiate `module`: ports in `conn` as given, clk2x on ap_clk, other inputs 0."""
    lines = []
    for port, direction in ports.items():
        if port in conn:
            expr = conn[port]
        elif port.lower() in ("ap_clk2x", "clk2x"):
            expr = "ap_clk"
        elif direction == "input":
            expr = "'0"  # AXI-lite, set-selection streams, unused side inputs
        else:
            expr = ""
        lines.append(f"\t\t.{port}({expr})")
    missing = set(conn) - set(ports)
    if missing:
        raise HardwareError(f"module {module} has no port(s) {', '.join(sorted(missing))}")
    par = ""
    if params:
        par = " #(\n" + ",\n".join(f"\t\t.{k}({v})" for k, v in params.items()) + "\n\t)"
    return f"\t{module}{par} {inst} (\n" + ",\n".join(lines) + "\n\t);\n"


def _stream_conn(prefix: str, edge: int) -> dict[str, str]:
    return {
        f"{prefix}_TDATA": f"e{edge}_tdata",
        f"{prefix}_TVALID": f"e{edge}_tvalid",
        f"{prefix}_TREADY": f"e{edge}_tready",
    }


GAUGE_MODULE = "rtlsim_fifo_gauge_limit"  # fifo_gauge_limit.sv


def _header(widths: list[int], n_gauges: int) -> list[str]:
    """Port list of the top and its edge wires."""
    n = len(widths) - 1
    ports = [
        "\tinput  logic ap_clk,",
        "\tinput  logic ap_rst_n,",
        f"\tinput  logic [{widths[0] - 1}:0] in0_V_TDATA,",
        "\tinput  logic in0_V_TVALID,",
        "\toutput logic in0_V_TREADY,",
        f"\toutput logic [{widths[n] - 1}:0] out0_V_TDATA,",
        "\toutput logic out0_V_TVALID,",
        "\tinput  logic out0_V_TREADY,",
        f"\toutput logic [{n}:0] dbg_vld,",
        f"\toutput logic [{n}:0] dbg_rdy",
    ]
    if n_gauges:
        ports[-1] += ","
        ports += [f"\tinput  logic [{32 * n_gauges - 1}:0] fifo_limits,",
                  f"\toutput logic [{32 * n_gauges - 1}:0] fifo_maxcount"]
    out = ["// Generated by hw_models.rtlsim.stitch: linear chain of FINN RTL nodes.",
           f"module {TOP_MODULE} (", *ports, ");"]
    for e, w in enumerate(widths):
        out.append(f"\tlogic [{w - 1}:0] e{e}_tdata; logic e{e}_tvalid; logic e{e}_tready;")
    return out + [
        "\tassign e0_tdata = in0_V_TDATA;",
        "\tassign e0_tvalid = in0_V_TVALID;",
        "\tassign in0_V_TREADY = e0_tready;",
        f"\tassign out0_V_TDATA = e{n}_tdata;",
        f"\tassign out0_V_TVALID = e{n}_tvalid;",
        f"\tassign e{n}_tready = out0_V_TREADY;",
        "\tassign dbg_vld = {" + ", ".join(f"e{e}_tvalid" for e in reversed(range(n + 1))) + "};",
        "\tassign dbg_rdy = {" + ", ".join(f"e{e}_tready" for e in reversed(range(n + 1))) + "};",
        "",
    ]


def _gauge(i: int, info: NodeInfo, k: int) -> str:
    """A depth-limited gauge in place of FIFO node i (the k-th FIFO), wired to limit/maxcount k."""
    conn = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n", "limit": f"fifo_limits[{32 * k} +: 32]",
            "maxcount": f"fifo_maxcount[{32 * k} +: 32]"}
    conn.update(_stream_conn("in0_V", i))
    conn.update(_stream_conn("out0_V", i + 1))
    ports = {p: "" for p in conn}
    return _instance(GAUGE_MODULE, info.name, ports, conn, {"WIDTH": str(info.in_width)})


def _node(i: int, info: NodeInfo, src: NodeSources, prt: dict[str, str],
          sprt: dict[str, str] | None, data_dir: str) -> list[str]:
    """Instance of node i (and of its weight streamer) between edges i and i+1."""
    node_data = f"{data_dir}/{info.name}"
    conn = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n"}
    conn.update(_stream_conn("in0_V", i))
    conn.update(_stream_conn("out0_V", i + 1))
    params: dict[str, str] = {}
    out = []
    if src.weight_streamer is not None:
        assert sprt is not None
        if "in1_V_TDATA" not in prt:
            raise HardwareError(f"node {info.name}: MVAU wrapper has no in1_V weight stream")
        out.append(f"\tlogic [{_in1_width(info.name, src)}-1:0] w{i}_tdata;")
        out.append(f"\tlogic w{i}_tvalid; logic w{i}_tready;")
        wconn = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n", "m_axis_0_tdata": f"w{i}_tdata",
                 "m_axis_0_tvalid": f"w{i}_tvalid", "m_axis_0_tready": f"w{i}_tready"}
        out.append(_instance(src.weight_streamer, f"{info.name}_wstrm", sprt, wconn,
                             {"INIT_FILE": f'"{node_data}/memblock.dat"'}))
        conn.update({"in1_V_TDATA": f"w{i}_tdata", "in1_V_TVALID": f"w{i}_tvalid",
                     "in1_V_TREADY": f"w{i}_tready"})
    if info.op_type == "Thresholding_rtl":
        params["THRESHOLDS_PATH"] = f'"{node_data}/{info.name}_"'
    out.append(_instance(src.top_module, info.name, prt, conn, params))
    return out


def render_top(
    infos: list[NodeInfo],
    sources: list[NodeSources | None],
    ports: list[dict[str, str] | None],
    streamer_ports: list[dict[str, str] | None],
    data_dir: str,
) -> str:
    """SystemVerilog of the chain's top module; `data_dir` is where memory init files lie.

    A node without sources (None) must be a StreamingFIFO: it becomes a depth-limited gauge
    (fifo_gauge_limit.sv), its capacity a run-time input (fifo_limits, 32 bits per gauge in
    chain order) and its highest occupancy an output (fifo_maxcount).
    """
    widths = [infos[0].in_width] + [i.out_width for i in infos]
    n_gauges = sum(src is None for src in sources)
    out = _header(widths, n_gauges)
    k = 0
    for i, (info, src, prt, sprt) in enumerate(zip(infos, sources, ports, streamer_ports)):
        out.append(f"\t// node {i}: {info.name} ({info.op_type})")
        if src is None:
            if not info.op_type.startswith("StreamingFIFO"):
                raise HardwareError(f"node {info.name} ({info.op_type}) cannot be a FIFO gauge")
            out.append(_gauge(i, info, k))
            k += 1
        else:
            assert prt is not None
            out += _node(i, info, src, prt, sprt, data_dir)
    out.append(f"endmodule : {TOP_MODULE}\n")
    return "\n".join(out)


def _in1_width(name: str, src: NodeSources) -> str:
    """Weight stream width of an MVAU, read from its weight streamer wrapper (WIDTH parameter)."""
    wrapper = next(f for f in src.generated if f.name == f"{name}_memstream_wrapper.v")
    m = re.search(r"parameter\s+WIDTH\s*=\s*(\d+)", wrapper.read_text())
    if not m:
        raise HardwareError(f"node {name}: cannot read WIDTH from {wrapper}")
    return str((int(m.group(1)) + 7) // 8 * 8)
