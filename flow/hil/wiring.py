"""A run's HIL validation: its deployment folder made servable by the board agent, and
`densiflow hil RUN --target HOST:PORT` checking every output word of the test split.

The deploy step leaves RUN/<deploy step>/deployment/ with the bitfile (where Vivado exists), the
driver, the test vectors at the accelerator's boundary (io/, FINN's python execution), the board
agent (agent.py) and hil.json for both backends: `pynq` on a board, `rtlsim` (the run's Verilator
simulation) here. `densiflow hil` writes RUN/hil/ (token, journal, result.json) and adds the
result to summary.json.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flow.core.errors import VerificationError
from flow.core.io import atomic_write_json
from flow.hil.deployment import (
    artefact_hashes,
    new_token,
    prepare_pynq_folder,
    prepare_rtlsim_folder,
    read_token,
)
from flow.hil.session import run_hil
from flow.hil.types import Estimate, Golden, HilOptions, HilResult
from flow.run.results import SimulateResult
from flow.run.run import Run
from flow.run.table import step_folder
from hw_models import agent

DEPLOYMENT = "deployment"  # inside the deploy step's folder


def deployment_folder(run: Run) -> Path:
    return run.step_dir("deploy") / DEPLOYMENT


def make_servable(run: Run, folder: Path) -> None:
    """hil.json and agent.py for both backends in a deployment folder (the simulator built or
    taken from the run's cache)."""
    build = run.finn_build()
    rtl = build.path("dataflow_rtl")
    prepare_rtlsim_folder(rtl, folder, build.part, build.clock_mhz, cache_dir=run.rtlsim_cache)
    prepare_pynq_folder(folder, rtl, build.clock_mhz)


def token_file(run: Run) -> Path:
    """RUN/hil/token, made on first use (the agent is started with the same file)."""
    path = run.dir / "hil" / "token"
    if not path.is_file():
        new_token(path)
    return path


def golden(run: Run) -> Golden:
    """The test vectors the deploy step wrote (checked), the labels and PyTorch's classes."""
    from flow.ml.train import predict

    rel = f"{DEPLOYMENT}/io"
    inputs = np.load(run.artefact("deploy", f"{rel}/input.npy"))
    expected = np.load(run.artefact("deploy", f"{rel}/expected_output.npy"))
    n = len(inputs)
    d = run.data
    return Golden(inputs=inputs, expected=expected, labels=d.y_test[:n].numpy(),
                  reference_logits=predict(run.quant_model(), d.x_test[:n]).numpy())


def expected_artefacts(run: Run) -> dict[str, str]:
    """The SHA-256 per backend that an agent must serve: of this machine's copy of the run's
    deployment, whose hil.json and bitfile are first checked against the checksums the deploy
    step recorded (ArtefactError for a file changed since)."""
    folder = deployment_folder(run)
    run.artefact("deploy", f"{DEPLOYMENT}/{agent.MANIFEST}")
    bitfile = agent.load_manifest(folder).bitfile
    if (folder / bitfile).exists():
        run.artefact("deploy", f"{DEPLOYMENT}/{bitfile}")
    return artefact_hashes(folder)


def estimates(run: Run) -> list[Estimate]:
    """FINN's estimate and the RTL simulation's measurement, to show beside the HIL figures."""
    build = run.finn_build()
    sim = run.result("simulate", SimulateResult).validation
    found = [Estimate(source="FINN estimate", fps=build.performance.fps,
                      latency_us=build.performance.latency_us)]
    if sim is not None and sim.measured_fps:
        found.append(Estimate(source="RTL simulation", fps=sim.measured_fps,
                              latency_us=sim.measured_latency_cycles / build.clock_mhz))
    return found


def verify_hil(run: Run, target: str, token: Path, options: HilOptions,
                 progress=None) -> HilResult:
    """Stream the test split to the agent at `target`; the result is saved in RUN/hil/ (the
    summary takes it from there: flow.report.summary.add_hil).

    The expected outputs and artefact hashes are this machine's (checked against the deploy
    step's records), never the agent's word. HilError (nothing saved) when the agent cannot
    authenticate or serves another artefact."""
    out = run.dir / "hil"
    result = run_hil(target, read_token(token), golden(run), expected_artefacts(run),
                     out / "journal.jsonl", options, estimates(run), progress)
    atomic_write_json(out / "result.json", {"deploy_id": run.record("deploy").id,
                                            **result.model_dump(mode="json")})
    return result


def check_bit_exact(result: HilResult) -> None:
    """VerificationError naming the first differing word unless the validation was bit-exact."""
    if not result.bit_exact:
        first = result.first_mismatches[0] if result.first_mismatches else None
        raise VerificationError(
            f"HIL: {result.mismatches + result.probe_mismatches} of {result.output_words} output "
            f"words differ from FINN's python execution"
            + (f" (first: frame {first.frame}, word {first.index}: expected {first.expected:g}, "
               f"got {first.got:g})" if first else ""))


def saved_result(run: Run) -> HilResult | None:
    """RUN/hil/result.json if it validated the run's current deployment."""
    import json

    path = run.dir / "hil" / "result.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    record = run.folder.record(step_folder("deploy"))
    if record is None or data.pop("deploy_id", None) != record.id:
        return None
    return HilResult.model_validate(data)
