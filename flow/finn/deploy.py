"""Deployment of a FINN build: the bitstream where Vivado exists, everything else anyway.

`deploy(build, board, out_dir, frames, expected)` makes a deployment folder:

  bitfile/    finn-accel.bit and finn-accel.hwh (with Vivado); without it a placeholder,
              finn-accel.bit.placeholder, that says how to build them
  driver/     driver.py (densiflow's PYNQ driver: numpy and pynq) and FINN's settings.json
  io/         input.npy, expected_output.npy: test vectors at the accelerator's boundary (FINN's
              normal shapes, what driver.py takes and returns, by FINN's python execution);
              model_input.npy, model_output.npy (and model_expected.npy): the same at the model's
  rtl/        the stitched RTL: nodes/<node>/ (FINN's HDL), lib/ (finn-rtllib), top.sv, filelist.f
  vivado/     ooc_synth.tcl: out-of-context synthesis, placement and routing of rtl/ for the
              board's part (post-route utilisation and timing of the accelerator alone); reports/
  manifest.json  board, platform, clock, shapes, SHA-256 of every file, a slot for the HIL agent
  finn_build/, finn.log  FINN's working folder and log (not part of the deployment, not hashed)

With Vivado (XILINX_VIVADO set, `vivado` and `vitis_hls` on PATH) FINN's flow builds the bitfile:
PrepareIP, HLSSynthIP, CreateStitchedIP, then ZynqBuild (Zynq boards) or InsertIODMA ...
BuildAllXOs, VitisBuild (Alveo); the post-route utilisation of the accelerator's partition and
the timing summary are written next to FINN's estimate with the error per resource (manifest
"vivado", vivado/reports/). Without it the rest is done and the result names what is missing
and the command to run later (also logged as one warning line).

Manual check with the real tools (a machine with Vivado and Vitis HLS 2022.2 or later and this
checkout; not run here, where there is no Vivado):

    source /tools/Xilinx/Vivado/2024.2/settings64.sh
    python -m flow.finn.deploy build/out/digits/05_finn build/out/digits/08_deploy
    # expect: bitfile/finn-accel.bit and .hwh, manifest.json "vivado" with the post-route figures
    # and timing_met true; then on a PYNQ-Z1 with the folder copied over:
    cd driver && python driver.py --expected ../io/expected_output.npy   # exit 0: all equal
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from flow.core.io import atomic_write_text, file_sha256, refused_as_error, remove_tree
from flow.finn.errors import DeployError, ParameterError
from flow.finn.estimate import FinnBuild
from flow.finn.noise import LOG_FILE, finn_output_to
from flow.finn.pynq_driver import make_driver, platform, shell_model
from flow.finn.rtl import stitch_rtl
from flow.finn.settings import finn_settings
from flow.finn.verify import partition_streams
from flow.finn.vivado import (
    OOC_TCL,
    REPORTS,
    VivadoFigures,
    accelerator_cell,
    build_bitfile,
    figures,
    missing_tools,
    render_ooc_tcl,
    vivado_available,
)
from hw_models.boards import Board, get_board

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MARKER = ".densiflow_deployment"  # made first: marks a folder densiflow may clear
BITFILE, HWH = "bitfile/finn-accel.bit", "bitfile/finn-accel.hwh"
PLACEHOLDER = BITFILE + ".placeholder"
AGENT = "agent.py"  # the HIL agent (hw_models/agent.py), copied in by the flow
OURS = ("bitfile", "driver", "io", "rtl", "vivado", "finn_build", LOG_FILE, MANIFEST)
UNHASHED = {"finn_build", LOG_FILE, MANIFEST, MARKER}
Progress = Callable[[str], None]

__all__ = ["DeployManifest", "DeployResult", "deploy", "refresh_manifest", "vivado_available"]


class DeployedFile(BaseModel):
    """One file of the deployment and its SHA-256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # relative to the deployment folder
    sha256: str
    size_bytes: int


class DeployManifest(BaseModel):
    """manifest.json: what the folder holds and the hash of every file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = 1
    board: str
    part: str
    platform: str  # FINN's driver platform: "zynq-iodma" or "alveo"
    clock_mhz: float
    frames: int  # test vectors in io/
    in_shape: list[int]  # one frame at the accelerator's boundary (FINN's normal shape, batch 1)
    in_dtype: str  # FINN datatype names
    out_shape: list[int]
    out_dtype: str
    bitfile: str = BITFILE
    bitfile_sha256: str | None = None  # None: not built yet (see `missing`)
    hwh: str = HWH
    driver: str = "driver/driver.py"
    agent: str = AGENT
    agent_sha256: str | None = None  # None until the HIL agent is copied in (refresh_manifest)
    vivado: VivadoFigures | None = None
    missing: str | None = None  # one line: what this machine lacks and the command to run later
    files: list[DeployedFile] = []


class DeployResult(BaseModel):
    """Result of `deploy`: where the folder is and its manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out_dir: str
    manifest: DeployManifest

    @property
    def complete(self) -> bool:
        """Was the bitfile built?"""
        return self.manifest.bitfile_sha256 is not None


