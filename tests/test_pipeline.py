"""The run as steps, end to end through the `densiflow` command: artefacts, resume, recipe
changes, and the foundation issue's defects, each reproduced against a real finished run."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import flow.pipeline as pipeline
from flow.cli import main
from flow.core.errors import ArtefactError, ConfigError, RunFolderError, VerificationError
from flow.recipe.config import load_recipe, parse_recipe
from flow.report.summary import SCHEMA_VERSION, Summary, load_current_summary
from flow.run.folder import RunFolder
from flow.run.run import Run
from flow.run.table import STEP_NAMES, step_folder

pytestmark = [pytest.mark.slow, pytest.mark.rtlsim]

TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "limit": 300},
    "train": {"epochs": 2},
    "qat": {"epochs": 1},
    "method": {"name": "uniform", "weight_bits": 3, "act_bits": 3},
    "hardware": {"board": "pynq-z1", "target_fps": 50000},
    "simulate": {"frames": 20},
}
# a second run on another data set and board, without simulation
OTHER = {**TINY, "name": "other", "data": {"dataset": "synthetic", "limit": 200},
         "hardware": {"board": "zcu104", "target_fps": 50000}, "simulate": {"enabled": False}}


def write_recipe(folder: Path, data: dict, name: str | None = None) -> Path:
    path = folder / f"{name or data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tree_digest(root: Path) -> str:
    """Content and names of every file below root (links followed), to see that nothing changed."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".lock" not in path.name:
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def first_run(out) -> tuple[Path, str]:
    """The tiny recipe run by the `densiflow` command as a user runs it: (run folder, output)."""
    recipe = write_recipe(out, TINY)
    res = subprocess.run([sys.executable, "-m", "flow.cli", "run", str(recipe), "--out", str(out)],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    return out / "tiny", res.stdout + res.stderr


@pytest.fixture()
def run_dir(first_run) -> Path:
    return first_run[0]


def records(run_dir: Path) -> dict[str, str]:
    folder = RunFolder.open(run_dir)
    return {s: folder.record(step_folder(s)).id for s in STEP_NAMES}


def test_every_step_leaves_its_artefacts(first_run):
    run_dir, output = first_run
    assert [p.name for p in sorted(run_dir.glob("0*"))] == [
        step_folder(s) for s in STEP_NAMES]
    assert (run_dir / "01_baseline" / "model.pt").is_file()
    assert (run_dir / "04_export" / "model.qonnx.onnx").is_file()
    summary = Summary.model_validate_json((run_dir / "summary.json").read_text())
    assert summary.schema_version == SCHEMA_VERSION
    assert summary.plan.layers["conv2"].weight_bits == 3
    assert summary.hardware.fps > 0 and summary.hardware.resources.dsp > 0
    assert summary.hardware.resource_source.value == "finn_estimate"
    assert [r.layer for r in summary.layers] == ["conv1", "conv2", "conv3", "conv4", "fc1"]
    sim = summary.simulation
    assert sim.frames == 20 and sim.mismatches == 0 and sim.output_words == 200
    assert sim.agreement_with_pytorch == 1.0
    assert summary.accuracy.rtl_test == sim.rtl_test_accuracy
    assert sim.measured_cycles_per_frame == pytest.approx(sim.estimated_cycles_per_frame, rel=0.25)
    assert sim.bottleneck.node in (run_dir / "06_simulate" / "node_cycles.txt").read_text()
    # every accuracy the terminal shows names its stage
    assert "test accuracy: float " in output and "after QAT" in output
    assert "simulated RTL" in output


def test_finn_noise_goes_to_the_step_log(first_run):
    """Defect 15: FINN/QONNX warnings filled the terminal of every clean run."""
    run_dir, output = first_run
    for noise in ("inputDataType changing", "Assuming 4D input", "UserWarning"):
        assert noise not in output
    logs = "".join(p.read_text() for p in (run_dir / "05_finn").glob("*.log"))
    assert "inputDataType changing" in logs


def test_rerun_reuses_every_step(run_dir, out):
    before = records(run_dir)
    pipeline.run_recipe(parse_recipe(TINY), out)
    assert records(run_dir) == before


def test_interrupted_step_keeps_the_previous_result(run_dir, out, monkeypatch):
    before = records(run_dir)
    old_estimate = (run_dir / "05_finn" / "estimate.json").read_text()

    def interrupted(run_: Run, work: Path):
        (work / "half.txt").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.STEP_FUNCTIONS, "finn", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_recipe(parse_recipe(TINY), out, from_step="finn")
    # the finished finn step is still there, untouched, until a successor completes
    assert (run_dir / "05_finn" / "estimate.json").read_text() == old_estimate
    assert not (run_dir / "05_finn" / "half.txt").exists()
    # Defect 4: the summary no longer describes the current steps, and compare says so
    with pytest.raises(RunFolderError, match="out of date.*being redone"):
        load_current_summary(run_dir)
    monkeypatch.undo()
    pipeline.run_recipe(parse_recipe(TINY), out)
    after = records(run_dir)
    assert [after[s] == before[s] for s in STEP_NAMES] == [True] * 4 + [False] * 5
    assert not list((run_dir / ".steps").glob("05_finn.*/half.txt"))
    assert load_current_summary(run_dir).steps["finn"].id == after["finn"]


def test_changed_recipe_redoes_the_steps_it_affects(run_dir, out):
    before = records(run_dir)
    fewer = {**TINY, "simulate": {"frames": 10}}
    pipeline.run_recipe(parse_recipe(fewer), out)
    after = records(run_dir)
    assert [after[s] == before[s] for s in STEP_NAMES] == [True] * 5 + [False] * 4
    summary = Summary.model_validate_json((run_dir / "summary.json").read_text())
    assert summary.simulation.frames == 10
    pipeline.run_recipe(parse_recipe(TINY), out)  # back to 20 frames for the other tests


def test_bad_recipe_changes_nothing(run_dir, out, capsys):
    """Defect 2: a bad method or dataset value destroyed a finished run before it was rejected."""
    before = tree_digest(run_dir)
    for bad in ({**TINY, "method": {"name": "uniform", "weight_bits": 0, "act_bits": 3}},
                {**TINY, "data": {"dataset": "imagenet"}},
                {**TINY, "simulate": {"frames": 100000}}):
        assert main(["run", str(write_recipe(out, bad, "bad")), "--out", str(out)]) == 2
        assert tree_digest(run_dir) == before
    printed = capsys.readouterr().out
    assert "method.weight_bits" in printed and "data.dataset" in printed
    assert "simulate.frames: 100000 is more than the test split holds; allowed: 1..359" in printed


def test_foreign_folder_with_a_recipe_name_is_left_alone(out, capsys):
    """Defect 1: any folder without recipe.yaml was deleted, e.g. the simulator cache."""
    foreign = out / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["run", str(write_recipe(out, {**TINY, "name": "mine"})), "--out", str(out)]) == 2
    assert "not a densiflow run folder" in capsys.readouterr().out
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_second_process_is_refused(run_dir, out, capsys):
    """Defect 5: two `densiflow run` on one recipe deleted each other's .partial folders."""
    with RunFolder.open(run_dir).lock():
        assert main(["run", str(write_recipe(out, TINY)), "--out", str(out)]) == 2
    assert f"in use by another densiflow process (pid {os.getpid()})" in capsys.readouterr().out


