"""Top-level Verilog for a dataflow graph of generated FINN RTL nodes.

Every stream is an edge (`Edge`): a tensor from its producer's out{k}_V to its consumer's in{k}_V
(k = the tensor's index in the node's outputs / inputs), or from a graph input to a node, or from
a node to a graph output. Edges are numbered graph inputs first, then each node's outputs in
topological order, so in a linear chain edge 0 is the input and edge i+1 node i's output. The
top has in{k}_V per graph input and out{k}_V per graph output, and exports every edge's TVALID and
TREADY (dbg_vld / dbg_rdy) so that the harness can say where a stalled stream stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.errors import HardwareError
from hw_models.rtlsim.sources import NodeSources, custom_op

TOP_MODULE = "rtlsim_top"

# Inputs that hold a node's parameters (weights, thresholds), never streams of the graph.
PARAM_INPUTS = {"MVAU": 1, "VVAU": 1, "Thresholding": 1}  # by FINN op type, either backend


@dataclass(frozen=True)
class Stream:
    """One AXI stream of a node: padded (bus) and unpadded widths, words per frame, elements per
    word."""

    width: int
    bits: int
    words: int
    elems: int


@dataclass(frozen=True)
class NodeInfo:
    """Stream interface facts of one node (JSON-able); the flat fields are stream 0's."""

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
    ins: tuple[Stream, ...] = ()  # every input stream in{k}_V
    outs: tuple[Stream, ...] = ()  # every output stream out{k}_V

    @classmethod
    def from_json(cls, data: dict) -> NodeInfo:
        """The NodeInfo of its asdict() form."""
        return cls(**{**data, "ins": tuple(Stream(**s) for s in data.get("ins", ())),
                      "outs": tuple(Stream(**s) for s in data.get("outs", ()))})


@dataclass(frozen=True)
class Edge:
    """One stream of the graph; src/dst -1 is the top's in{src_port}_V / out{dst_port}_V."""

    tensor: str
    src: int  # producer node index (-1: graph input src_port)
    src_port: int
    dst: int  # consumer node index (-1: graph output dst_port)
    dst_port: int
    width: int
    bits: int
    words: int
    elems: int

    @classmethod
    def of(cls, tensor: str, src: int, src_port: int, dst: int, dst_port: int,
           s: Stream) -> Edge:
        return cls(tensor, src, src_port, dst, dst_port, s.width, s.bits, s.words, s.elems)


@dataclass(frozen=True)
class DataflowGraph:
    """The nodes of a dataflow model in topological order, their facts and the edges."""

    nodes: list
    infos: list[NodeInfo]
    edges: list[Edge]


def stream_inputs(node) -> list[str]:
    """The input tensors of a node that are streams (in{k}_V for the k-th), not parameters."""
    base = node.op_type.removesuffix("_rtl").removesuffix("_hls")
    return list(node.input)[: PARAM_INPUTS.get(base, len(node.input))]


def _topological(model: ModelWrapper) -> list:
    """The model's nodes in topological order (stable); HardwareError for a cycle."""
    nodes = list(model.graph.node)
    made = {t for n in nodes for t in n.output}
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    order, left = [], list(nodes)
    while left:
        nxt = [n for n in left if all(t in ready or t not in made for t in n.input)]
        if not nxt:
            raise HardwareError(
                "the dataflow graph has a cycle through " + ", ".join(n.name for n in left))
        for n in nxt:
            ready.update(n.output)
        order += nxt
        left = [n for n in left if n not in nxt]
    return order


