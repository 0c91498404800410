"""Checked at load (issue 16, defect 8): plan files against the network before any training, and
summary.json's schema version and checksum wherever it is read. Fast tier: nothing here trains."""
import json

import pytest
import yaml

from flow.cli import main
from flow.core.errors import ArtefactError, ConfigError
from flow.core.io import file_sha256
from flow.models import get_architecture
from flow.recipe.config import load_recipe
from flow.recipe.plan import CompressionPlan
from flow.report.summary import (
    SCHEMA_VERSION,
    AccuracyByStage,
    HardwareSummary,
    Memory,
    Summary,
    read_summary,
    write_summary,
)
from flow.run.folder import RunFolder
from hw_models.resources import Resources, ResourceSource

ARCH = get_architecture("digits_cnn")


def _plan_recipe(tmp_path, plan: dict, **recipe) -> str:
    """A digits recipe using `plan` (written to p.yaml beside it); returns the recipe's path."""
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(plan))
    data = {"name": "planned", "method": {"name": "plan", "path": "p.yaml"}, **recipe}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _uniform() -> dict:
    return ARCH.uniform_plan(4, 4, 5).to_dict()


def _without_conv3() -> dict:
    plan = _uniform()
    del plan["layers"]["conv3"]
    return plan


def _with_conv9() -> dict:
    plan = _uniform()
    plan["layers"]["conv9"] = plan["layers"]["conv2"]
    return plan


def _keep_32_of_32() -> dict:
    plan = _uniform()
    plan["layers"]["conv2"]["keep"] = [0, 32]  # conv2 has channels 0..31
    return plan


def _classifier_act_bits() -> dict:
    plan = _uniform()
    plan["layers"]["fc1"]["act_bits"] = 4
    return plan


@pytest.mark.parametrize("plan, message", [
    (_without_conv3, r"\['conv3'\] are missing"),
    (_with_conv9, r"\['conv9'\] do not exist"),
    (_keep_32_of_32, r"layers\.conv2\.keep: channel 32 does not exist; .*0\.\.31"),
    (_classifier_act_bits, r"layers\.fc1\.act_bits: the classifier"),
])
def test_a_plan_file_that_does_not_fit_the_network_is_refused_at_load(tmp_path, plan, message):
    """It was caught at the plan step, after the baseline had trained, without the file's name."""
    recipe = _plan_recipe(tmp_path, plan())
    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(recipe)
    assert f"plan file {tmp_path / 'p.yaml'}" in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_a_misfit_plan_before_the_run_folder_exists(tmp_path, capsys):
    recipe = _plan_recipe(tmp_path, _without_conv3())
    out = tmp_path / "out"
    assert main(["run", recipe, "--out", str(out)]) == 2
    text = capsys.readouterr().out
    assert "conv3" in text and str(tmp_path / "p.yaml") in text
    assert not out.exists()


def test_a_search_seed_plan_file_is_checked_too(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(_with_conv9()))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(
        {"name": "s", "method": {"name": "search", "seeds": [{"name": "plan", "path": "p.yaml"}]}}))
    with pytest.raises(ConfigError, match=r"plan file .*p\.yaml does not fit .*conv9"):
        load_recipe(tmp_path / "r.yaml")


def test_a_fitting_plan_file_loads(tmp_path):
    recipe = load_recipe(_plan_recipe(tmp_path, _uniform()))
    assert recipe.method.plan_files() == [str((tmp_path / "p.yaml").resolve())]


def _summary(accuracy: float = 0.9) -> Summary:
    none = Resources()
    hardware = HardwareSummary(
        resource_source=ResourceSource.FINN_ESTIMATE, resources=none, finn_estimate=none,
        synthesis=None, folding_report=None, fifo_sizing=None, fits=True, over=[], fps=1e5,
        latency_us=1.0, steady_state_cycles=100, clock_mhz=100.0, target_fps=1e5,
        target_met=True, hls_nodes=[])
    return Summary(
        run="r", dataset="digits", arch="digits_cnn", method="uniform", board="pynq-z1",
        target="rtl", accuracy=AccuracyByStage(float_test=0.95, qat_test=accuracy),
        accuracy_drop_points=5.0, memory=Memory(weight_mbit=0.1, act_mbit=0.01, total_mbit=0.11,
                                                avg_bits=4.0, params=1000),
        performance_density=818.0, hardware=hardware, simulation=None,
        simulation_skipped="off", deployment=None, plan=CompressionPlan(input_bits=8),
        layers=[], steps={})


@pytest.fixture()
def run_dir(tmp_path):
    RunFolder.create_or_open(tmp_path / "r", "r")
    write_summary(tmp_path / "r", _summary())
    return tmp_path / "r"


def _edit_summary(run_dir, **changes) -> None:
    path = run_dir / "summary.json"
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = data
        for p in parents:
            target = target[p]
        target[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_a_written_summary_reads_back(run_dir):
    assert read_summary(run_dir) == _summary()


@pytest.mark.parametrize("changes, message", [
    ({"schema_version": 99},
     f"has schema_version 99; this densiflow reads version {SCHEMA_VERSION}; "),
    ({"accuracy__qat_test": 0.99}, "was changed after densiflow wrote it"),
])
def test_compare_refuses_another_version_and_a_hand_edit(run_dir, capsys, changes, message):
    """Both were compared without a word."""
    from flow.report.compare import rows_of

    _edit_summary(run_dir, **changes)
    with pytest.raises(ArtefactError) as err:
        rows_of(run_dir)
    text = str(err.value)
    assert text.startswith(f"{run_dir / 'summary.json'} {message}") and "\n" not in text
    # the command repairs this run where it is (its --out), not a new one under ./build/out
    assert text.endswith(f"rewrite it: densiflow run {run_dir / 'recipe.yaml'} --out "
                         f"{run_dir.parent} --from report")
    assert main(["compare", str(run_dir)]) == 2
    assert message.split(";")[0] in " ".join(capsys.readouterr().out.split())


def test_a_summary_without_its_checksum_is_refused(run_dir):
    (run_dir / "summary.json.sha256").unlink()
    with pytest.raises(ArtefactError, match="has no checksum file summary.json.sha256"):
        read_summary(run_dir)


def test_the_html_report_reads_checked_summaries_only(run_dir):
    from flow.report.html import write_run_report

    _edit_summary(run_dir, performance_density=9999.0)
    with pytest.raises(ArtefactError, match="was changed after densiflow wrote it"):
        write_run_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_a_plan_files_one_bit_layer_on_the_rtl_target_names_file_and_layer(tmp_path):
    plan = _uniform()
    plan["layers"]["conv3"]["weight_bits"] = 1
    recipe = _plan_recipe(tmp_path, plan)
    with pytest.raises(ConfigError, match=rf"plan file {tmp_path / 'p.yaml'}: "
                                          r"layers\.conv3\.weight_bits: 1 bits is below 2"):
        load_recipe(recipe)


def test_a_deeply_nested_summary_is_one_line(run_dir):
    """Found by a probe: `[` x 100000 with a matching checksum gave a RecursionError traceback."""
    path = run_dir / "summary.json"
    path.write_text("[" * 100_000)
    (run_dir / "summary.json.sha256").write_text(f"{file_sha256(path)}  summary.json\n")
    with pytest.raises(ArtefactError, match="is damaged or from another densiflow version"):
        read_summary(run_dir)
