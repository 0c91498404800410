"""The bodies of the run's steps: each reads checked artefacts of earlier steps through `Run`,
writes its own into `out` and returns its typed result (flow.run.results). Each is registered under
its name in flow.run.table's STEPS; a name not in the table, or registered twice, is an error."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel

from flow.methods.base import MethodContext, get_method
from flow.ml.metrics import performance_density, plan_metrics
from flow.ml.train import TrainConfig, accuracy, train
from flow.models import build_float, build_quant, qat_model
from flow.run.results import (
    BaselineResult,
    DeployStepResult,
    ExportResult,
    FinnResult,
    PlanResult,
    QatResult,
    ReportResult,
    SimulateResult,
    SynthStepResult,
)
from flow.run.run import Run
from flow.run.table import METHOD_STATE, STEP_NAMES

StepFunction = Callable[[Run, Path], BaseModel]
STEP_FUNCTIONS: dict[str, StepFunction] = {}


def step(name: str) -> Callable[[StepFunction], StepFunction]:
    """Register the body of the step `name` of the step table."""
    def register(fn: StepFunction) -> StepFunction:
        if name not in STEP_NAMES:
            raise TypeError(f"step {name!r} is not in the step table ({', '.join(STEP_NAMES)})")
        if name in STEP_FUNCTIONS:
            raise TypeError(f"step {name!r} is registered twice")
        STEP_FUNCTIONS[name] = fn
        return fn
    return register


def _train_cfg(section, seed: int) -> TrainConfig:
    return TrainConfig(section.epochs, section.lr, section.batch_size, section.weight_decay, seed)


@step("baseline")
def baseline(run: Run, out: Path) -> BaselineResult:
    """Train the float network; keep the best-validation weights."""
    d, seed = run.data, run.recipe.data.seed
    torch.manual_seed(seed)
    model = build_float(run.arch, d.pixel_max)
    train(model, d.x_train, d.y_train, _train_cfg(run.recipe.train, seed), "float", d.x_val,
          d.y_val)
    torch.save(model.state_dict(), out / "model.pt")
    return BaselineResult(float_val_accuracy=accuracy(model, d.x_val, d.y_val),
                          float_test_accuracy=accuracy(model, d.x_test, d.y_test))


@step("plan")
def plan(run: Run, out: Path) -> PlanResult:
    """Run the recipe's compression method; its plan lands in plan.yaml."""
    recipe = run.recipe
    ctx = MethodContext(
        arch=run.arch, data=run.data, float_model=run.float_model(),
        qat=_train_cfg(recipe.qat, recipe.data.seed), min_bits=recipe.hardware.min_weight_bits,
        seed=recipe.data.seed, recipe=recipe, state_dir=run.folder.own_dir(METHOD_STATE),
    )
    output = get_method(recipe.method.name)(ctx, recipe.method, out)
    run.arch.check_plan(output.plan)
    output.plan.save(out / "plan.yaml")
    if output.model is not None:
        torch.save(output.model.state_dict(), out / "model.pt")
    return PlanResult(method=recipe.method.name, plan=output.plan,
                      plan_digest=output.plan.digest(), trained_model=output.model is not None)


@step("qat")
def qat(run: Run, out: Path) -> QatResult:
    """The plan's Brevitas network, calibrated and fine-tuned from the float (or the method's)
    weights."""
    d, plan_ = run.data, run.plan()
    cfg = _train_cfg(run.recipe.qat, run.recipe.data.seed)
    if run.result("plan", PlanResult).trained_model:
        start = run.load_state("plan", build_quant(run.arch, d.pixel_max, plan_))
        model = qat_model(run.arch, start, plan_, d, cfg, start_plan=plan_)
    else:
        model = qat_model(run.arch, run.float_model(), plan_, d, cfg)
    torch.save(model.state_dict(), out / "model.pt")
    acc = accuracy(model, d.x_test, d.y_test)
    metrics = plan_metrics(run.arch, plan_, model)
    return QatResult(qat_val_accuracy=accuracy(model, d.x_val, d.y_val), qat_test_accuracy=acc,
                     epochs=cfg.epochs, metrics=metrics,
                     performance_density=performance_density(acc, metrics.totals.total_mbit))