def dataflow_graph(model: ModelWrapper) -> DataflowGraph:
    """Nodes, facts and edges of a dataflow model; HardwareError naming the node for any stream
    that is not one producer to one consumer (fork a tensor with DuplicateStreams)."""
    nodes = _topological(model)
    if not nodes:
        raise HardwareError("the dataflow model has no nodes")
    infos = [node_info(n) for n in nodes]
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name: k for k, o in enumerate(model.graph.output)}
    consumers: dict[str, list[tuple[int, int]]] = {}
    for i, n in enumerate(nodes):
        for k, t in enumerate(stream_inputs(n)):
            if t in inits:
                raise HardwareError(f"node {n.name} ({n.op_type}): its stream input {k} ({t}) "
                                    "is a constant (initializer), not a stream")
            consumers.setdefault(t, []).append((i, k))
    edges: list[Edge] = []

    def sink(tensor: str, producer: str) -> tuple[int, int]:
        users = consumers.pop(tensor, [])
        if len(users) + (tensor in outputs) != 1:
            names = [nodes[i].name for i, _ in users] + ["the graph output"] * (tensor in outputs)
            raise HardwareError(
                f"tensor {tensor} of {producer} feeds {len(names)} consumers "
                f"({', '.join(names) or 'none'}): a stream has exactly one consumer; fork it "
                "with DuplicateStreams (FINN's InferDuplicateStreamsLayer) or remove the unused "
                "output"
            )
        return users[0] if users else (-1, outputs[tensor])

    for k, inp in enumerate(model.graph.input):
        dst, port = sink(inp.name, "the graph input")
        if dst < 0:
            raise HardwareError(f"graph input {inp.name} is also a graph output (no node between)")
        edges.append(Edge.of(inp.name, -1, k, dst, port, infos[dst].ins[port]))
    for i, n in enumerate(nodes):
        for k, t in enumerate(n.output):
            dst, port = sink(t, f"node {n.name} ({n.op_type})")
            edges.append(Edge.of(t, i, k, dst, port, infos[i].outs[k]))
    if consumers:
        t, users = next(iter(consumers.items()))
        raise HardwareError(f"node {nodes[users[0][0]].name} reads tensor {t}, which neither a "
                            "node nor the graph input produces")
    graph = DataflowGraph(nodes, infos, edges)
    check_links(infos, edges)
    return graph


def chain_edges(infos: list[NodeInfo]) -> list[Edge]:
    """The edges of nodes in a linear chain (node i's out0_V to node i+1's in0_V); the first
    node's inputs and the last node's outputs are the top's streams (one node: all of them)."""
    first, last = infos[0], infos[-1]
    edges = [Edge.of(f"in{k}", -1, k, 0, k, s) for k, s in enumerate(first.ins)]
    for i, info in enumerate(infos[:-1]):
        if len(info.outs) != 1 or len(infos[i + 1].ins) != 1:
            raise HardwareError(f"node {info.name} or {infos[i + 1].name} has several streams: "
                                "build the graph's edges with dataflow_graph")
        edges.append(Edge.of(f"e{i}", i, 0, i + 1, 0, info.outs[0]))
    n = len(infos) - 1
    edges += [Edge.of(f"out{k}", n, k, -1, k, s) for k, s in enumerate(last.outs)]
    return edges


def chain_nodes(model: ModelWrapper) -> list:
    """The nodes of a linear chain in stream order; HardwareError for any other graph (whose
    nodes and edges dataflow_graph gives)."""
    graph = dataflow_graph(model)
    shape = [(e.src, e.src_port, e.dst, e.dst_port) for e in graph.edges]
    n = len(graph.nodes)
    if shape != [(i - 1, 0, i if i < n else -1, 0) for i in range(n + 1)]:
        raise HardwareError("the model is not one linear chain from its input to its output "
                            "(a graph: use hw_models.rtlsim.stitch.dataflow_graph)")
    return graph.nodes


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _stream(inst, direction: str, k: int) -> Stream:
    folded = getattr(inst, f"get_folded_{direction}put_shape")(k)
    return Stream(width=int(getattr(inst, f"get_{direction}stream_width_padded")(k)),
                  bits=int(getattr(inst, f"get_{direction}stream_width")(k)),
                  words=_prod(folded[:-1]), elems=int(folded[-1]))


def node_info(node) -> NodeInfo:
    """Stream widths, words and elements per frame of every stream of one node."""
    inst = custom_op(node)
    ins = tuple(_stream(inst, "in", k) for k in range(len(stream_inputs(node))))
    outs = tuple(_stream(inst, "out", k) for k in range(len(node.output)))
    return NodeInfo(
        name=node.name, op_type=node.op_type,
        in_width=ins[0].width, out_width=outs[0].width, in_bits=ins[0].bits,
        out_bits=outs[0].bits, in_words=ins[0].words, out_words=outs[0].words,
        in_elems=ins[0].elems, out_elems=outs[0].elems,
        exp_cycles=int(inst.get_exp_cycles()), ins=ins, outs=outs,
    )


