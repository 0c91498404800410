"""Deployment of a FINN build without Vivado: stitched RTL, TCL, driver, vectors, manifest; the
driver against FINN's own packing with a stand-in `pynq`; FINN's Vivado call seen by a fake
`vivado` on PATH. The run with the real tools is the manual check in flow/finn/deploy.py."""
import hashlib
import importlib
import json
import logging
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Uint8ActPerTensorFloat
from qonnx.core.modelwrapper import ModelWrapper
from torch import nn

from flow.finn import FinnBuild, ParameterError, estimate_qonnx
from flow.finn.deploy import (
    BITFILE,
    MANIFEST,
    PLACEHOLDER,
    DeployResult,
    deploy,
    refresh_manifest,
    vivado_available,
)
from flow.finn.errors import DeployError, VivadoError
from flow.finn.verify import execute_frames
from flow.finn.vivado import estimate_error, utilisation, worst_slack
from hw_models.resources import Resources


class SmallCNN(nn.Module):
    """1x6x6 integers 0..15 -> conv3x3 (4) -> linear (5), 4-bit, all RTL."""

    def __init__(self):
        super().__init__()
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=4)
        self.conv = QuantConv2d(1, 4, 3, bias=False, weight_bit_width=4)
        self.act = QuantReLU(bit_width=4)
        self.fc = QuantLinear(64, 5, bias=False, weight_bit_width=4)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv(self.inp(x))), 1))


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> FinnBuild:
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randint(0, 16, (64, 1, 6, 6)).float()
    with torch.no_grad(), calibration_mode(model):
        model(x)
    model.eval()
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_qonnx(model, input_t=x[:1], export_path=str(path), dynamo=False)
    return estimate_qonnx(path, "pynq-z1", 100_000, path.parent / "finn", input_dtype="UINT4",
                          verify_frames=0)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 16, (6, 1, 6, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def deployed(build, frames, tmp_path_factory) -> DeployResult:
    mp = pytest.MonkeyPatch()
    mp.delenv("XILINX_VIVADO", raising=False)
    try:
        return deploy(build, None, tmp_path_factory.mktemp("deploy") / "out", frames,
                      expected=frames.reshape(len(frames), -1)[:, :5])
    finally:
        mp.undo()


# ----------------------------------------------------------------------------- without Vivado


def test_without_vivado_the_folder_is_complete_but_the_bitfile(deployed, build):
    out, m = Path(deployed.out_dir), deployed.manifest
    assert not deployed.complete and m.bitfile_sha256 is None and not (out / BITFILE).exists()
    assert "XILINX_VIVADO" in m.missing and "\n" not in m.missing
    assert f"python -m flow.finn.deploy {build.work_dir} {out}" in m.missing
    assert m.missing in (out / PLACEHOLDER).read_text()
    assert (m.board, m.part, m.platform, m.clock_mhz) == ("Pynq-Z1", build.part, "zynq-iodma",
                                                          build.clock_mhz)
    assert m.agent_sha256 is None and m.vivado is None
    for name in ("driver/driver.py", "driver/settings.json", "io/input.npy",
                 "io/expected_output.npy", "io/model_input.npy", "io/model_output.npy",
                 "io/model_expected.npy", "rtl/top.sv", "rtl/filelist.f", "vivado/ooc_synth.tcl"):
        assert (out / name).is_file(), name


def test_manifest_hashes_every_deployed_file(deployed):
    out = Path(deployed.out_dir)
    listed = {f.path: f for f in deployed.manifest.files}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
               and p.relative_to(out).parts[0] not in ("finn_build", "finn.log", MANIFEST,
                                                       ".densiflow_deployment")}
    assert set(listed) == on_disk
    for rel, entry in listed.items():
        data = (out / rel).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size_bytes == len(data)
    saved = json.loads((out / MANIFEST).read_text())
    assert saved == json.loads(deployed.manifest.model_dump_json())
    assert DeployResult.model_validate_json(deployed.model_dump_json()) == deployed