# ----------------------------------------------------------------------------- manifest


def _hashed_files(out: Path) -> list[DeployedFile]:
    """Every file of the deployment (FINN's working folder and log left out), sorted."""
    files = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out)
        if rel.parts[0] not in UNHASHED:
            files.append(DeployedFile(path=rel.as_posix(), sha256=file_sha256(path),
                                      size_bytes=path.stat().st_size))
    return files


def _write_manifest(out: Path, manifest: DeployManifest) -> DeployManifest:
    """The manifest with the hashes of what is in `out` now, saved as manifest.json."""
    files = _hashed_files(out)
    digest = {f.path: f.sha256 for f in files}
    manifest = manifest.model_copy(update={
        "files": files, "bitfile_sha256": digest.get(manifest.bitfile),
        "agent_sha256": digest.get(manifest.agent)})
    atomic_write_text(out / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_deploy_manifest(out_dir: Path | str) -> DeployManifest:
    """The manifest of a deployment folder; DeployError naming the file if it is bad."""
    path = Path(out_dir) / MANIFEST
    try:
        return DeployManifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as e:
        raise DeployError(f"{path} is not a readable deployment manifest "
                          f"({type(e).__name__}); deploy again") from None


def refresh_manifest(out_dir: Path | str) -> DeployManifest:
    """Hash the folder again (e.g. after the HIL agent was copied in as agent.py)."""
    return _write_manifest(Path(out_dir).resolve(), load_deploy_manifest(out_dir))


# ----------------------------------------------------------------------------- inputs


def _board(build: FinnBuild, board: Board | str | None) -> Board:
    """The board to deploy to: the build's own (a build is folded for one part)."""
    if board is None:
        return get_board(build.board)
    board = get_board(board)
    if board.part != build.part:
        raise DeployError(f"board {board.name} ({board.part}) differs from the FINN build's "
                          f"{build.board} ({build.part}); build for {board.name} first")
    return board


def _check_vectors(build: FinnBuild, frames, expected) -> tuple[np.ndarray, np.ndarray | None]:
    """frames (n, *model input shape[1:]) with n >= 1; expected None or n outputs."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(build.path("qonnx")))
    shape = tuple(model.get_tensor_shape(model.graph.input[0].name)[1:])
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != len(shape) + 1 or frames.shape[1:] != shape or len(frames) == 0:
        dims = ", ".join(map(str, shape))
        raise ParameterError("frames", f"must be an array of shape (n, {dims}) with n >= 1 (the "
                             f"model's input), got {frames.shape}")
    if expected is not None and len(expected) != len(frames):
        raise ParameterError("expected", f"must hold one output per frame ({len(frames)}), "
                             f"got {len(expected)}")
    return frames, None if expected is None else np.asarray(expected)


def _prepare_folder(out: Path) -> None:
    """An empty folder, or a deployment folder densiflow made (its own parts are removed)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DeployError(f"{out} is a link or a file, not a folder; choose a new folder")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()) and (marker.is_symlink() or not marker.is_file()):
        raise DeployError(f"{out} is not empty and has no {MARKER}: not a deployment folder "
                          "densiflow made; choose a new folder")
    for name in OURS:
        remove_tree(out / name)  # a link among them is removed, never followed
    with refused_as_error(out, "create"):
        out.mkdir(parents=True, exist_ok=True)
        marker.touch()


# ----------------------------------------------------------------------------- parts


def _write_vectors(build: FinnBuild, frames: np.ndarray, expected: np.ndarray | None,
                   io_dir: Path) -> None:
    """Test vectors at the accelerator's and the model's boundary (FINN's python execution)."""
    accel_in, accel_out, final = partition_streams(
        build.path("dataflow_parent"), build.path("dataflow_python"), frames)
    io_dir.mkdir(parents=True)
    arrays = {"input": accel_in, "expected_output": accel_out, "model_input": frames,
              "model_output": final}
    if expected is not None:
        arrays["model_expected"] = expected
    for name, array in arrays.items():
        np.save(io_dir / f"{name}.npy", array)


def _with_vivado(build: FinnBuild, board: Board, out: Path):
    """FINN's bitfile flow; the bitfile, hwh and reports copied in. Returns (shell, figures)."""
    from qonnx.core.modelwrapper import ModelWrapper

    made = build_bitfile(build.path("dataflow_rtl"), board, build.clock_mhz, out / "finn_build")
    (out / "bitfile").mkdir()
    shutil.copyfile(made.bitfile, out / BITFILE)
    if made.hwh is not None:
        shutil.copyfile(made.hwh, out / HWH)
    reports = out / "vivado" / REPORTS
    reports.mkdir(parents=True, exist_ok=True)
    xml = Path(shutil.copyfile(made.utilisation_xml, reports / "post_route_utilization.xml"))
    timing = (Path(shutil.copyfile(made.timing_rpt, reports / "post_route_timing.rpt"))
              if made.timing_rpt else None)
    shell = ModelWrapper(made.shell_model)
    cell = accelerator_cell(shell)
    return shell, figures(build.totals, xml, shell, cell, timing, out)


