"""A servable deployment folder: HIL target, token, manifest and artefact hashes."""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from flow.hil.types import HilError
from hw_models import agent
from hw_models.agent import Manifest


def parse_target(target: str) -> tuple[str, int]:
    """(host, port) of 'HOST:PORT' ('[::1]:PORT' for IPv6)."""
    host, sep, port = target.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HilError(f"target {target!r} is not HOST:PORT (e.g. 127.0.0.1:{agent.DEFAULT_PORT})")
    return host, int(port)


def new_token(path: str | Path) -> Path:
    """Write a fresh random token to path, readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path


def read_token(path: str | Path) -> bytes:
    """The shared token in a file."""
    try:
        return agent.read_token(path)
    except agent.AgentError as err:
        raise HilError(str(err)) from None


def wire_dtype(finn_dtype: str) -> str:
    """The numpy dtype on the wire that holds every value of a FINN DataType exactly."""
    from qonnx.core.datatype import DataType

    dt = DataType[finn_dtype]
    if not dt.is_integer():
        return "<f4"  # FINN's python execution computes in float32
    for name in ("|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8"):
        info = np.iinfo(np.dtype(name))
        if info.min <= dt.min() and dt.max() <= info.max:
            return name
    raise HilError(f"datatype {finn_dtype} does not fit in 64 bits")


def install_agent(folder: str | Path) -> Path:
    """Copy the board agent (hw_models/agent.py) into a deployment folder."""
    dest = Path(folder) / "agent.py"
    tmp = dest.with_name(f".agent.py.{os.getpid()}.tmp")
    shutil.copyfile(agent.__file__, tmp)
    os.replace(tmp, dest)
    return dest


def _write_deployment(folder: Path, io: dict, **fields) -> Manifest:
    """Merge into the folder's hil.json (the other backend's entries stay) and add agent.py."""
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        if (folder / agent.MANIFEST).is_file():
            old = agent.load_manifest(folder)
            if any(getattr(old, k) != v for k, v in io.items()):
                raise HilError(f"{folder / agent.MANIFEST} describes other inputs/outputs "
                               f"than {io}; use a new folder")
            manifest = replace(old, **fields)
        else:
            manifest = Manifest(**io, **fields)
    except agent.AgentError as err:
        raise HilError(str(err)) from None
    agent.write_manifest(folder, manifest)
    install_agent(folder)
    return manifest


def prepare_rtlsim_folder(dataflow_model, folder: str | Path, fpgapart: str, clock_mhz: float,
                          cache_dir: str | Path | None = None, max_frames: int = 256) -> Manifest:
    """Make `folder` a deployment for `--backend rtlsim`: the HDL of a folded, specialized
    dataflow (child) model in folder/sim_rtl, its Verilator simulator (built, or reused from
    cache_dir, by default folder/sim), hil.json and agent.py."""
    from hw_models.rtlsim import build_simulator, generate_rtl

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rtl = generate_rtl(dataflow_model, folder / "sim_rtl", fpgapart=fpgapart,
                       clk_ns=1000.0 / clock_mhz)
    sim = build_simulator(rtl, cache_dir=folder / "sim" if cache_dir is None else cache_dir)
    sim_dir = Path(sim.build_dir).resolve()
    rel = sim_dir.relative_to(folder) if sim_dir.is_relative_to(folder) else sim_dir
    io = {"in_shape": tuple(sim.in_shape), "in_dtype": wire_dtype(sim.in_dtype),
          "out_shape": tuple(sim.out_shape), "out_dtype": wire_dtype(sim.out_dtype)}
    return _write_deployment(folder, io, sim_dir=str(rel), max_frames=max_frames,
                             clock_mhz=clock_mhz)


def prepare_pynq_folder(folder: str | Path, dataflow_model, clock_mhz: float,
                        bitfile: str = "bitfile/finn-accel.bit", driver: str = "driver",
                        platform: str = "zynq-iodma", max_frames: int = 256) -> Manifest:
    """Add hil.json and agent.py to a FINN deployment folder (bitfile, PYNQ driver) for
    `--backend pynq`; I/O shapes and datatypes from the dataflow (child) model."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = dataflow_model if isinstance(dataflow_model, ModelWrapper) else ModelWrapper(
        str(dataflow_model))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    io = {"in_shape": tuple(int(x) for x in model.get_tensor_shape(iname)),
          "in_dtype": wire_dtype(model.get_tensor_datatype(iname).name),
          "out_shape": tuple(int(x) for x in model.get_tensor_shape(oname)),
          "out_dtype": wire_dtype(model.get_tensor_datatype(oname).name)}
    return _write_deployment(Path(folder).resolve(), io, bitfile=bitfile, driver=driver,
                             platform=platform, max_frames=max_frames, clock_mhz=clock_mhz)


def artefact_hashes(folder: str | Path) -> dict[str, str]:
    """The SHA-256 of each artefact a deployment folder holds, by backend (what to expect)."""
    try:
        manifest = agent.load_manifest(folder)
    except agent.AgentError as err:
        raise HilError(str(err)) from None
    found = {}
    for backend in agent.BACKENDS:
        try:
            found[backend] = agent.artefact_sha256(folder, manifest, backend)
        except agent.AgentError:
            continue
    if not found:
        raise HilError(f"deployment folder {folder} holds neither a simulator nor a bitfile")
    return found
