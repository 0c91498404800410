"""`densiflow run`: the recipe as an ordered list of named steps over one run folder.

Each step reads what earlier steps saved and writes its artefacts into `<run>/<nn>_<step>/`,
built in a `.partial` folder and renamed when the step finishes, so a folder that exists is a
finished step. Re-running the same recipe resumes after the last finished step; a changed
recipe starts clean.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import yaml

from flow.config import Recipe
from flow.data import Dataset, load_dataset
from flow.errors import ConfigError
from flow.io import atomic_write_json, atomic_write_text
from flow.metrics import performance_density, plan_metrics
from flow.models import Architecture, Net, build_float, build_quant, get_architecture, ptq_model
from flow.models.prune import make_pruning_permanent
from flow.plan import CompressionPlan
from flow.report import build_summary, write_summary
from flow.train import TrainConfig, accuracy, train

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A recipe bound to its run folder; loads what earlier steps saved."""

    recipe: Recipe
    dir: Path

    def step_dir(self, step: str) -> Path:
        return self.dir / step_folder(step)

    def result(self, step: str) -> dict:
        return yaml.safe_load((self.step_dir(step) / "result.json").read_text())

    @cached_property
    def data(self) -> Dataset:
        d = self.recipe.data
        return load_dataset(d.dataset, d.path, seed=d.seed, limit=d.limit)

    @cached_property
    def arch(self) -> Architecture:
        arch = get_architecture(self.recipe.model.arch)
        if tuple(arch.in_shape) != tuple(self.data.in_shape):
            raise ConfigError(
                f"model.arch: '{arch.name}' takes inputs {arch.in_shape}, but dataset "
                f"'{self.data.name}' has {self.data.in_shape}"
            )
        return arch

    def float_model(self) -> Net:
        model = build_float(self.arch, self.data.pixel_max)
        model.load_state_dict(torch.load(self.step_dir("baseline") / "model.pt"))
        return model.eval()

    def plan(self) -> CompressionPlan:
        return CompressionPlan.load(self.step_dir("plan") / "plan.yaml")

    def quant_model(self) -> Net:
        model = build_quant(self.arch, self.data.pixel_max, self.plan())
        model.load_state_dict(torch.load(self.step_dir("qat") / "model.pt"))
        return model.eval()


def _train_cfg(section, seed: int) -> TrainConfig:
    return TrainConfig(section.epochs, section.lr, section.batch_size, section.weight_decay, seed)


def step_baseline(run: Run, out: Path) -> dict:
    """Train the float network; keep the best-validation weights."""
    d = run.data
    torch.manual_seed(run.recipe.data.seed)
    model = build_float(run.arch, d.pixel_max)
    train(model, d.x_train, d.y_train, _train_cfg(run.recipe.train, run.recipe.data.seed),
          "float", d.x_val, d.y_val)
    torch.save(model.state_dict(), out / "model.pt")
    return {"val_accuracy": accuracy(model, d.x_val, d.y_val),
            "test_accuracy": accuracy(model, d.x_test, d.y_test)}


def step_plan(run: Run, out: Path) -> dict:
    """Run the recipe's compression method; its plan lands in plan.yaml."""
    from flow.methods import MethodContext, get_method

    params = dict(run.recipe.method)
    method = get_method(params.pop("name"))
    ctx = MethodContext(
        arch=run.arch, data=run.data, float_model=run.float_model(),
        qat=_train_cfg(run.recipe.qat, run.recipe.data.seed), min_bits=2,
        seed=run.recipe.data.seed,
    )
    plan = method(ctx, params, out)
    run.arch.check_plan(plan)
    plan.save(out / "plan.yaml")
    return {"method": run.recipe.method["name"], "plan": plan.to_dict()}


def step_qat(run: Run, out: Path) -> dict:
    """Build the Brevitas network of the plan from the float weights, calibrate, fine-tune."""
    d, plan = run.data, run.plan()
    model = ptq_model(run.arch, run.float_model(), plan, d.x_train[:512])
    train(model, d.x_train, d.y_train, _train_cfg(run.recipe.qat, run.recipe.data.seed),
          "qat", d.x_val, d.y_val)
    make_pruning_permanent(model)  # pruned weights stay zero, saved as plain weights
    torch.save(model.state_dict(), out / "model.pt")
    acc = accuracy(model, d.x_test, d.y_test)
    metrics = plan_metrics(run.arch, plan, model)
    return {
        "val_accuracy": accuracy(model, d.x_val, d.y_val),
        "test_accuracy": acc,
        "metrics": metrics,
        "performance_density": performance_density(acc, metrics["totals"]["total_mb"]),
    }


def step_export(run: Run, out: Path) -> dict:
    """Export the fine-tuned network to QONNX and check it against PyTorch."""
    from flow.export import export_model, verify_export

    d, model = run.data, run.quant_model()
    qmodel = export_model(model, d.in_shape, d.input_bits, out / "model.qonnx.onnx")
    return verify_export(qmodel, model, d.x_test[:64])