def _missing_line(missing: list[str], command: str) -> str:
    return (f"bitstream not built: this machine lacks {', '.join(missing)}; everything else is in "
            f"the folder; on a machine with Vivado and Vitis HLS run: {command}")


def _without_vivado(build: FinnBuild, board: Board, out: Path, line: str):
    """The shell model FINN would build (no tool runs) and a placeholder for the bitfile."""
    from qonnx.core.modelwrapper import ModelWrapper

    shell = shell_model(ModelWrapper(str(build.path("dataflow_rtl"))), board,
                        out / "finn_build" / "kernels")
    atomic_write_text(out / PLACEHOLDER, f"The bitfile goes here as {Path(BITFILE).name} (and "
                      f"{Path(HWH).name} beside it). {line}\n")
    return shell


def _manifest(build: FinnBuild, board: Board, frames: int, settings: Path,
              vivado: VivadoFigures | None, missing: str | None) -> DeployManifest:
    """The manifest's fields from FINN's settings.json (hashes come when it is written)."""
    import json

    shapes = json.loads(settings.read_text())["driver_information"]["io_shape_dict"]

    def dtype(name: str) -> str:  # "DataType['UINT5']" -> "UINT5"
        return name.split("'")[1] if "'" in name else name

    return DeployManifest(
        board=board.name, part=board.part, platform=platform(board), clock_mhz=build.clock_mhz,
        frames=frames, in_shape=list(shapes["ishape_normal"][0]),
        in_dtype=dtype(shapes["idt"][0]), out_shape=list(shapes["oshape_normal"][0]),
        out_dtype=dtype(shapes["odt"][0]), vivado=vivado, missing=missing)


# ----------------------------------------------------------------------------- entry points


def deploy(build: FinnBuild | Path | str, board: Board | str | None, out_dir: Path | str,
           frames: np.ndarray, expected: np.ndarray | None = None, *,
           progress: Progress | None = None, command: str | None = None,
           bitstream: bool = True) -> DeployResult:
    """Make the deployment folder of a FINN build (a FinnBuild or its folder) for `board`.

    `frames` are model inputs (as the QONNX model takes them) for the test vectors, `expected`
    optional golden model outputs for them. `command` is the line to run later when Vivado is
    missing (default: this module's own command line). `bitstream=False` skips the bitfile even
    where Vivado exists.
    """
    say = progress or (lambda _: None)
    build = build if isinstance(build, FinnBuild) else FinnBuild.load(build)
    board = _board(build, board)
    frames, expected = _check_vectors(build, frames, expected)
    out = Path(out_dir).resolve()
    _prepare_folder(out)
    missing = missing_tools(hls=True)
    command = command or f"python -m flow.finn.deploy {build.work_dir} {out}"
    line = _missing_line(missing, command) if missing else None
    if not bitstream:
        missing, line = ["a bitstream request"], ("bitstream not requested (deploy.bitstream: "
                                                  f"false); to build it run: {command}")
    with finn_settings(out, build_dir=out / "finn_build"), finn_output_to(out / LOG_FILE):
        say("test vectors (FINN python execution)")
        _write_vectors(build, frames, expected, out / "io")
        say("stitched RTL and its out-of-context TCL")
        rtl = stitch_rtl(build.path("dataflow_rtl"), out / "rtl", board.part, build.clock_mhz)
        atomic_write_text(out / "vivado" / OOC_TCL, render_ooc_tcl(rtl, board, build.clock_mhz))
        figs = None
        if missing:
            shell = _without_vivado(build, board, out, line)
        else:
            say("bitstream (FINN's Vivado flow; hours for large designs)")
            shell, figs = _with_vivado(build, board, out)
        say("driver")
        settings, _ = make_driver(shell, board, build.clock_mhz, out / "driver")
    manifest = _write_manifest(out, _manifest(build, board, len(frames), settings, figs, line))
    if line:
        log.warning(line)
    return DeployResult(out_dir=str(out), manifest=manifest)


def main(argv: list[str] | None = None) -> int:
    """`python -m flow.finn.deploy FINN_DIR OUT_DIR`: deploy again with the folder's vectors."""
    ap = argparse.ArgumentParser(description="Deploy a FINN build (flow.finn.deploy).")
    ap.add_argument("finn_dir", help="the FINN build's folder (with estimate.json)")
    ap.add_argument("out_dir", help="a deployment folder made before (its io/ vectors are used)")
    ap.add_argument("--board", default=None, help="defaults to the build's board")
    args = ap.parse_args(argv)
    io_dir = Path(args.out_dir) / "io"
    if not (io_dir / "model_input.npy").is_file():
        raise DeployError(f"{io_dir / 'model_input.npy'} is missing: deploy from the flow first")
    frames = np.load(io_dir / "model_input.npy")
    expected_file = io_dir / "model_expected.npy"
    expected = np.load(expected_file) if expected_file.is_file() else None
    result = deploy(args.finn_dir, args.board, args.out_dir, frames, expected)
    return 0 if result.complete else 3


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
