"""The search from start to end: context, seeds, trials in worker processes, FINN for the
promising plans, full QAT (and, with `hardware.synth: yosys`, Yosys synthesis of their FINN build)
for the best feasible ones, fronts, files, the choice, the report.

`run_search` is `densiflow search RECIPE`: it trains the float network in
`<out>/search/<recipe>/baseline` (reused while the data, model and train sections stay) and keeps
the study there, so an interrupted search resumes. The `search` method (flow.search.method) runs
the same `search` inside a run's plan step.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flow.core.errors import DensiflowError
from flow.methods.params import SearchParams
from flow.ml.data import Dataset
from flow.ml.train import TrainConfig, accuracy
from flow.models import Architecture, Net, qat_model
from flow.recipe.config import Recipe
from flow.run.folder import RunFolder, digest
from flow.search.budget import BudgetError, distance, feasible, infeasible_message
from flow.search.context import prepare_context
from flow.search.evaluate import (
    Candidate,
    SearchContext,
    SynthFigures,
    finetune,
    finn_estimate,
    synth_estimate,
)
from flow.search.outcome import (
    REPORT_FILE,
    CacheStats,
    QatFigures,
    SearchOutcome,
    SearchPoint,
    cost_model_error,
)
from flow.search.pareto import SELECT, fronts, write_point
from flow.search.seeds import all_seeds
from flow.search.study import (
    Progress,
    SearchProgress,
    StudyJob,
    candidates,
    check_start,
    complete,
    enqueue_seeds,
    finished,
    load_study,
    open_storage,
    recover_stale,
    run_workers,
)

log = logging.getLogger(__name__)

# method fields that change what a trial computes (the others only change the final choice)
TRIAL_FIELDS = ("weight_bits", "act_bits", "keep_fractions", "min_keep", "trial_epochs", "finn",
                "population", "builtin_seeds", "seeds")


@dataclass(frozen=True)
class SearchInputs:
    """What a search starts from."""

    recipe: Recipe
    params: SearchParams
    arch: Architecture
    data: Dataset
    float_model: Net
    min_bits: int
    synth_cache: Path | None = None  # Yosys' per-node cache (None: the state folder's)


def study_name(recipe: Recipe, params: SearchParams) -> str:
    """One study per recipe content that changes the trials (resumed while it stays)."""
    data = recipe.model_dump(mode="json")
    picked = {k: data[k] for k in ("data", "model", "train", "qat", "hardware", "budget")}
    method = params.model_dump(mode="json")
    picked["method"] = {k: method[k] for k in TRIAL_FIELDS}
    return f"{recipe.name}-{digest(picked)}"


def _say(progress: Progress | None, stage: str, done: int, total: int, note: str = "") -> None:
    if progress is not None:
        progress(SearchProgress(stage, done, total, note))
    log.info("search %s: %d/%d %s", stage, done, total, note)


def run_trials(ctx: SearchContext, inputs: SearchInputs, state_dir: Path, out_dir: Path,
               workers: int, storage_url: str | None, progress: Progress | None) -> tuple[str, int]:
    """Seed the study and run its trials in worker processes; returns the study name and the
    number of the first trial this call ran."""
    name = study_name(inputs.recipe, inputs.params)
    storage = open_storage(storage_url, state_dir)
    study = load_study(storage, name, inputs.params.population, ctx.seed)
    local = storage_url is None or storage_url.startswith("sqlite")
    first = len(study.get_trials(deepcopy=False))  # trials queued from here on run now
    recover_stale(study, storage, local)
    if not study.user_attrs.get("seeded"):
        seeds = all_seeds(ctx, inputs.min_bits, out_dir / "seeds")
        _say(progress, "seeds", enqueue_seeds(study, seeds), len(seeds))
    job = StudyJob(study_name=name, storage_url=storage_url, state_dir=state_dir,
                   trials=inputs.params.trials, population=inputs.params.population,
                   seed=ctx.seed)
    if finished(study) < job.trials:
        codes = run_workers(job, workers, progress)
        recover_stale(study, storage, local)
        if finished(study) < job.trials or not complete(study):
            raise DensiflowError(
                f"search stopped after {len(complete(study))} completed of {job.trials} trials: "
                f"its workers ended with codes {codes}; see {state_dir / 'workers'}")
    return name, first


def _with_finn(ctx: SearchContext, cand: Candidate) -> tuple[Candidate, bool]:
    """The candidate with FINN's estimate (its network fine-tuned again: seeded, the same)."""
    plan = cand.compression_plan()
    est, hit = finn_estimate(ctx, plan, finetune(ctx, plan))
    return cand.model_copy(update={"finn": est}), hit


