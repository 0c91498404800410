"""The run as steps: artefacts per step, summary, resume after an interruption, clean restart."""
import itertools
import json

import pytest

import flow.pipeline as pipeline
from flow.config import parse_recipe
from flow.errors import ConfigError

TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "limit": 300},
    "train": {"epochs": 2},
    "qat": {"epochs": 1},
    "method": {"name": "uniform", "weight_bits": 3, "act_bits": 3},
    "hardware": {"board": "pynq-z1", "target_fps": 50000},
    "simulate": {"frames": 20},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    results = pipeline.run_recipe(parse_recipe(TINY), out)
    return out, results


def test_every_step_leaves_its_artefacts(finished_run):
    out, results = finished_run
    run = out / "tiny"
    assert [p.name for p in sorted(run.glob("0*"))] == [
        f"{i + 1:02d}_{name}" for i, name in enumerate(pipeline.STEP_NAMES)
    ]
    assert (run / "01_baseline" / "model.pt").is_file()
    assert (run / "04_export" / "model.qonnx.onnx").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["plan"]["layers"]["conv2"]["weight_bits"] == 3
    assert summary["hardware"]["fps"] > 0 and set(summary["hardware"]["totals"]) >= {"LUT", "DSP"}
    assert [r["layer"] for r in summary["layers"]] == ["conv1", "conv2", "conv3", "conv4", "fc1"]
    assert all("lut" in r and r["cycles"] > 0 for r in summary["layers"])
    assert results["export"]["max_rel_error"] < 1e-4
    assert results["finn"]["verification"]["max_rel_error"] < 0.05
    sim = results["simulate"]
    assert sim["frames"] == 20 and sim["mismatches"] == 0 and sim["output_words"] == 200
    assert sim["measured_cycles_per_frame"] == pytest.approx(sim["estimated_cycles_per_frame"],
                                                             rel=0.25)
    assert sim["bottleneck"]["node"] in (run / "06_simulate" / "node_cycles.txt").read_text()
    assert summary["simulation"]["accuracy"] == sim["accuracy"]


def test_rerun_resumes_and_interrupted_step_is_redone(finished_run, monkeypatch):
    out, _ = finished_run
    run = out / "tiny"
    baseline_mtime = (run / "01_baseline" / "model.pt").stat().st_mtime_ns
    # an interruption in the middle of 'finn': its folder must not look finished
    for step in ("05_finn", "06_simulate", "07_report"):
        pipeline.shutil.rmtree(run / step)

    def interrupted(run_, out_):
        (out_ / "half.txt").write_text("half")
        raise KeyboardInterrupt

    steps = dict(pipeline.STEPS)
    monkeypatch.setattr(pipeline, "STEPS", [(n, interrupted if n == "finn" else f)
                                            for n, f in steps.items()])
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_recipe(parse_recipe(TINY), out)
    assert not (run / "05_finn").exists() and (run / "05_finn.partial").exists()
    monkeypatch.setattr(pipeline, "STEPS", list(steps.items()))
    results = pipeline.run_recipe(parse_recipe(TINY), out)
    assert (run / "01_baseline" / "model.pt").stat().st_mtime_ns == baseline_mtime
    assert not (run / "05_finn.partial").exists() and not (run / "05_finn" / "half.txt").exists()
    assert results["finn"]["fit"]["fits"]


def test_changed_recipe_redoes_the_steps_it_affects(finished_run):
    out, _ = finished_run
    run = out / "tiny"
    kept = run / "03_qat" / "kept.txt"
    kept.write_text("from the same qat section")
    fewer = {**TINY, "simulate": {"frames": 10}}
    pipeline.run_recipe(parse_recipe(fewer), out)
    assert kept.exists()  # only the simulation (and the report) ran again
    assert json.loads((run / "06_simulate" / "result.json").read_text())["frames"] == 10

    stale = run / "01_baseline" / "kept.txt"
    stale.write_text("from the same data, model and train sections")
    changed = {**fewer, "method": {"name": "uniform", "weight_bits": 4, "act_bits": 4}}
    pipeline.run_recipe(parse_recipe(changed), out)
    assert stale.exists() and not kept.exists()  # a new plan: QAT onwards redone
    summary = json.loads((run / "summary.json").read_text())
    assert summary["plan"]["layers"]["conv2"]["weight_bits"] == 4


def test_first_changed_step():
    a = parse_recipe(TINY).model_dump()
    assert pipeline.first_changed_step(a, a) is None
    for section, value, step in [("train", {"epochs": 3}, "baseline"),
                                 ("qat", {"epochs": 2}, "plan"),
                                 ("hardware", {"board": "zcu104"}, "finn")]:
        b = parse_recipe({**TINY, section: value}).model_dump()
        assert pipeline.first_changed_step(a, b) == step


def test_unknown_step_and_mismatched_architecture(tmp_path):
    with pytest.raises(ConfigError, match="unknown step"):
        pipeline.run_recipe(parse_recipe(TINY), tmp_path, from_step="bogus")
    with pytest.raises(ConfigError, match="lenet.*takes inputs"):
        pipeline.run_recipe(parse_recipe({**TINY, "name": "t2", "model": {"arch": "lenet"}}), tmp_path)


def test_importance_command_on_a_run(finished_run, capsys):
    from flow.cli import main

    out, _ = finished_run
    run = out / "tiny"
    assert main(["importance", str(run), "--compare", "hessian", "quant"]) == 0
    saved = json.loads((run / "importance" / "compare_hessian_vs_quant.json").read_text())
    assert saved["layers"]["n"] == 5 and -1 <= saved["layers"]["tau"] <= 1
    assert main(["importance", str(run), "--compare", "act_l1", "act_l1"]) == 0
    same = json.loads((run / "importance" / "compare_act_l1_vs_act_l1.json").read_text())
    scores = json.loads((run / "importance" / "channel_importance.json").read_text())["act_l1"]
    for layer, r in same["per_layer"].items():
        pairs = list(itertools.combinations(scores[layer], 2))
        tied = sum(a == b for a, b in pairs)  # tau-a counts tied pairs (dead channels) as zero
        assert r["lev"] == 0 and r["tau"] == pytest.approx(1 - tied / len(pairs))
    assert main(["importance", str(run), "--compare", "act_l1", "quant"]) == 2
    assert "one is a layer measure" in capsys.readouterr().out


def test_simulate_command_on_a_run(finished_run, capsys):
    from flow.cli import main

    out, _ = finished_run
    run = out / "tiny"
    assert main(["simulate", str(run), "--frames", "5", "--backpressure", "0.3"]) == 0
    result = json.loads((run / "06_simulate" / "result.json").read_text())
    assert result["frames"] == 5 and result["mismatches"] == 0
    printed = capsys.readouterr().out
    assert "RTL simulation: 5 frames" in printed and "measured bottleneck: " in printed
    summary = json.loads((run / "summary.json").read_text())
    met = "met" if summary["hardware"]["fps"] >= 50000 else "MISSED"
    assert f"(target 50,000: {met})" in printed
    assert main(["simulate", str(run), "--backpressure", "1.5"]) == 2
    assert "simulate.backpressure" in capsys.readouterr().out
    assert main(["simulate", str(out)]) == 2
    assert "not a run folder with a finished 'finn' step" in capsys.readouterr().out
