"""Shared fixtures: FINN needs a build folder and dummy settings before any transformation.
A test tier that needs a system program skips with `skip_tier`; the run ends with one line naming
each skipped tier and the command that enables it."""
import os
import warnings
from pathlib import Path

import pytest
from helpers import TIER_PREFIX

warnings.filterwarnings("ignore", message="fast_hadamard_transform")


@pytest.fixture(scope="session", autouse=True)
def finn_build_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("finn_build")
    os.environ.setdefault("FINN_BUILD_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run fastest single-threaded (intra-op threads only add overhead)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def rtlsim_cache():
    """Verilator simulator cache shared by test runs (content-addressed, so always safe to reuse).

    $DENSIFLOW_TEST_RTLSIM_CACHE, else build/out/test_cache/rtlsim in the repository (ignored by
    git); delete it to measure cold builds.
    """
    env = os.environ.get("DENSIFLOW_TEST_RTLSIM_CACHE")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "build/out/test_cache/rtlsim"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def bit_exact_run(tmp_path, monkeypatch, rtlsim_cache):
    """Runs a recipe (a dict with `simulate.frames`) through the whole flow, checks the RTL
    simulation bit-exact against FINN's execution and equal to PyTorch's classes, and returns
    the run's compression plan."""
    from flow.pipeline import run_recipe
    from flow.recipe.config import parse_recipe
    from flow.recipe.plan import CompressionPlan
    from flow.run.results import SimulateResult

    def run(data: dict):
        monkeypatch.setenv("DENSIFLOW_RTLSIM_CACHE", str(rtlsim_cache))
        recipe = parse_recipe(data)
        records = run_recipe(recipe, tmp_path / "runs")
        sim = SimulateResult.model_validate(records["simulate"].result).validation
        assert sim.frames == data["simulate"]["frames"]
        assert sim.mismatches == 0 and sim.agreement_with_pytorch == 1.0
        return CompressionPlan.load(tmp_path / "runs" / recipe.name / "02_plan" / "plan.yaml")

    return run



def pytest_terminal_summary(terminalreporter):
    """One line naming every skipped tier and the command that enables it."""
    tiers = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(TIER_PREFIX):
            tier, _, rest = reason.removeprefix(TIER_PREFIX).partition(": ")
            tiers.setdefault(tier, rest.rpartition("enable with: ")[2])
    if tiers:
        terminalreporter.write_line("skipped tiers: " + "; ".join(
            f"{tier} (enable with: {cmd})" for tier, cmd in sorted(tiers.items())))