def _front_3d(cands: list[Candidate]) -> list[Candidate]:
    pts = [(c.val_accuracy, -c.size.total_mbit, -c.screen.lut_bram18) for c in cands]
    return [c for c, p in zip(cands, pts)
            if not any(all(o[i] >= p[i] for i in range(3)) and o != p for o in pts)]


def estimate_promising(ctx: SearchContext, cands: list[Candidate],
                       progress: Progress | None) -> tuple[list[Candidate], int, int]:
    """FINN's estimate for the screen's front among feasible plans (the closest ones if none
    is feasible) and the best by the selection; returns (candidates, requests, hits)."""
    def cons(c: Candidate):
        return ctx.constraints(c.figures())

    pool = ([c for c in cands if feasible(cons(c))]
            or sorted(cands, key=lambda c: distance(cons(c)))[:3])
    select = SELECT[ctx.params.select]
    best = sorted(pool, key=lambda c: -select(c.val_accuracy, c))[: ctx.params.qat_top]
    want = {c.digest for c in _front_3d(pool) + best if c.finn is None}
    out, hits = [], 0
    for c in cands:
        if c.digest in want:
            _say(progress, "finn", len(out), len(want), c.digest[:8])
            c, hit = _with_finn(ctx, c)
            hits += hit
            out.append(c)
    by_digest = {c.digest: c for c in out}
    return [by_digest.get(c.digest, c) for c in cands], len(want), hits


def full_qat(ctx: SearchContext, cand: Candidate,
             synth: SynthFigures | None = None) -> QatFigures:
    """The recipe's QAT of the plan (what the qat step of its run does) and the budget on it
    (on the synthesised counts where given)."""
    q, d = ctx.recipe.qat, ctx.data
    cfg = TrainConfig(q.epochs, q.lr, q.batch_size, q.weight_decay, ctx.seed)
    model = qat_model(ctx.arch, ctx.float_model, cand.compression_plan(), d, cfg,
                      label=f"qat {cand.digest[:8]}")
    val, test = accuracy(model, d.x_val, d.y_val), accuracy(model, d.x_test, d.y_test)
    hardware = synth.figures if synth is not None else None
    cons = ctx.constraints(cand.figures(val, hardware), after_qat=True)
    return QatFigures(val_accuracy=val, test_accuracy=test,
                      performance_density=100 * test / cand.size.total_mbit, constraints=cons,
                      feasible=feasible(cons))


def synthesise_top(ctx: SearchContext, top: list[Candidate],
                   progress: Progress | None) -> tuple[dict[str, SynthFigures], int]:
    """Yosys' counts of each plan's FINN build (recipe hardware.synth: yosys, else none);
    returns them by digest and the number read from the cache."""
    if not ctx.synthesis:
        return {}, 0
    out, hits = {}, 0
    for i, c in enumerate(top):
        _say(progress, "synth", i, len(top), c.digest[:8])
        plan = c.compression_plan()
        out[c.digest], hit = synth_estimate(ctx, plan, finetune(ctx, plan))
        hits += hit
    return out, hits


@dataclass(frozen=True)
class Choice:
    """The final stage's result: full QAT and synthesis by plan digest, and the chosen plan."""

    qat: dict[str, QatFigures]
    synth: dict[str, SynthFigures]
    synth_hits: int  # syntheses read from the cache
    chosen: str | None  # None: no plan stays feasible after the full QAT