def test_stitched_rtl_lists_every_node_and_file(deployed, build):
    rtl = Path(deployed.out_dir) / "rtl"
    files = (rtl / "filelist.f").read_text().split()
    assert files[-1] == "top.sv" and all((rtl / f).is_file() for f in files)
    pkgs = [i for i, f in enumerate(files) if f.endswith("_pkg.sv")]
    assert pkgs == list(range(len(pkgs)))  # packages first
    top = (rtl / "top.sv").read_text()
    for node in ModelWrapper(str(build.path("dataflow_rtl"))).graph.node:
        assert f" {node.name} (" in top, node.name  # one instance per FINN node
        assert (rtl / "nodes" / node.name).is_dir()
    for path in (top.split('THRESHOLDS_PATH("')[1:] + top.split('INIT_FILE("')[1:]):
        target = path.split('"')[0]
        assert Path(target).parent.is_dir() and target.startswith(str(rtl / "nodes"))


def test_ooc_tcl_builds_the_rtl_for_the_board(deployed, build):
    tcl = (Path(deployed.out_dir) / "vivado" / "ooc_synth.tcl").read_text()
    for needed in (f"set part {build.part}", f"set period_ns {1000 / build.clock_mhz:g}",
                   "set top rtlsim_top", "filelist.f", "synth_design -top $top -part $part",
                   "route_design", "report_timing_summary", "report_utilization -hierarchical"):
        assert needed in tcl, needed
    assert str(Path(deployed.out_dir) / "rtl" / "nodes") in tcl  # remapped when the folder moves


def test_vectors_are_finns_python_execution(deployed, build, frames):
    io = Path(deployed.out_dir) / "io"
    assert np.array_equal(np.load(io / "model_input.npy"), frames)
    accel_in, accel_out = np.load(io / "input.npy"), np.load(io / "expected_output.npy")
    m = deployed.manifest
    assert accel_in.shape == (len(frames), *m.in_shape[1:]) == (len(frames), 6, 6, 1)  # NHWC
    assert np.array_equal(accel_in[..., 0], frames[:, 0])
    assert accel_out.shape == (len(frames), *m.out_shape[1:])
    # the model's outputs: the accelerator's scaled by the software Mul, equal to QONNX's
    final = np.load(io / "model_output.npy")
    qonnx = execute_frames(ModelWrapper(str(build.path("qonnx"))), frames)
    assert np.allclose(final, qonnx, rtol=1e-5, atol=1e-6)
    assert np.array_equal(final.argmax(1), accel_out.reshape(len(frames), -1).argmax(1))


def test_second_deploy_replaces_ours_and_foreign_folders_are_refused(deployed, build, frames,
                                                                     tmp_path, monkeypatch):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    again = deploy(build.work_dir, "Pynq-Z1", deployed.out_dir, frames[:2])
    assert again.manifest.frames == 2 and not (Path(deployed.out_dir) / "io" /
                                               "model_expected.npy").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DeployError, match="not a deployment folder densiflow made"):
        deploy(build, None, foreign, frames)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_bad_inputs_name_the_parameter(build, frames, tmp_path):
    with pytest.raises(ParameterError, match=r"^frames must be an array of shape \(n, 1, 6, 6\)"):
        deploy(build, None, tmp_path / "a", frames[:, :, :5])
    with pytest.raises(ParameterError, match=r"^expected must hold one output per frame \(6\)"):
        deploy(build, None, tmp_path / "b", frames, expected=np.zeros((2, 5)))
    with pytest.raises(DeployError, match="differs from the FINN build's Pynq-Z1"):
        deploy(build, "zcu104", tmp_path / "c", frames)
    assert not any(tmp_path.iterdir())


def test_refresh_manifest_hashes_the_agent(deployed):
    out = Path(deployed.out_dir)
    agent = Path(__file__).resolve().parents[1] / "hw_models" / "agent.py"
    if not agent.is_file():
        pytest.skip("hw_models/agent.py (the HIL agent) is not in this checkout")
    shutil.copyfile(agent, out / "agent.py")
    try:
        m = refresh_manifest(out)
        assert m.agent_sha256 == hashlib.sha256(agent.read_bytes()).hexdigest()
        assert "agent.py" in {f.path for f in m.files}
    finally:
        (out / "agent.py").unlink()
        refresh_manifest(out)


# ----------------------------------------------------------------------------- the driver