def test_damaged_artefacts_are_named_and_nothing_is_removed(run_dir, out, capsys):
    """Defect 7 (and 6): a changed 03_qat/model.pt went unnoticed or crashed with a traceback."""
    model = run_dir / "03_qat" / "model.pt"
    good = model.read_bytes()
    sim_before = (run_dir / "06_simulate" / "result.json").read_text()
    recipe = str(write_recipe(out, TINY))
    try:
        state = torch.load(model, weights_only=True)
        state = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in state.items()}
        torch.save(state, model)  # noise, as in the issue
        assert main(["simulate", str(run_dir), "--frames", "5"]) == 2
        assert main(["run", recipe, "--out", str(out), "--from", "simulate"]) == 2
        model.write_bytes(good[: len(good) // 2])  # truncated
        assert main(["run", recipe, "--out", str(out)]) == 2
        printed = capsys.readouterr().out
        assert printed.count("03_qat/model.pt is damaged or was changed after step 'qat'") == 3
        assert "Traceback" not in printed and "--from qat" in printed
        assert (run_dir / "06_simulate" / "result.json").read_text() == sim_before
    finally:
        model.write_bytes(good)
    pipeline.run_recipe(parse_recipe(TINY), out)


def test_rtl_must_agree_with_pytorch(run_dir):
    """Defect 6: RTL checked against FINN's python execution only; noise in the trained network
    still gave "0 mismatching words" and exit 0."""
    from flow.sim.verify import verify_rtl

    run = Run(load_recipe(run_dir / "recipe.yaml"), RunFolder.open(run_dir))
    build = run.finn_build()
    paths = {k: build.path(k) for k in build.paths}
    x, y = run.data.x_test[:8].numpy(), run.data.y_test[:8].numpy()
    wrong = np.eye(10)[(y + 1) % 10]  # a network that never predicts what the RTL predicts
    with pytest.raises(VerificationError, match="predicts what PyTorch predicts on 0.0 %"):
        verify_rtl(paths, x, y, wrong, run_dir / "scratch", build.part, build.clock_mhz,
                     build.performance.steady_state_cycles, cache_dir=run.rtlsim_cache)


def test_rtl_mismatch_raises(run_dir, monkeypatch):
    import flow.sim.verify as validate

    run = Run(load_recipe(run_dir / "recipe.yaml"), RunFolder.open(run_dir))
    real = validate.partition_streams

    def one_word_off(*args):
        part_in, part_out, final = real(*args)
        part_out = part_out.copy()
        part_out.flat[3] += 1
        return part_in, part_out, final

    monkeypatch.setattr(validate, "partition_streams", one_word_off)
    with pytest.raises(VerificationError, match="differs from FINN's python execution in 1 of"):
        validate.verify_run(run, run_dir / "scratch2", 4, 0.0, 1.0)


def test_export_verification_failure(run_dir):
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.ml.export import verify_export

    run = Run(load_recipe(run_dir / "recipe.yaml"), RunFolder.open(run_dir))
    model = run.quant_model()
    with torch.no_grad():
        model.blocks["conv2"][0].weight.mul_(-1)
    qonnx = ModelWrapper(str(run.artefact("export", "model.qonnx.onnx")))
    with pytest.raises(VerificationError, match="QONNX export differs from PyTorch"):
        verify_export(qonnx, model, run.data.x_test[:8])


def test_simulate_command_leaves_the_run_alone(run_dir, capsys):
    """Defect 13: --frames 5000 was cut to 359 silently; simulate rewrote recipe.yaml."""
    before = tree_digest(run_dir)
    assert main(["simulate", str(run_dir), "--frames", "5", "--backpressure", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "RTL simulation: 5 frames, backpressure 0.3, 0 mismatching words" in printed
    saved = json.loads((run_dir / "simulations" / "frames5_bp0.3" / "result.json").read_text())
    assert saved["frames"] == 5 and saved["mismatches"] == 0
    assert (run_dir / "simulations" / "frames5_bp0.3" / "node_cycles.txt").is_file()
    (run_dir / "simulations").rename(run_dir.parent / "sims_moved")
    assert tree_digest(run_dir) == before  # recipe, steps and summary untouched
    assert main(["simulate", str(run_dir), "--frames", "5000"]) == 2
    assert "frames: 5000 is more than the test split holds; allowed: 1..359" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["simulate", str(run_dir), "--backpressure", "1.5"])


def test_garbled_saved_recipe_and_renamed_folder(run_dir, capsys):
    saved = run_dir / "recipe.yaml"
    text = saved.read_text()
    try:
        saved.write_text("name: tiny\nmethod: {name: uniform, weight_bits: 3\n")
        assert main(["simulate", str(run_dir)]) == 2
        assert "saved recipe.yaml is unreadable" in capsys.readouterr().out
    finally:
        saved.write_text(text)


def test_simulation_disabled_and_compare(run_dir, out, capsys):
    """Defect 3: simulate.enabled false ended in KeyError 'frames'. Defect 12: compare mixed data
    sets and boards without a word and listed a run given twice twice."""
    assert main(["run", str(write_recipe(out, OTHER)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RTL simulation: skipped (simulate.enabled is false)" in printed
    other = out / "other"
    assert main(["compare", str(run_dir), str(other), str(run_dir), "--out",
                 str(out / "compare")]) == 0
    printed = capsys.readouterr().out
    assert "different data sets (digits, synthetic)" in printed
    assert "different boards (pynq-z1, zcu104)" in printed
    lines = (out / "compare" / "comparison.csv").read_text().splitlines()
    assert lines[0].startswith("run,dataset,board,method") and len(lines) == 3
    assert (out / "compare" / "comparison.png").stat().st_size > 10_000
    (other / "summary.json").write_text("{not json")
    assert main(["compare", str(run_dir), str(other)]) == 2
    assert "summary.json is damaged" in capsys.readouterr().out


def test_ctrl_c_prints_one_line(out, monkeypatch, capsys):
    """Defect 11: Ctrl-C printed 40 lines of traceback."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_recipe", interrupted)
    assert main(["run", str(write_recipe(out, TINY)), "--out", str(out)]) == 130
    assert capsys.readouterr().out.strip() == \
        "interrupted; run the same command again to resume"


def test_unknown_step_is_refused(out):
    with pytest.raises(ConfigError, match="unknown step"):
        pipeline.run_recipe(parse_recipe(TINY), out, from_step="bogus")


def test_mismatched_architecture_is_refused_before_any_write(out):
    with pytest.raises(ConfigError, match="lenet.*takes inputs"):
        pipeline.run_recipe(parse_recipe({**TINY, "name": "t2", "model": {"arch": "lenet"}}), out)
    assert not (out / "t2").exists()


def test_artefact_check_on_reuse(run_dir, out):
    onnx = run_dir / "04_export" / "model.qonnx.onnx"
    good = onnx.read_bytes()
    try:
        onnx.write_bytes(good[:100])
        with pytest.raises(ArtefactError, match="04_export/model.qonnx.onnx is damaged"):
            pipeline.run_recipe(parse_recipe(TINY), out)
    finally:
        onnx.write_bytes(good)


def test_importance_command_on_a_run(run_dir):
    import itertools

    assert main(["importance", str(run_dir), "--compare", "hessian", "quant"]) == 0
    saved = json.loads((run_dir / "importance" / "compare_hessian_vs_quant.json").read_text())
    assert saved["layers"]["n"] == 5 and -1 <= saved["layers"]["tau"] <= 1
    assert main(["importance", str(run_dir), "--compare", "act_l1", "act_l1"]) == 0
    same = json.loads((run_dir / "importance" / "compare_act_l1_vs_act_l1.json").read_text())
    scores = json.loads((run_dir / "importance" / "channel_importance.json").read_text())["act_l1"]
    for layer, r in same["per_layer"].items():
        pairs = list(itertools.combinations(scores[layer], 2))
        tied = sum(a == b for a, b in pairs)  # tau-a counts tied pairs (dead channels) as zero
        assert r["lev"] == 0 and r["tau"] == pytest.approx(1 - tied / len(pairs))
    assert main(["importance", str(run_dir), "--compare", "act_l1", "quant"]) == 2