def choose(ctx: SearchContext, cands: list[Candidate], progress: Progress | None) -> Choice:
    """Full QAT (and synthesis, if the recipe asks) for the best FINN-feasible plans; the best
    of those still feasible (on the synthesised counts where they exist)."""
    select = SELECT[ctx.params.select]
    ok = [c for c in cands if c.finn is not None and feasible(ctx.constraints(c.figures()))]
    top = sorted(ok, key=lambda c: -select(c.val_accuracy, c))[: ctx.params.qat_top]
    synth, hits = synthesise_top(ctx, top, progress)
    qat: dict[str, QatFigures] = {}
    for i, c in enumerate(top):
        _say(progress, "qat", i, len(top), c.digest[:8])
        qat[c.digest] = full_qat(ctx, c, synth.get(c.digest))
    good = [c for c in top if qat[c.digest].feasible]
    chosen = max(good, key=lambda c: select(qat[c.digest].val_accuracy, c), default=None)
    return Choice(qat=qat, synth=synth, synth_hits=hits,
                  chosen=chosen.digest if chosen else None)


def closest(ctx: SearchContext, cands: list[Candidate], qat: dict[str, QatFigures]):
    """The candidate nearest to the budget and its constraints (FINN-estimated ones first)."""
    pool = [c for c in cands if c.finn is not None] or cands

    def cons(c: Candidate):
        if c.digest in qat:
            return qat[c.digest].constraints
        return ctx.constraints(c.figures(), after_qat=True)  # the budget itself

    best = min(pool, key=lambda c: distance(cons(c)))
    return best, cons(best)


def _trial_stats(study, first: int) -> tuple[int, int, int, int, int]:
    """(new completed, failed, duplicates, FINN requests, FINN cache hits) of the trials this
    search ran (numbers from `first` on)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.number >= first]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    finn = [t.user_attrs.get("finn_cache") for t in done]
    return (len(done), sum(t.state == TrialState.FAIL for t in trials),
            sum(bool(t.user_attrs.get("duplicate")) for t in done),
            sum(f is not None for f in finn), sum(f == "hit" for f in finn))


def _point(c: Candidate, recipe: Recipe, out_dir: Path, qat: dict[str, QatFigures],
           synth: dict[str, SynthFigures], front_sets: dict[str, list[Candidate]]) -> SearchPoint:
    """A kept candidate with its runnable plan and recipe files under out_dir/points/."""
    plan_file, recipe_file = write_point(out_dir / "points" / c.digest, recipe, c)
    return SearchPoint(digest=c.digest, candidate=c, plan_file=str(plan_file),
                       recipe_file=str(recipe_file), qat=qat.get(c.digest),
                       synth=synth.get(c.digest),
                       fronts=[n for n, f in front_sets.items()
                               if c.digest in {x.digest for x in f}])


def search(inputs: SearchInputs, state_dir: Path, out_dir: Path, workers: int = 1,
           storage_url: str | None = None, progress: Progress | None = None) -> SearchOutcome:
    """The whole search (see the module doc); raises BudgetError after writing its outcome
    and report when no plan meets the budget."""
    t0 = time.perf_counter()
    check_start(storage_url, state_dir, "method.storage")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = prepare_context(inputs.recipe, inputs.params, inputs.arch, inputs.data,
                          inputs.float_model, state_dir, inputs.synth_cache)
    name, first = run_trials(ctx, inputs, state_dir, out_dir, workers, storage_url, progress)
    t_trials = time.perf_counter() - t0
    study = load_study(open_storage(storage_url, state_dir), name, inputs.params.population,
                       ctx.seed)
    new, failed, dups, requests, hits = _trial_stats(study, first)
    cands, more, more_hits = estimate_promising(ctx, candidates(study), progress)
    choice = choose(ctx, cands, progress)
    qat, synth, chosen = choice.qat, choice.synth, choice.chosen
    front_sets = fronts([c for c in cands if c.finn is not None])
    keep = {c.digest for f in front_sets.values() for c in f} | set(qat)
    near, cons = closest(ctx, cands, qat) if chosen is None else (None, [])
    if near is not None:
        keep.add(near.digest)
    points = [_point(c, inputs.recipe, out_dir, qat, synth, front_sets)
              for c in cands if c.digest in keep]
    infeasible = None if near is None else infeasible_message(
        near.digest[:8], cons, len(cands), str(out_dir / "points" / near.digest / "plan.yaml"))
    n_done = len(complete(study))
    d = inputs.data
    outcome = SearchOutcome(
        name=inputs.recipe.name, dataset=d.name, arch=inputs.arch.name,
        board=ctx.board.name, target_fps=inputs.recipe.hardware.target_fps,
        folding=inputs.recipe.hardware.folding, study=name,
        storage=storage_url.split("@")[-1] if storage_url else str(state_dir / "study.journal"),
        float_val_accuracy=ctx.float_val_accuracy,
        float_test_accuracy=accuracy(inputs.float_model, d.x_test, d.y_test),
        trials=n_done, failed=failed, duplicates=dups, search_seconds=t_trials,
        total_seconds=time.perf_counter() - t0,
        trials_per_minute=60 * new / t_trials if new else 0.0,
        finn_cache=CacheStats(requests=requests + more, hits=hits + more_hits),
        synth_cache=CacheStats(requests=len(synth), hits=choice.synth_hits) if synth else None,
        cost_model_error=cost_model_error(cands),
        budget=inputs.recipe.budget.model_dump(mode="json"), select=inputs.params.select,
        candidates=cands, fronts={n: [c.digest for c in f] for n, f in front_sets.items()},
        points=points, chosen=chosen, infeasible=infeasible)
    if inputs.params.report:
        from flow.report.html import write_search_report

        _say(progress, "report", 0, 1)
        outcome = outcome.model_copy(update={"report": str(out_dir / REPORT_FILE)})
        write_search_report(outcome, out_dir / REPORT_FILE)
    outcome.save(out_dir)
    if infeasible:
        raise BudgetError(infeasible)
    return outcome


# ----------------------------------------------------------------------------- densiflow search


def search_params(recipe: Recipe) -> SearchParams:
    """The recipe's search parameters (defaults where its method is another one)."""
    return recipe.method if isinstance(recipe.method, SearchParams) else SearchParams(name="search")