def step_finn(run: Run, out: Path) -> dict:
    """FINN dataflow build and estimates; the HW layers are checked against QONNX on test frames."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.finn_build import build_dataflow, verify_hw_model

    hw = run.recipe.hardware
    qonnx_path = run.step_dir("export") / "model.qonnx.onnx"
    est = build_dataflow(ModelWrapper(str(qonnx_path)), hw.board, hw.target_fps, out,
                         clock_mhz=hw.clock_mhz, verify_frames=0, source=str(qonnx_path),
                         fifo_depth=hw.fifo_depth)
    frames = run.data.x_test[:32].numpy()
    result = est.to_dict()
    result["verification"] = verify_hw_model(
        ModelWrapper(est.paths["qonnx"]), ModelWrapper(est.paths["hw_python"]), frames
    )
    # the step folder is renamed when it finishes: keep file names relative to it
    result["paths"] = {key: str(Path(p).relative_to(out.resolve())) for key, p in est.paths.items()}
    return result


def step_simulate(run: Run, out: Path) -> dict:
    """Verilator simulation of the generated RTL on the test split, bit-exact or an error."""
    from flow.train import predict
    from flow.validate import validate_rtl

    sim_cfg, d = run.recipe.simulate, run.data
    if not sim_cfg.enabled:
        return {"skipped": "simulate.enabled is false"}
    n = sim_cfg.frames or len(d.x_test)
    x, y = d.x_test[:n], d.y_test[:n]
    finn = run.result("finn")
    return validate_rtl(
        run.step_dir("finn"), finn["paths"], x.numpy(), y.numpy(),
        predict(run.quant_model(), x).numpy(), out, finn["part"], finn["clock_mhz"],
        finn["performance"]["steady_state_cycles"], sim_cfg.backpressure,
        cache_dir=run.dir.parent / "rtlsim_cache",
    )


def step_report(run: Run, out: Path) -> dict:
    """summary.json in the run folder (the terminal table is printed by the CLI)."""
    results = {name: run.result(name) for name in STEP_NAMES[:-1]}
    summary = build_summary(run.recipe.model_dump(), results)
    write_summary(run.dir, summary)
    return {"summary": str(run.dir / "summary.json")}


STEPS: list[tuple[str, Callable[[Run, Path], dict]]] = [
    ("baseline", step_baseline),
    ("plan", step_plan),
    ("qat", step_qat),
    ("export", step_export),
    ("finn", step_finn),
    ("simulate", step_simulate),
    ("report", step_report),
]
STEP_NAMES = [name for name, _ in STEPS]


def step_folder(step: str) -> str:
    """A step's folder name in the run folder, e.g. '05_finn'."""
    return f"{STEP_NAMES.index(step) + 1:02d}_{step}"


def run_recipe(recipe: Recipe, out_root: Path = Path("build/out"), fresh: bool = False,
               from_step: str | None = None) -> dict:
    """Run every step not yet finished; returns {step: result}."""
    run = Run(recipe, out_root / recipe.name)
    _check_names(recipe)
    _prepare_dir(run, fresh, from_step)
    results = {}
    for name, fn in STEPS:
        folder = run.step_dir(name)
        if folder.is_dir():
            log.info("step %s: done earlier, reusing %s", name, folder)
            results[name] = run.result(name)
            continue
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        log.info("step %s ...", name)
        start = time.perf_counter()
        result = fn(run, partial)
        result["seconds"] = round(time.perf_counter() - start, 2)
        atomic_write_json(partial / "result.json", result)
        partial.rename(folder)
        log.info("step %s finished in %.1f s", name, result["seconds"])
        results[name] = result
    return results


def _check_names(recipe: Recipe) -> None:
    """Fail before any work on an unknown board, architecture or method."""
    from flow.methods import get_method
    from hw_models.boards import get_board

    get_board(recipe.hardware.board)
    get_architecture(recipe.model.arch)
    get_method(recipe.method["name"])


# the recipe sections each step reads (besides what earlier steps saved)
STEP_SECTIONS = {
    "baseline": ("data", "model", "train"),
    "plan": ("method", "qat"),
    "qat": ("qat",),
    "export": (),
    "finn": ("hardware",),
    "simulate": ("simulate",),
    "report": (),
}


def first_changed_step(old: dict, new: dict) -> str | None:
    """The earliest step that reads a recipe section differing between two recipes."""
    for name in STEP_NAMES:
        if any(old.get(section) != new.get(section) for section in STEP_SECTIONS[name]):
            return name
    return None


def _prepare_dir(run: Run, fresh: bool, from_step: str | None) -> None:
    """Start clean on request; after a recipe change, redo the steps from the first it affects."""
    if from_step is not None and from_step not in STEP_NAMES:
        raise ConfigError(f"--from: unknown step '{from_step}'; steps are {STEP_NAMES}")
    saved = run.dir / "recipe.yaml"
    new = run.recipe.model_dump()
    if run.dir.exists() and (fresh or not saved.is_file()):
        shutil.rmtree(run.dir)
    elif saved.is_file():
        changed = first_changed_step(yaml.safe_load(saved.read_text()) or {}, new)
        if changed is not None:
            log.warning("recipe changed since %s was made: redoing the steps from '%s' on",
                        run.dir, changed)
            if from_step is None or STEP_NAMES.index(changed) < STEP_NAMES.index(from_step):
                from_step = changed
    if from_step is not None:
        for name in STEP_NAMES[STEP_NAMES.index(from_step):]:
            shutil.rmtree(run.step_dir(name), ignore_errors=True)
    atomic_write_text(saved, yaml.safe_dump(new, sort_keys=True))