PYNQ_STAND_IN = '''
"""Stand-in for pynq (test only): buffers are numpy arrays; IPs come from HARDWARE."""
import numpy as np

HARDWARE = {}  # name -> object with read/write (or start), set by the test


class PynqBuffer(np.ndarray):
    device_address = 0

    def flush(self):
        pass

    def invalidate(self):
        pass


BUFFERS = []


def allocate(shape, dtype, cacheable=True, **kwargs):
    buf = np.zeros(shape, dtype=dtype).view(PynqBuffer)
    buf.device_address = 0x1_0000_0000 * (len(BUFFERS) + 1) + 0x40
    BUFFERS.append(buf)
    return buf


class Overlay:
    def __init__(self, bitfile_name, download=True, device=None):
        self.bitfile_name = bitfile_name

    def __getattr__(self, name):
        if name in HARDWARE:
            return HARDWARE[name]
        raise AttributeError(name)
'''


class IODMA:
    """FINN's IODMA registers: 0x10/0x14 buffer address, 0x1C frames, 0x00 start/done/idle."""

    def __init__(self, name, log, on_start):
        self.name, self.log, self.on_start, self.regs = name, log, on_start, {0x00: 0x4}

    def write(self, offset, value):
        self.log.append((self.name, offset, value))
        self.regs[offset] = value
        if offset == 0x00 and value == 1:
            self.on_start(self)

    def read(self, offset):
        return self.regs.get(offset, 0)

    @property
    def address(self):
        return self.regs[0x10] | self.regs[0x14] << 32


@pytest.fixture
def driver(deployed, tmp_path, monkeypatch):
    """The deployment's driver.py imported with the stand-in pynq on sys.path."""
    (tmp_path / "pynq").mkdir()
    (tmp_path / "pynq" / "__init__.py").write_text(PYNQ_STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(deployed.out_dir) / "driver"))
    for name in ("pynq", "driver"):
        sys.modules.pop(name, None)
    module = importlib.import_module("driver")
    yield module
    for name in ("pynq", "driver"):
        sys.modules.pop(name, None)


def _finn_packed(values, dtype, folded):
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.core.datatype import DataType

    return np.ascontiguousarray(finnpy_to_packed_bytearray(
        np.asarray(values).reshape(folded), DataType[dtype], reverse_inner=True,
        reverse_endian=True))


def test_driver_runs_the_vectors_through_finns_iodma_protocol(driver, deployed):
    pynq = sys.modules["pynq"]
    io = Path(deployed.out_dir) / "io"
    x, want = np.load(io / "input.npy"), np.load(io / "expected_output.npy")
    d, m, n = driver.io_shape_dict, deployed.manifest, len(x)
    fold_in = (n, *d["ishape_folded"][0][1:])
    fold_out = (n, *d["oshape_folded"][0][1:])
    log, seen = [], {}

    def by_address(dma):
        return next(b for b in pynq.BUFFERS if b.device_address == dma.address)

    def input_started(dma):  # the accelerator: reads FINN-packed frames, writes FINN-packed outputs
        seen["input"] = np.array(by_address(dma))
        assert dma.regs[0x1C] == n
        out = by_address(pynq.HARDWARE["odma0"])
        out[:] = _finn_packed(want, m.out_dtype, fold_out)
        pynq.HARDWARE["odma0"].regs[0x00] = 0x2 | 0x4

    pynq.HARDWARE.update(idma0=IODMA("idma0", log, input_started),
                         odma0=IODMA("odma0", log, lambda dma: None))
    accel = driver.FINNExampleOverlay("finn-accel.bit", driver.SETTINGS["platform"], d,
                                      batch_size=n)
    got = accel.execute(x)
    assert np.array_equal(seen["input"], _finn_packed(x, m.in_dtype, fold_in))
    assert got.shape == want.shape and np.array_equal(got, want)
    starts = [name for name, off, val in log if off == 0x00]
    assert starts == ["odma0", "idma0"]  # the output DMA waits before the input streams
    assert driver.SETTINGS["fclk_mhz"] == pytest.approx(m.clock_mhz)


