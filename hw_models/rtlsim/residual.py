"""Residual blocks of a dataflow graph and the depth their skip FIFOs need.

A residual block forks at a DuplicateStreams node and joins at an AddStreams node. The fork writes
each word to both paths at once and the join takes one word from each path at once, so while the
branch (the path with the convolutions) absorbs words before its first output reaches the join,
the skip path must hold every one of them: a shallower skip FIFO fills, the fork stops, the branch
starves short of its first output, and the pipeline deadlocks.

The bound (`lead`, `residual_blocks`): the skip path must hold
- the branch's lead: per node the words it takes in before its first output, in its input
  words: a sliding window (ConvolutionInputGenerator) its line buffer (FINN's
  get_buffer_depth()), an MVAU / VVAU one input vector (the SF words of its folded input; a
  VVAU's whole pixel), GlobalAccPool the whole frame, anything else its input words per output
  word (a pool's window), a FIFO none;
- plus the FIFOs of the branch upstream of its slowest node (by FINN's get_exp_cycles()): the
  fork outpaces that node, so they fill, and the skip path with them;
- plus SKIP_MARGIN.
Words are counted in the fork's output words (scaled by the fork's words per frame over the
node's input words per frame). The words the skip path's own non-FIFO stages hold are not
counted, so the bound errs deep; tests/test_rtlsim_graph.py checks it against the smallest skip
depth that keeps a simulated block at full speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from hw_models.rtlsim.sources import custom_op
from hw_models.rtlsim.stitch import DataflowGraph, dataflow_graph, node_edges

FORK_OPS = ("DuplicateStreams", "DuplicateStreams_rtl", "DuplicateStreams_hls")
JOIN_OPS = ("AddStreams", "AddStreams_rtl", "AddStreams_hls")
SKIP_MARGIN = 2  # words: the join's and the fork's output registers


@dataclass(frozen=True)
class ResidualBlock:
    """One fork/join pair, its two paths and what its skip path holds and needs (JSON-able)."""

    fork: str  # the DuplicateStreams node
    join: str  # the AddStreams node
    skip_port: int  # the fork's out{k}_V that starts the skip path
    branch_port: int  # the join's in{k}_V that ends the branch
    skip: list[str]  # nodes strictly between fork and join, in stream order
    branch: list[str]
    skip_fifos: list[str]  # StreamingFIFO nodes on the skip path
    depth: int  # their summed depth, in fork words
    need: int  # words the skip path must hold, in fork words (the module's bound)

    def describe(self) -> str:
        """'fork -> join' with the branch's first and last node."""
        inner = f"{self.branch[0]} .. {self.branch[-1]}" if self.branch else "no nodes"
        return f"{self.fork} -> {self.join} (branch {inner})"


def _is_fifo(node) -> bool:
    return node.op_type.startswith("StreamingFIFO")


def lead(node) -> int:
    """Words (of its input stream) a node takes in before its first output (see the module)."""
    inst = custom_op(node)
    op = node.op_type
    if _is_fifo(node):
        return 0
    if op.startswith("ConvolutionInputGenerator"):
        return int(inst.get_buffer_depth())
    if op.startswith(("MVAU", "VVAU")):
        return int(inst.get_folded_input_shape(0)[-2])
    fin, fout = inst.get_folded_input_shape(0), inst.get_folded_output_shape(0)
    words_in, words_out = math.prod(fin[:-1]), math.prod(fout[:-1])
    if op.startswith("GlobalAccPool"):
        return int(words_in)
    return math.ceil(words_in / max(1, words_out))


def _fifo_words(graph: DataflowGraph, fork: int, i: int) -> int:
    return _in_fork_words(graph, fork, i, int(custom_op(graph.nodes[i]).get_nodeattr("depth")))