def _float_model(recipe: Recipe, folder: Path) -> tuple[Net, Architecture, Dataset]:
    """The float network of the recipe, trained once in folder (reused while its inputs stay)."""
    from flow import steps
    from flow.core.io import atomic_write_json
    from flow.run.run import Run

    run = Run(recipe, RunFolder(folder.parent))
    data = recipe.model_dump(mode="json")
    key = digest({k: data[k] for k in ("data", "model", "train")})
    stamp = folder / "inputs.json"
    if not (stamp.is_file() and stamp.read_text().strip() == f'"{key}"'):
        folder.mkdir(parents=True, exist_ok=True)
        steps.baseline(run, folder)
        atomic_write_json(stamp, key)
    from flow.models import build_float

    model = build_float(run.arch, run.data.pixel_max)
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    return model.eval(), run.arch, run.data


def run_search(recipe: Recipe, out_root: Path, workers: int = 1, storage: str | None = None,
               progress: Progress | None = None) -> SearchOutcome:
    """`densiflow search`: the search of `recipe` in `<out_root>/search/<name>/` (resumable)."""
    params = search_params(recipe)
    from flow.sim.synth import synth_cache

    folder = Path(out_root) / "search" / recipe.name
    folder.mkdir(parents=True, exist_ok=True)
    url, field = (storage, "--storage") if storage is not None else (params.storage,
                                                                       "method.storage")
    with RunFolder(folder).lock():
        check_start(url, folder / "state", field)  # before the baseline trains
        model, arch, data = _float_model(recipe, folder / "baseline")
        inputs = SearchInputs(recipe=recipe, params=params, arch=arch, data=data,
                              float_model=model, min_bits=recipe.hardware.min_weight_bits,
                              synth_cache=synth_cache(Path(out_root)))
        return search(inputs, folder / "state", folder, workers, url, progress)
