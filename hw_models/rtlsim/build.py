"""Verilator build of a generated dataflow graph, cached by a hash of everything that goes into it.

The graph is verilated as one model, then its C++ units are compiled in parallel (one progress
step per unit) and linked with Verilator's run-time library, which is compiled once per cache
(from a one-module stand-in, while the real design is verilated).
Measured alternatives that did not pay on the digits design: a Verilator library per node
(--lib-create, cached per node) needed 2.7x the build CPU and simulated 4x slower (every node
boundary becomes a DPI call); -O2/-O3 for the model cost 1.4x/2.5x the compile time of -Os for
no fewer instructions per simulated cycle (see OPT_FAST); Verilator's -O3 changed nothing;
--threads 2 simulated 20-30x slower on 2 shared cores (its threads spin); frames are sharded over
processes instead (runner.run_frames).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.cache import usable_cache_dir
from hw_models.errors import SimulationError
from hw_models.rtlsim.compile import (
    BINARY,
    FORMAT,
    MAKE_VARS,
    Progress,
    compile_units,
    default_jobs,
    make,
    prebuild_runtime,
    run_logged,
    sha256_file,
    verilator_args,
    verilator_root,
    verilator_version,
)
from hw_models.rtlsim.hdl import check_rtl_graph, ensure_finn_settings, load_model
from hw_models.rtlsim.residual import ResidualBlock, residual_blocks
from hw_models.rtlsim.sources import NodeSources, collect_node_sources, patched_text, rtllib_dir
from hw_models.rtlsim.stitch import (
    DataflowGraph,
    Edge,
    NodeInfo,
    dataflow_graph,
    find_ports,
    render_top,
    top_streams,
)

log = logging.getLogger(__name__)

HARNESS = Path(__file__).with_name("harness.cpp")
GAUGE_SV = Path(__file__).with_name("fifo_gauge_limit.sv")
GAUGE_LIB = "fifo/hdl/fifo_gauge.sv"  # finn-rtllib's unbounded FIFO for sizing
_DATA = "@DATA@"  # placeholder for the build folder's data path while hashing
STREAMS_H = "rtlsim_streams.h"  # the top's stream list for the harness


@dataclass(frozen=True)
class IoStream:
    """One input or output stream of the top (a graph input or output tensor; JSON-able)."""

    tensor: str
    dtype: str  # FINN DataType name
    shape: list[int]  # normal shape of one frame (batch 1), NHWC
    folded: list[int]
    width: int  # padded (bus) width
    bits: int
    words: int  # words per frame
    elems: int  # elements per word


@dataclass
class Simulator:
    """A built simulator of one dataflow graph: where it is and what its streams carry
    (JSON-able). The in_*/out_* fields are those of the first input and output stream."""

    build_dir: str
    key: str
    nodes: list[NodeInfo]
    in_dtype: str  # FINN DataType names
    out_dtype: str
    in_shape: list[int]  # normal shapes of one frame (batch 1), NHWC
    out_shape: list[int]
    in_folded: list[int]
    out_folded: list[int]
    data_files: list[str]
    data_sha256: list[str] = field(default_factory=list)  # of each data file, as built
    binary_sha256: str = ""  # of the harness executable, as built
    build_seconds: float = 0.0
    cached: bool = False
    verilator: str = ""
    fifo_gauges: list[str] = field(default_factory=list)  # FIFO nodes built as sizing gauges
    extra: dict = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)  # every stream (stitch.Edge)
    inputs: list[IoStream] = field(default_factory=list)  # the top's in{k}_V
    outputs: list[IoStream] = field(default_factory=list)  # the top's out{k}_V
    blocks: list[ResidualBlock] = field(default_factory=list)  # fork/join pairs (residual.py)

    @property
    def binary(self) -> Path:
        """The harness executable."""
        return Path(self.build_dir) / BINARY

    @property
    def exp_cycles(self) -> dict[str, int]:
        """FINN's expected cycles per frame of each node."""
        return {n.name: n.exp_cycles for n in self.nodes}

    def to_json(self) -> dict:
        """Plain-data form (build_seconds/cached describe this call, not the cache entry)."""
        return asdict(self)