def _branch_need(graph: DataflowGraph, fork: int, path: list[int]) -> int:
    """The bound on the words a path takes in before its first word reaches the join."""
    leads = sum(_in_fork_words(graph, fork, i, lead(graph.nodes[i])) for i in path)
    compute = [i for i in path if not _is_fifo(graph.nodes[i])]
    slowest = max(compute, key=lambda i: graph.infos[i].exp_cycles, default=None)
    upstream = path[: path.index(slowest)] if slowest is not None else []
    filled = sum(_fifo_words(graph, fork, i) for i in upstream if _is_fifo(graph.nodes[i]))
    return leads + filled + SKIP_MARGIN


def _path(graph: DataflowGraph, i: int, port: int) -> tuple[list[int], int, int] | None:
    """Nodes from node i's out{port} through one-in one-out nodes, the node it ends at and the
    input port it arrives on (None where it ends at the graph output)."""
    nodes = []
    j = node_edges(graph.edges, i)[1][port]
    while True:
        e = graph.edges[j]
        if e.dst < 0:
            return None
        ins, outs = node_edges(graph.edges, e.dst)
        if len(ins) != 1 or len(outs) != 1:
            return nodes, e.dst, e.dst_port
        nodes.append(e.dst)
        j = outs[0]


def _in_fork_words(graph: DataflowGraph, fork: int, i: int, words: int) -> int:
    """`words` of node i's input stream in the fork's output words (per-frame ratio)."""
    return math.ceil(words * graph.infos[fork].out_words / graph.infos[i].in_words)


def residual_blocks(model: ModelWrapper) -> list[ResidualBlock]:
    """Every fork (DuplicateStreams) whose two paths meet at one AddStreams, with the skip path
    (the one whose stages take in fewer words) and its FIFOs' depth against the bound."""
    graph = dataflow_graph(model)
    blocks = []
    for f, node in enumerate(graph.nodes):
        if node.op_type not in FORK_OPS or len(node.output) != 2:
            continue
        paths = [_path(graph, f, k) for k in range(2)]
        if None in paths or paths[0][1] != paths[1][1]:
            continue
        join = paths[0][1]
        if graph.nodes[join].op_type not in JOIN_OPS:
            continue
        # the skip path is the one whose own stages take in fewer words before they emit
        own = [sum(_in_fork_words(graph, f, i, lead(graph.nodes[i])) for i in p[0])
               for p in paths]
        s = 0 if own[0] <= own[1] else 1
        skip, branch = paths[s], paths[1 - s]
        fifos = [i for i in skip[0] if _is_fifo(graph.nodes[i])]
        blocks.append(ResidualBlock(
            fork=node.name, join=graph.nodes[join].name, skip_port=s, branch_port=branch[2],
            skip=[graph.nodes[i].name for i in skip[0]],
            branch=[graph.nodes[i].name for i in branch[0]],
            skip_fifos=[graph.nodes[i].name for i in fifos],
            depth=sum(_fifo_words(graph, f, i) for i in fifos),
            need=_branch_need(graph, f, branch[0]),
        ))
    return blocks


class SizeSkipFifos(Transformation):
    """Deepen the first StreamingFIFO on each residual block's skip path so that the skip path
    holds the branch's words (ResidualBlock.need, this module's bound); never makes one
    shallower. A skip path without a FIFO is left as it is (run FINN's InsertFIFO first);
    residual_blocks(model) shows it with depth 0."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        changed = False
        graph = dataflow_graph(model)
        index = {n.name: i for i, n in enumerate(graph.nodes)}
        for block in residual_blocks(model):
            if not block.skip_fifos or block.depth >= block.need:
                continue
            i = index[block.skip_fifos[0]]
            inst = custom_op(graph.nodes[i])
            # the missing fork words, in this FIFO's words
            extra = math.ceil((block.need - block.depth) * graph.infos[i].in_words
                              / graph.infos[index[block.fork]].out_words)
            inst.set_nodeattr("depth", int(inst.get_nodeattr("depth")) + extra)
            changed = True
        return model, changed