def test_driver_times_out_when_the_accelerator_hangs(driver):
    pynq = sys.modules["pynq"]
    pynq.HARDWARE.update(idma0=IODMA("idma0", [], lambda dma: None),
                         odma0=IODMA("odma0", [], lambda dma: None))
    accel = driver.FINNExampleOverlay("x.bit", "zynq-iodma", driver.io_shape_dict,
                                      timeout_s=0.05)
    frame = np.zeros(driver.io_shape_dict["ishape_normal"][0])
    with pytest.raises(TimeoutError, match="did not finish 1 frames"):
        accel.execute(frame)


@pytest.mark.parametrize("dtype, shape", [
    ("UINT5", (3, 6, 6, 1)), ("INT4", (2, 4, 4, 9)), ("INT15", (4, 10, 1)), ("UINT8", (2, 3, 7)),
    ("BINARY", (2, 13)), ("BIPOLAR", (2, 16)), ("INT2", (2, 3, 5)), ("INT24", (2, 3)),
])
def test_driver_packing_is_finns(driver, dtype, shape):
    from qonnx.core.datatype import DataType

    dt = DataType[dtype]
    rng = np.random.default_rng(len(shape))
    x = rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape).astype(np.float64)
    if dtype == "BIPOLAR":
        x = np.where(x > 0, 1.0, -1.0)
    packed = driver.pack(x, f"DataType['{dtype}']")
    assert np.array_equal(packed, _finn_packed(x, dtype, shape))
    assert np.array_equal(driver.unpack(packed, dtype, shape), x)
    with pytest.raises(ValueError, match="integer datatypes only"):
        driver.pack(x, "FLOAT32")


# ----------------------------------------------------------------------------- with Vivado


WRAPPER = "finn_vivado_stitch_proj.srcs/sources_1/bd/finn_design/hdl/finn_design_wrapper.v"