def load_simulator(build_dir: str | Path) -> Simulator:
    """A previously built simulator from its folder."""
    path = Path(build_dir) / "simulator.json"
    if not path.is_file():
        raise SimulationError(f"{build_dir} holds no built simulator (no simulator.json)")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise SimulationError(f"{build_dir} was built by another version of densiflow's rtlsim "
                              f"(format {data.get('format')}, this one {FORMAT}); build it again")
    data.pop("format")
    data["nodes"] = [NodeInfo.from_json(n) for n in data["nodes"]]
    data["edges"] = [Edge(**e) for e in data["edges"]]
    data["inputs"] = [IoStream(**x) for x in data["inputs"]]
    data["outputs"] = [IoStream(**x) for x in data["outputs"]]
    # entries of format 5 built before residual blocks were recorded have none
    data["blocks"] = [ResidualBlock(**b) for b in data.get("blocks", [])]
    sim = Simulator(**data)
    sim.cached = True
    sim.build_seconds = 0.0
    return sim


CACHE_ENV = "DENSIFLOW_RTLSIM_CACHE"


def default_cache_dir() -> Path:
    """$DENSIFLOW_RTLSIM_CACHE, else ~/.cache/densiflow/rtlsim."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "densiflow" / "rtlsim"


@dataclass
class _Design:
    """Everything a build needs, gathered from the model (texts keyed by build-folder path)."""

    graph: DataflowGraph
    texts: dict[str, str]
    hashed: dict[str, bytes]
    data: dict[str, Path]
    order: list[str]
    top_tmpl: str
    gauges: list[str]


def _gather(model: ModelWrapper, fifo_gauges: bool) -> _Design:
    """Sources, memory files and top of the graph (FIFOs as gauges if asked)."""
    graph = dataflow_graph(model)
    nodes, infos = graph.nodes, graph.infos
    lib = rtllib_dir()
    gauged = {i.name for i in infos if fifo_gauges and i.op_type.startswith("StreamingFIFO")}
    srcs: list[NodeSources | None] = [
        None if n.name in gauged else collect_node_sources(n, lib) for n in nodes
    ]
    d = _Design(graph, {}, {}, {}, [], "", [i.name for i in infos if i.name in gauged])
    libs = [GAUGE_LIB] if gauged else []
    for src in srcs:
        if src is not None:
            libs += [rel for rel in src.library if rel not in libs]
    for rel in libs:
        d.texts[f"lib/{rel}"] = patched_text(rel, (lib / rel).read_text())
    if gauged:
        d.texts["lib/" + GAUGE_SV.name] = GAUGE_SV.read_text()
    for dest, text in d.texts.items():
        d.hashed[dest] = text.encode()
    d.order = [f"lib/{rel}" for rel in libs] + (["lib/" + GAUGE_SV.name] if gauged else [])
    ports, streamer_ports = [], []
    for src in srcs:
        ports.append(None if src is None else find_ports(src.generated, src.top_module))
        streamer_ports.append(
            find_ports(src.generated, src.weight_streamer)
            if src is not None and src.weight_streamer else None
        )
        if src is not None:
            _add_node_files(d, src)
    d.top_tmpl = render_top(infos, srcs, ports, streamer_ports, _DATA, graph.edges)
    return d


def streams_header(edges: list[Edge]) -> str:
    """The harness's view of the top's streams: RTLSIM_FOR_IN(X) expands to X(k) per input."""
    ins, outs = top_streams(edges)
    return (
        "// Generated by hw_models.rtlsim.build: the top's AXI streams.\n"
        f"#define RTLSIM_INS {len(ins)}\n#define RTLSIM_OUTS {len(outs)}\n"
        "#define RTLSIM_FOR_IN(X) " + " ".join(f"X({k})" for k in range(len(ins))) + "\n"
        "#define RTLSIM_FOR_OUT(X) " + " ".join(f"X({k})" for k in range(len(outs))) + "\n"
    )


def _add_node_files(d: _Design, src: NodeSources) -> None:
    for f in src.generated:
        dest = f"gen/{src.name}/{f.name}"
        d.texts[dest] = f.read_text()
        # the node's folder path appears in default parameters (overridden in the top)
        d.hashed[dest] = d.texts[dest].replace(str(src.gen_dir), "@GEN@").encode()
        d.order.append(dest)
    for f in src.data:
        dest = f"data/{src.name}/{f.name}"
        d.data[dest] = f
        d.hashed[dest] = f.read_bytes()


def _key(d: _Design, args: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"format={FORMAT}\n{verilator_version()}\n{args!r}\n{MAKE_VARS!r}\n".encode())
    for part in (d.top_tmpl, HARNESS.read_text(), streams_header(d.graph.edges)):
        h.update(hashlib.sha256(part.encode()).digest())
    for dest in sorted(d.hashed):
        h.update(dest.encode() + b"\0" + hashlib.sha256(d.hashed[dest]).digest())
    return h.hexdigest()


def _io_stream(model: ModelWrapper, graph: DataflowGraph, j: int) -> IoStream:
    """The top stream on edge j, from the node it feeds or is fed by."""
    from qonnx.custom_op.registry import getCustomOp

    e = graph.edges[j]
    if e.src < 0:
        inst, port = getCustomOp(graph.nodes[e.dst]), e.dst_port
        shape, folded = inst.get_normal_input_shape(port), inst.get_folded_input_shape(port)
    else:
        inst, port = getCustomOp(graph.nodes[e.src]), e.src_port
        shape, folded = inst.get_normal_output_shape(port), inst.get_folded_output_shape(port)
    return IoStream(tensor=e.tensor, dtype=model.get_tensor_datatype(e.tensor).name,
                    shape=[int(x) for x in shape], folded=[int(x) for x in folded],
                    width=e.width, bits=e.bits, words=e.words, elems=e.elems)


def _simulator(model: ModelWrapper, d: _Design, key: str, build_dir: Path) -> Simulator:
    ins, outs = top_streams(d.graph.edges)
    inputs = [_io_stream(model, d.graph, j) for j in ins]
    outputs = [_io_stream(model, d.graph, j) for j in outs]
    return Simulator(
        build_dir=str(build_dir),
        key=key,
        nodes=d.graph.infos,
        in_dtype=inputs[0].dtype,
        out_dtype=outputs[0].dtype,
        in_shape=inputs[0].shape,
        out_shape=outputs[0].shape,
        in_folded=inputs[0].folded,
        out_folded=outputs[0].folded,
        edges=d.graph.edges,
        inputs=inputs,
        outputs=outputs,
        blocks=residual_blocks(model),
        data_files=[str(build_dir / p) for p in sorted(d.data)],
        data_sha256=[hashlib.sha256(d.hashed[p]).hexdigest() for p in sorted(d.data)],
        verilator=verilator_version(),
        fifo_gauges=d.gauges,
    )


def build_simulator(
    model: ModelWrapper | str | Path,
    cache_dir: str | Path | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    fifo_gauges: bool = False,
) -> Simulator:
    """Verilate the dataflow graph of an HDL-generated model (see generate_rtl); reuse a cached
    build.

    The cache key hashes every RTL source (finn-rtllib files after patching, generated files),
    every memory init file, the top level, the harness, the Verilator version and flags.
    jobs: parallel compiler processes (default: the CPUs this process may use).
    progress: called as progress(phase, done, total) while building (see `Progress`).
    fifo_gauges: build every StreamingFIFO as a depth-limited gauge whose capacity is set per
    run (run_frames' fifo_limits), for FIFO sizing (see fifo_sizing.size_fifos).
    """
    ensure_finn_settings()
    model = load_model(model)
    check_rtl_graph(model)
    d = _gather(model, fifo_gauges)
    args = verilator_args(len(d.graph.edges), len(d.gauges))
    key = _key(d, args)
    cache = usable_cache_dir(cache_dir if cache_dir is not None else default_cache_dir(),
                             CACHE_ENV)
    build_dir = cache / key[:24]
    sim = _simulator(model, d, key, build_dir)
    if (build_dir / "simulator.json").is_file():
        damage = entry_damage(sim)
        if damage is None:
            log.info("rtlsim: cache hit %s (%d nodes)", build_dir, len(d.graph.nodes))
            sim.cached = True
            return sim
        log.warning("rtlsim: damaged cache entry %s (%s); building it again", build_dir, damage)
        _discard(build_dir)
    t0 = time.monotonic()
    tmp = cache / f"{key[:24]}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _stage(d, tmp, build_dir)
        _build(d, args, tmp, cache, jobs or default_jobs(), progress)
        sim.build_seconds = time.monotonic() - t0
        sim.binary_sha256 = sha256_file(tmp / BINARY)
        (tmp / "simulator.json").write_text(
            json.dumps({"format": FORMAT, **sim.to_json()}, indent=1))
        if build_dir.exists():  # a concurrent build finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, build_dir)
    except SimulationError:  # a failed build keeps its folder: the message names its log
        raise
    except BaseException:  # anything else (a full disk, an interrupt) leaves no half-built folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("rtlsim: built %s in %.1f s", build_dir, sim.build_seconds)
    return sim


def entry_damage(sim: Simulator) -> str | None:
    """What is wrong with the cached build of `sim` (None when its binary and memory files
    have the checksums recorded when it was built); sets sim.binary_sha256 from the entry."""
    try:
        sim.binary_sha256 = json.loads((Path(sim.build_dir) / "simulator.json").read_text())[
            "binary_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its simulator.json is unreadable"
    try:
        if sha256_file(sim.binary) != sim.binary_sha256:
            return f"{BINARY} differs from the binary built"
        if any(sha256_file(Path(f)) != h for f, h in zip(sim.data_files, sim.data_sha256)):
            return "a memory init file differs from the one built"
    except OSError as exc:
        return f"a file is missing ({exc.strerror})"
    return None


def _discard(build_dir: Path) -> None:
    """Move a damaged cache entry aside (a concurrent run may still read it), then delete it."""
    gone = build_dir.with_name(f"{build_dir.name}.damaged{os.getpid()}")
    try:
        os.replace(build_dir, gone)
    except FileNotFoundError:  # a concurrent run discarded it first
        return
    shutil.rmtree(gone, ignore_errors=True)


def _stage(d: _Design, tmp: Path, build_dir: Path) -> None:
    """Write sources, memory files, top and harness into the build folder."""
    for dest, text in d.texts.items():
        (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
        (tmp / dest).write_text(text)
    for dest, f in d.data.items():
        (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, tmp / dest)
    (tmp / "top.sv").write_text(d.top_tmpl.replace(_DATA, str(build_dir / "data")))
    shutil.copyfile(HARNESS, tmp / "harness.cpp")
    (tmp / STREAMS_H).write_text(streams_header(d.graph.edges))


def _build(d: _Design, args: list[str], tmp: Path, cache: Path, jobs: int,
           progress: Progress | None) -> None:
    """Verilate, compile and link in `tmp`; SimulationError with the log's tail on failure."""
    # packages first, then the rest in collection order, the top last
    files = [p for p in d.order if p.endswith("_pkg.sv")] + [
        p for p in d.order if not p.endswith("_pkg.sv")
    ]
    cmd = [str(verilator_root() / "bin" / "verilator"), *args, "-j", str(jobs), *files, "top.sv",
           "harness.cpp"]
    log.info("rtlsim: verilating %d nodes (%d files) in %s with -j %d ...", len(d.graph.nodes),
             len(files), tmp, jobs)
    obj_dir = tmp / "obj_dir"
    with open(tmp / "build.log", "w") as logf:
        try:
            if progress:
                progress("verilate", 0, 1)
            runtime = threading.Thread(target=prebuild_runtime, args=(cache,))
            runtime.start()
            try:
                run_logged(cmd, tmp, logf, "verilator")
            finally:
                runtime.join()
            if progress:
                progress("verilate", 1, 1)
            objs = compile_units(obj_dir, cache, jobs, logf, progress)
            if progress:
                progress("link", 0, 1)
            make([BINARY], obj_dir, logf, "VK_GLOBAL_OBJS=", "LOADLIBES=" + " ".join(objs))
            if progress:
                progress("link", 1, 1)
        except subprocess.CalledProcessError as exc:
            logf.flush()
            tail = (tmp / "build.log").read_text().splitlines()[-30:]
            raise SimulationError(
                f"Verilator build of the graph ({', '.join(i.name for i in d.graph.infos)}) failed "
                f"in {exc.cmd} (exit {exc.returncode}); log {tmp / 'build.log'}:\n"
                + "\n".join(tail)
            ) from exc
    shutil.copy2(obj_dir / BINARY, tmp / BINARY)
    shutil.rmtree(obj_dir)  # objects and generated C++ are not needed to run
