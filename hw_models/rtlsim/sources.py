"""Collect each node's RTL sources and memory files; patch copies of three finn-rtllib files.

Two finn-rtllib files use SystemVerilog that Verilator (5.04x) cannot elaborate; a third carries a
per-weight simulation check that costs a tenth of the simulation time (see _NARROW_CHECK). They
are never edited in site-packages: `patched_text` rewrites the text of a copy. Each patch is a
small textual transformation that checks the upstream text it expects and fails loudly when FINN
changed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hw_models.errors import SimulationError

# ---------------------------------------------------------------------------------------------
# Patches (keys: path relative to finn-rtllib)

_FIFO_ABITS_OLD = """\
	// Memory Space Decomposition
	typedef struct {
		int unsigned  lo;
		int unsigned  hi;
	} abits_t;
	function abits_t INIT_ABITS();
		automatic abits_t  abits = '{ lo: $clog2(DEPTH_REQ), hi: 0 };
		if(abits.lo > MIN_ABITS) begin
			// Consider Decomposition into lo + hi
			automatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(abits.lo-1));
			if(hi_abits < abits.lo - 1) begin
				abits.lo--;
				abits.hi = hi_abits < 1? 1 : hi_abits;
			end
		end
		return  abits;
	endfunction : INIT_ABITS
	localparam abits_t       ABITS      = INIT_ABITS();
"""

_FIFO_ABITS_NEW = """\
	// Memory Space Decomposition
	// densiflow rtlsim patch: Verilator cannot evaluate a constant function returning a struct,
	// so INIT_ABITS() is split into two int functions; ABITS.lo/.hi became ABITS_LO/ABITS_HI.
	function int unsigned INIT_ABITS_LO();
		automatic int unsigned  lo = $clog2(DEPTH_REQ);
		if(lo > MIN_ABITS) begin
			automatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(lo-1));
			if(hi_abits < lo - 1)  return  lo - 1;
		end
		return  lo;
	endfunction : INIT_ABITS_LO
	function int unsigned INIT_ABITS_HI();
		automatic int unsigned  lo = $clog2(DEPTH_REQ);
		if(lo > MIN_ABITS) begin
			automatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(lo-1));
			if(hi_abits < lo - 1)  return  hi_abits < 1? 1 : hi_abits;
		end
		return  0;
	endfunction : INIT_ABITS_HI
	localparam int unsigned  ABITS_LO   = INIT_ABITS_LO();
	localparam int unsigned  ABITS_HI   = INIT_ABITS_HI();
"""

_ADD_LEAF_OLD = """\
		// Compute the count of decendents for all nodes in the reduction trees.
		typedef int unsigned  leaf_load_t[2*N-1];
		function leaf_load_t init_leaf_loads();
			automatic leaf_load_t  res;
			for(int unsigned  i = 2*N-1; i-- > N-1;)  res[i] = 1;
			for(int unsigned  i =   N-1; i-- >   0;)  res[i] = res[2*i+1] + res[2*i+2];
			return  res;
		endfunction : init_leaf_loads
		localparam leaf_load_t   LEAF_LOAD = init_leaf_loads();
"""

_ADD_ANCHOR = "\tlocalparam int unsigned  L = $clog2(N);  // Number of levels with reductions\n"

_ADD_LEAF_FUNC = """\
	// densiflow rtlsim patch: Verilator rejects constant functions declared under generate
	// (init_leaf_loads). Closed form at module level: the leaves below node i of the heap-ordered
	// reduction tree (leaves at N-1..2N-2) are, level by level, [lo, hi] cut to the leaf range.
	function automatic int unsigned leaf_load(input int unsigned  i);
		automatic int unsigned  lo = i;
		automatic int unsigned  hi = i;
		automatic int unsigned  cnt = 0;
		while(lo <= 2*N-2) begin
			cnt += ((hi < 2*N-2? hi : 2*N-2) >= (lo > N-1? lo : N-1))?
				(hi < 2*N-2? hi : 2*N-2) - (lo > N-1? lo : N-1) + 1 : 0;
			lo = 2*lo + 1;
			hi = 2*hi + 2;
		end
		return  cnt;
	endfunction : leaf_load
"""


# mvu.sv checks every weight element in every cycle against its NARROW_WEIGHTS parameter (a
# $warning only). FINN derives that parameter from the same weights it writes into the weight
# memory (MVAU_rtl.generate_hdl: narrow unless some weight equals the type's minimum), so the
# check cannot fire for a memory FINN wrote; a corrupted memory shows as output words that differ
# from FINN's python execution. Measured on the digits design: 10 % fewer instructions per cycle.
_NARROW_CHECK = (
    "\t\t\t\tif(NARROW_WEIGHTS) begin : genNarrowCheck\n"
    "\t\t\t\t\talways_ff @(posedge clk iff en && !rst) begin\n"
    "\t\t\t\t\t\tforeach(ww[pe]) begin\n"
    "\t\t\t\t\t\t\tassert(zero || (ww[pe] !== -2**(WEIGHT_WIDTH-1))) else begin\n"
    '\t\t\t\t\t\t\t\t$warning("%m: Weight of %0x violates NARROW_WEIGHTS commitment.", '
    "ww[pe]);\n"
    "\t\t\t\t\t\t\tend\n"
    "\t\t\t\t\t\tend\n"
    "\t\t\t\t\tend\n"
    "\t\t\t\tend\n"
)
_NARROW_CHECK_NEW = """\
				// densiflow rtlsim patch: per-cycle NARROW_WEIGHTS check of every weight removed