def _tool(folder: Path, name: str, record: Path, makes: str = "") -> None:
    """A stand-in for a Xilinx tool: records `name|folder|arguments`, makes `makes`, fails."""
    make = f'mkdir -p "$(dirname {makes})" && touch {makes}\n' if makes else ""
    script = folder / name
    script.write_text(f'#!/bin/sh\nprintf "%s|%s|%s\\n" "{name}" "$PWD" "$*" >> "{record}"\n'
                      f"{make}exit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.slow  # FINN's whole stitch + ZynqBuild flow up to the first fake-Vivado call
def test_with_vivado_finns_flow_calls_vivado_and_vitis_hls(build, frames, tmp_path, monkeypatch):
    tools, record = tmp_path / "bin", tmp_path / "calls.txt"
    tools.mkdir()
    _tool(tools, "vivado", record, makes=WRAPPER)  # the file FINN waits for after the stitch
    _tool(tools, "vitis_hls", record)
    monkeypatch.setenv("XILINX_VIVADO", str(tmp_path / "Xilinx" / "Vivado" / "2024.2"))
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    assert vivado_available()
    out = tmp_path / "out"
    with pytest.raises(VivadoError, match=r"Zynq project \(ZynqBuild\) failed"):
        deploy(build, None, out, frames)
    calls = [line.split("|") for line in record.read_text().splitlines()]
    # 1. the stitched IP: vivado in batch mode on FINN's make_project.tcl, in the deployment
    tool, cwd, args = calls[0]
    assert (tool, args) == ("vivado", "-mode batch -source make_project.tcl")
    assert Path(cwd).is_relative_to(out / "finn_build")
    tcl = (Path(cwd) / "make_project.tcl").read_text()
    assert f"create_project finn_vivado_stitch_proj {cwd} -part {build.part}" in tcl
    for node in ModelWrapper(str(build.path("dataflow_rtl"))).graph.node:
        assert node.name in tcl  # every layer is stitched
    # 2. ZynqBuild's IODMAs (HLS): vitis_hls on each one's synthesis script, for the part
    hls = [c for c in calls[1:] if c[0] == "vitis_hls"]
    assert hls and all(c[0] == "vitis_hls" for c in calls[1:])
    for _, cwd, args in hls:
        script = Path(cwd) / Path(args).name
        assert "IODMA" in script.name and script.is_file()
        text = script.read_text()
        assert f'set config_proj_part "{build.part}"' in text
        assert f"set config_clkperiod {1000 / build.clock_mhz:g}" in text
    # the half-made folder is still densiflow's: deploying again without Vivado works
    monkeypatch.delenv("XILINX_VIVADO")
    assert not deploy(build, None, out, frames).complete


# ----------------------------------------------------------------------------- Vivado's reports


TIMING = """\
------------------------------------------------------------------------------------------------
| Design Timing Summary
| ---------------------
------------------------------------------------------------------------------------------------

    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)
    -------      -------  ---------------------  -------------------      -------      -------
     {wns}        0.000                      0                 1234        0.052        0.000
"""

UTILISATION = """<?xml version="1.0" encoding="UTF-8"?>
<RptDoc><section title="Utilization by Hierarchy"><table>
<tablerow><tableheader contents="Instance"/><tableheader contents="Module"/>
<tableheader contents="Total LUTs"/><tableheader contents="Logic LUTs"/>
<tableheader contents="LUTRAMs"/><tableheader contents="SRLs"/><tableheader contents="FFs"/>
<tableheader contents="RAMB36"/><tableheader contents="RAMB18"/>
<tableheader contents="DSP Blocks"/></tablerow>
<tablerow><tablecell contents="(top)"/><tablecell contents="top"/><tablecell contents="1200"/>
<tablecell contents="1100"/><tablecell contents="60"/><tablecell contents="40"/>
<tablecell contents="900"/><tablecell contents="3"/><tablecell contents="2"/>
<tablecell contents="8"/></tablerow>
</table></section></RptDoc>
"""


@pytest.mark.parametrize("wns, expected", [("1.234", 1.234), ("-0.317", -0.317), ("NA", None)])
def test_worst_slack_from_a_timing_summary(tmp_path, wns, expected):
    path = tmp_path / "timing.rpt"
    path.write_text(TIMING.format(wns=wns))
    assert worst_slack(path) == expected


def test_utilisation_through_finns_parser_and_the_estimate_error(tmp_path, build):
    path = tmp_path / "util.xml"
    path.write_text(UTILISATION)
    model = ModelWrapper(str(build.path("dataflow_rtl")))
    used = utilisation(path, model, "(top)")
    assert used == Resources(lut=1200, ff=900, bram18=2 * 3 + 2, dsp=8, uram=0)
    err = estimate_error(Resources(lut=600, bram18=8, dsp=10), used)
    assert err == {"lut": -0.5, "bram18": 0.0, "uram": None, "dsp": 0.25}
    with pytest.raises(VivadoError, match="no utilisation row for 'nope'"):
        utilisation(path, model, "nope")


def test_missing_line_is_logged_once(build, frames, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    with caplog.at_level(logging.WARNING, logger="flow.finn.deploy"):
        result = deploy(build, None, tmp_path / "o", frames[:1])
    lines = [r.getMessage() for r in caplog.records if r.name == "flow.finn.deploy"]
    assert lines == [result.manifest.missing]


def test_vivado_is_the_reference_of_the_summary(build):
    """Where the bitstream was built, Vivado's post-route counts are the run's resources and its
    board fit; FINN's and Yosys' errors are stated against them per resource."""
    from types import SimpleNamespace

    from flow.finn.vivado import VivadoFigures
    from flow.report.summary import _hardware, vivado_line, vivado_summary
    from hw_models.fit import fit
    from hw_models.resources import ResourceSource

    used = Resources(lut=1200, ff=900, bram18=8, dsp=8)
    viv = VivadoFigures(scope="accelerator", resources=used, finn_estimate=build.totals,
                        estimate_error=estimate_error(build.totals, used), wns_ns=0.4,
                        timing_met=True, reports=[])
    hw = _hardware(build, 1000.0, None, viv)
    assert hw.resource_source == ResourceSource.VIVADO and hw.resources == used
    assert hw.fits == fit(used, build.board, ResourceSource.VIVADO).fits
    assert hw.vivado.finn_error == viv.estimate_error and hw.vivado.yosys_error is None
    yosys = SimpleNamespace(report=SimpleNamespace(resources=Resources(lut=1800, bram18=6, dsp=8)))
    v = vivado_summary(viv, yosys)
    assert v.yosys_error == {"lut": 0.5, "bram18": -0.25, "uram": None, "dsp": 0.0}
    assert "Yosys synthesis LUT +50 %, BRAM18 -25 %, URAM -, DSP +0 %" in vivado_line(v)