@step("export")
def export(run: Run, out: Path) -> ExportResult:
    """Export the fine-tuned network to QONNX and check it against PyTorch."""
    from flow.ml.export import export_model, verify_export

    d, model = run.data, run.quant_model()
    qmodel = export_model(model, d.in_shape, d.input_bits, out / "model.qonnx.onnx")
    return ExportResult(**verify_export(qmodel, model, d.x_test[:64]))


@step("finn")
def finn(run: Run, out: Path) -> FinnResult:
    """FINN dataflow build and estimates; the HW layers are checked against QONNX on test frames."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.finn.recipe_build import build_for_recipe

    qonnx_path = run.artefact("export", "model.qonnx.onnx")
    build = build_for_recipe(ModelWrapper(str(qonnx_path)), run.recipe, out, str(qonnx_path),
                             verify_inputs=run.data.x_test[:32].numpy(),
                             rtlsim_cache=run.rtlsim_cache)
    return FinnResult(build=build)


@step("simulate")
def simulate(run: Run, out: Path) -> SimulateResult:
    """Verilator simulation of the generated RTL on the test split, bit-exact or an error."""
    from flow.sim.verify import verify_run

    sim = run.recipe.simulate
    if not sim.enabled:
        return SimulateResult(skipped="simulate.enabled is false")
    return SimulateResult(validation=verify_run(run, out, sim.frames, sim.backpressure,
                                                  sim.min_agreement))


@step("synth")
def synth(run: Run, out: Path) -> SynthStepResult:
    """Yosys synthesis of every node of the FINN build (hardware.synth: yosys)."""
    from flow.core.progress import progress_bar
    from flow.sim.synth import synthesise_build

    if run.recipe.hardware.synth == "none":
        return SynthStepResult(skipped="hardware.synth is none")
    with progress_bar("Yosys") as update:
        result = synthesise_build(run.finn_build(), out, run.synth_cache,
                                  progress=lambda node, done, total: update(done, total, node))
    return SynthStepResult(result=result)


@step("deploy")
def deploy(run: Run, out: Path) -> DeployStepResult:
    """The deployment folder: bitfile (where Vivado exists) or its placeholder and the command
    to build it, driver, test vectors, stitched RTL, and the HIL agent for both backends."""
    from flow.finn.deploy import deploy as deploy_folder
    from flow.finn.deploy import refresh_manifest
    from flow.hil.wiring import DEPLOYMENT, make_servable
    from flow.ml.train import predict

    cfg = run.recipe.deploy
    if not cfg.enabled:
        return DeployStepResult(skipped="deploy.enabled is false")
    d, folder = run.data, out / DEPLOYMENT
    logits = predict(run.quant_model(), d.x_test).numpy()
    deploy_folder(run.finn_build(), run.recipe.hardware.board, folder, d.x_test.numpy(), logits,
                  command=f"densiflow deploy {run.dir}", bitstream=cfg.bitstream)
    make_servable(run, folder)
    manifest = refresh_manifest(folder)
    return DeployStepResult(manifest=manifest, bitstream=manifest.bitfile_sha256 is not None)


@step("report")
def report(run: Run, out: Path) -> ReportResult:
    """summary.json in the run folder (the terminal table is printed by the CLI)."""
    from flow.report.html import write_run_report
    from flow.report.summary import build_summary, write_summary

    path = write_summary(run.dir, build_summary(run))
    html = write_run_report(run.dir)
    return ReportResult(summary=str(path), html=str(html))


if set(STEP_FUNCTIONS) != set(STEP_NAMES):
    raise TypeError(f"steps without a body: {sorted(set(STEP_NAMES) - set(STEP_FUNCTIONS))}")