def check_links(infos: list[NodeInfo], edges: list[Edge] | None = None) -> None:
    """Raise HardwareError naming both nodes where a producer's stream does not fit its consumer
    (edges default: a linear chain)."""
    for e in chain_edges(infos) if edges is None else edges:
        if e.src < 0 or e.dst < 0:
            continue
        a, b = infos[e.src], infos[e.dst]
        pa, pb = f"out{e.src_port}_V", f"in{e.dst_port}_V"
        sa, sb = a.outs[e.src_port], b.ins[e.dst_port]
        if sa.width != sb.width or sa.bits != sb.bits:
            raise HardwareError(
                f"stream width mismatch between {a.name} ({a.op_type}) and {b.name} ({b.op_type}): "
                f"{a.name} writes {sa.bits}-bit words on {pa} ({sa.width} bits on the bus), "
                f"{b.name} reads {sb.bits}-bit words on {pb} ({sb.width} bits); insert a "
                "StreamingDataWidthConverter (FINN's InsertDWC) or fix the folding"
            )
        if sa.words != sb.words or sa.elems != sb.elems:
            raise HardwareError(
                f"stream shape mismatch between {a.name} ({a.op_type}) and {b.name} ({b.op_type}): "
                f"{a.name} writes {sa.words} words of {sa.elems} elements per frame on {pa}, "
                f"{b.name} reads {sb.words} words of {sb.elems} on {pb}"
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


def top_streams(edges: list[Edge]) -> tuple[list[int], list[int]]:
    """Edge indices of the top's in{k}_V and out{k}_V streams, in k order."""
    ins = sorted((e.src_port, j) for j, e in enumerate(edges) if e.src < 0)
    outs = sorted((e.dst_port, j) for j, e in enumerate(edges) if e.dst < 0)
    return [j for _, j in ins], [j for _, j in outs]


def _header(edges: list[Edge], n_gauges: int) -> list[str]:
    """Port list of the top and its edge wires."""
    n = len(edges) - 1
    ins, outs = top_streams(edges)
    ports = ["\tinput  logic ap_clk,", "\tinput  logic ap_rst_n,"]
    assigns = []
    for k, j in enumerate(ins):
        ports += [f"\tinput  logic [{edges[j].width - 1}:0] in{k}_V_TDATA,",
                  f"\tinput  logic in{k}_V_TVALID,", f"\toutput logic in{k}_V_TREADY,"]
        assigns += [f"\tassign e{j}_tdata = in{k}_V_TDATA;",
                    f"\tassign e{j}_tvalid = in{k}_V_TVALID;",
                    f"\tassign in{k}_V_TREADY = e{j}_tready;"]
    for k, j in enumerate(outs):
        ports += [f"\toutput logic [{edges[j].width - 1}:0] out{k}_V_TDATA,",
                  f"\toutput logic out{k}_V_TVALID,", f"\tinput  logic out{k}_V_TREADY,"]
        assigns += [f"\tassign out{k}_V_TDATA = e{j}_tdata;",
                    f"\tassign out{k}_V_TVALID = e{j}_tvalid;",
                    f"\tassign e{j}_tready = out{k}_V_TREADY;"]
    ports += [f"\toutput logic [{n}:0] dbg_vld,", f"\toutput logic [{n}:0] dbg_rdy"]
    if n_gauges:
        ports[-1] += ","
        ports += [f"\tinput  logic [{32 * n_gauges - 1}:0] fifo_limits,",
                  f"\toutput logic [{32 * n_gauges - 1}:0] fifo_maxcount"]
    out = ["// Generated by hw_models.rtlsim.stitch: dataflow graph of FINN RTL nodes.",
           f"module {TOP_MODULE} (", *ports, ");"]
    for j, e in enumerate(edges):
        out.append(f"\tlogic [{e.width - 1}:0] e{j}_tdata; logic e{j}_tvalid; logic e{j}_tready;"
                   f"  // {e.tensor}")
    return out + assigns + [
        "\tassign dbg_vld = {" + ", ".join(f"e{j}_tvalid" for j in reversed(range(n + 1))) + "};",
        "\tassign dbg_rdy = {" + ", ".join(f"e{j}_tready" for j in reversed(range(n + 1))) + "};",
        "",
    ]


def node_edges(edges: list[Edge], i: int) -> tuple[list[int], list[int]]:
    """Edge indices of node i's in{k}_V and out{k}_V streams, in k order."""
    ins = sorted((e.dst_port, j) for j, e in enumerate(edges) if e.dst == i)
    outs = sorted((e.src_port, j) for j, e in enumerate(edges) if e.src == i)
    return [j for _, j in ins], [j for _, j in outs]


def _streams_conn(edges: list[Edge], i: int) -> dict[str, str]:
    ins, outs = node_edges(edges, i)
    conn = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n"}
    for k, j in enumerate(ins):
        conn.update(_stream_conn(f"in{k}_V", j))
    for k, j in enumerate(outs):
        conn.update(_stream_conn(f"out{k}_V", j))
    return conn


def _gauge(info: NodeInfo, conn: dict[str, str], k: int) -> str:
    """A depth-limited gauge in place of a FIFO node (the k-th FIFO), wired to limit/maxcount k."""
    conn = {**conn, "limit": f"fifo_limits[{32 * k} +: 32]",
            "maxcount": f"fifo_maxcount[{32 * k} +: 32]"}
    ports = {p: "" for p in conn}
    return _instance(GAUGE_MODULE, info.name, ports, conn, {"WIDTH": str(info.in_width)})


def _node(i: int, info: NodeInfo, src: NodeSources, prt: dict[str, str],
          sprt: dict[str, str] | None, conn: dict[str, str], data_dir: str) -> list[str]:
    """Instance of node i (and of its weight streamer) on its edges."""
    node_data = f"{data_dir}/{info.name}"
    params: dict[str, str] = {}
    out = []
    if src.weight_streamer is not None:
        assert sprt is not None
        if "in1_V_TDATA" not in prt:
            raise HardwareError(f"node {info.name}: its wrapper has no in1_V weight stream")
        out.append(f"\tlogic [{_in1_width(info.name, src)}-1:0] w{i}_tdata;")
        out.append(f"\tlogic w{i}_tvalid; logic w{i}_tready;")
        wconn = {"ap_clk": "ap_clk", "ap_rst_n": "ap_rst_n", "m_axis_0_tdata": f"w{i}_tdata",
                 "m_axis_0_tvalid": f"w{i}_tvalid", "m_axis_0_tready": f"w{i}_tready"}
        out.append(_instance(src.weight_streamer, f"{info.name}_wstrm", sprt, wconn,
                             {"INIT_FILE": f'"{node_data}/memblock.dat"'}))
        conn = {**conn, "in1_V_TDATA": f"w{i}_tdata", "in1_V_TVALID": f"w{i}_tvalid",
                "in1_V_TREADY": f"w{i}_tready"}
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
    edges: list[Edge] | None = None,
) -> str:
    """SystemVerilog of the graph's top module; `data_dir` is where memory init files lie.

    edges: the graph's streams (dataflow_graph(model).edges); default a linear chain
    (chain_edges). A node without sources (None) must be a StreamingFIFO: it becomes a
    depth-limited gauge (fifo_gauge_limit.sv), its capacity a run-time input (fifo_limits, 32
    bits per gauge in node order) and its highest occupancy an output (fifo_maxcount).
    """
    edges = chain_edges(infos) if edges is None else edges
    n_gauges = sum(src is None for src in sources)
    out = _header(edges, n_gauges)
    k = 0
    for i, (info, src, prt, sprt) in enumerate(zip(infos, sources, ports, streamer_ports)):
        out.append(f"\t// node {i}: {info.name} ({info.op_type})")
        conn = _streams_conn(edges, i)
        if src is None:
            if not info.op_type.startswith("StreamingFIFO"):
                raise HardwareError(f"node {info.name} ({info.op_type}) cannot be a FIFO gauge")
            out.append(_gauge(info, conn, k))
            k += 1
        else:
            assert prt is not None
            out += _node(i, info, src, prt, sprt, conn, data_dir)
    out.append(f"endmodule : {TOP_MODULE}\n")
    return "\n".join(out)


def _in1_width(name: str, src: NodeSources) -> str:
    """Weight stream width of an MVAU/VVAU, from its weight streamer wrapper (WIDTH parameter)."""
    wrapper = next(f for f in src.generated if f.name == f"{name}_memstream_wrapper.v")
    m = re.search(r"parameter\s+WIDTH\s*=\s*(\d+)", wrapper.read_text())
    if not m:
        raise HardwareError(f"node {name}: cannot read WIDTH from {wrapper}")
    return str((int(m.group(1)) + 7) // 8 * 8)