"""


def _replace_once(text: str, old: str, new: str, rel: str) -> str:
    count = text.count(old)
    if count != 1:
        raise SimulationError(
            f"finn-rtllib/{rel} changed upstream: the text the Verilator patch replaces was found "
            f"{count} times (expected once); update hw_models/rtlsim/sources.py for this FINN "
            "version"
        )
    return text.replace(old, new)


def _sub_required(pattern: str, repl: str, text: str, rel: str) -> str:
    new, n = re.subn(pattern, repl, text)
    if n == 0:
        raise SimulationError(
            f"finn-rtllib/{rel} changed upstream: no match for {pattern!r}; update "
            "hw_models/rtlsim/sources.py for this FINN version"
        )
    return new


def _patch_fifo(text: str) -> str:
    rel = "fifo/hdl/fifo.sv"
    text = _replace_once(text, _FIFO_ABITS_OLD, _FIFO_ABITS_NEW, rel)
    text = _sub_required(r"\bABITS\.lo\b", "ABITS_LO", text, rel)
    text = _sub_required(r"\bABITS\.hi\b", "ABITS_HI", text, rel)
    if "ABITS." in text:
        raise SimulationError(f"finn-rtllib/{rel}: unexpected ABITS member access left after patch")
    return text


def _patch_add_multi(text: str) -> str:
    rel = "mvu/add_multi.sv"
    text = _replace_once(text, _ADD_LEAF_OLD, "", rel)
    text = _replace_once(text, _ADD_ANCHOR, _ADD_ANCHOR + "\n" + _ADD_LEAF_FUNC, rel)
    text = _sub_required(r"\bLEAF_LOAD\[(\w+)\]", r"leaf_load(\1)", text, rel)
    if "LEAF_LOAD" in text:
        raise SimulationError(f"finn-rtllib/{rel}: unexpected LEAF_LOAD use left after patch")
    return text


def _patch_mvu(text: str) -> str:
    return _replace_once(text, _NARROW_CHECK, _NARROW_CHECK_NEW, "mvu/mvu.sv")


PATCHES = {
    "fifo/hdl/fifo.sv": _patch_fifo,
    "mvu/add_multi.sv": _patch_add_multi,
    "mvu/mvu.sv": _patch_mvu,
}


def patched_text(rel: str, text: str) -> str:
    """The text of finn-rtllib file `rel` as Verilator gets it (patched where needed)."""
    patch = PATCHES.get(rel)
    return patch(text) if patch else text


# ---------------------------------------------------------------------------------------------
# Collection


@dataclass
class NodeSources:
    """RTL files and memory initialisation files of one node."""

    name: str
    op_type: str
    gen_dir: Path
    top_module: str
    generated: list[Path] = field(default_factory=list)  # files in the node's code_gen_dir
    library: list[str] = field(default_factory=list)  # paths relative to finn-rtllib
    data: list[Path] = field(default_factory=list)  # memory init files read at run time
    weight_streamer: str | None = None  # module name of the MVAU/VVAU weight streamer


def custom_op(node):
    """FINN's op instance of a node, densiflow's RTL ops (hw_models.finn_ops) registered."""
    from qonnx.custom_op.registry import getCustomOp

    import hw_models.finn_ops  # noqa: F401 - registers Pool_rtl, AddStreams_rtl, ...

    return getCustomOp(node)


def rtllib_dir() -> Path:
    """FINN's finn-rtllib folder (inside the installed finn package)."""
    from finn.util.settings import get_settings

    return Path(get_settings().finn_rtllib).resolve()


def collect_node_sources(node, lib: Path) -> NodeSources:
    """Files one generated node needs; raises SimulationError naming the node if any is missing."""
    inst = custom_op(node)
    gen_dir = Path(inst.get_nodeattr("code_gen_dir_ipgen") or "")
    if not str(gen_dir) or not gen_dir.is_dir():
        raise SimulationError(
            f"node {node.name} ({node.op_type}) has no generated HDL (code_gen_dir_ipgen="
            f"{str(gen_dir)!r}); run hw_models.rtlsim.generate_rtl first"
        )
    gen_dir = gen_dir.resolve()
    top = inst.get_nodeattr("gen_top_module") or inst.get_verilog_top_module_name()
    src = NodeSources(node.name, node.op_type, gen_dir, top)
    files = [Path(f) for f in inst.get_rtl_file_list(abspath=True)]
    if node.op_type in ("MVAU_rtl", "VVAU_rtl"):
        # get_rtl_file_list omits the weight streamer that feeds in1_V (mem_mode internal_decoupled)
        files += [
            gen_dir / f"{node.name}_memstream_wrapper.v",
            lib / "axi/hdl/axilite.sv",
            lib / "memstream/hdl/memstream_axi.sv",
            lib / "memstream/hdl/memstream.sv",
        ]
        src.weight_streamer = f"{node.name}_memstream_wrapper"
        src.data.append(gen_dir / "memblock.dat")
    if node.op_type == "Thresholding_rtl":
        src.data += [Path(f) for f in inst.get_all_meminit_filenames(abspath=True)]

    missing = [f for f in files + src.data if not f.is_file()]
    if missing:
        kinds = "thresholds/weights file" if any(f in src.data for f in missing) else "RTL source"
        raise SimulationError(
            f"node {node.name} ({node.op_type}): missing {kinds}(s): "
            + ", ".join(str(f) for f in missing)
            + " -- regenerate the HDL with hw_models.rtlsim.generate_rtl"
        )
    for f in files:
        f = f.resolve()
        if f.is_relative_to(gen_dir):
            src.generated.append(f)
        elif f.is_relative_to(lib):
            src.library.append(f.relative_to(lib).as_posix())
        else:
            raise SimulationError(
                f"node {node.name}: RTL file {f} is neither generated nor in finn-rtllib"
            )
    return src
