"""The Optuna study: NSGA-II over the search space with the budget as constraints, in worker
processes that share one storage.

Objectives: maximise the validation accuracy after the short fine-tuning, minimise the plan's
weights + activations (Mbit), minimise LUT + BRAM18 (the analytic screen, so that every trial is
priced by the same source). Constraints: the budget's violations (flow.search.budget, set with
Trial.set_constraint by name), from FINN's figures where FINN estimated the trial. A trial whose
plan an earlier trial already evaluated takes that trial's results.

Storage: an Optuna journal file in the search's state folder by default (one machine, any number
of processes), or a database URL (`postgresql://...`: many machines; Optuna's heartbeat fails the
trials of a worker that died, and they are retried once). Every trial records the worker
(`host:pid`) that runs it. A search holds its state folder's lock, so at start every trial left
running in a local storage belongs to a dead worker: it is marked failed and its plan queued
again. Finished trials are never touched, so a killed worker or search loses nothing finished and
a new start resumes the study; before it, the journal's torn last line is cut off
(flow.search.journal) and a database URL is connected once (`check_start`).

Trial count: a study asked for N trials ends with exactly N finished ones (complete, pruned or
failed, `finished`). A trial left running by a dead worker neither blocks nor counts: it is
failed (user attribute `lost`) and its plan queued again; its retry counts in its place. A
worker takes a new trial only while finished + live running trials < N, under a lock in the state
folder, so the workers of one machine never overshoot (workers on other machines sharing a
database can overshoot by at most one trial each).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict

from flow.core.errors import ConfigError, DensiflowError
from flow.methods.params import STORAGE_SCHEMES
from flow.search.budget import feasible
from flow.search.evaluate import Candidate, SearchContext, evaluate, finn_estimate
from flow.search.journal import check_journal, open_journal
from flow.search.space import Choices

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, total Mbit, LUT + BRAM18
JOURNAL = "study.journal"
TRIAL_LOCK = "trials.lock"  # taken by a worker to count the trials and start one
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
LOST = "lost"  # user attribute of a trial failed because its worker died
HEARTBEAT_S = 10


@dataclass(frozen=True)
class SearchProgress:
    """A progress report: `done` of `total` in `stage` (seeds, trials, finn, qat, report)."""

    stage: str
    done: int
    total: int
    note: str = ""


Progress = Callable[[SearchProgress], None]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def check_start(url: str | None, state_dir: Path, field: str = "--storage") -> None:
    """What a search checks before it trains anything: the database at `url` reachable, or
    (no url) the journal file in state_dir sound, a torn last line cut off (flow.search.journal).
    `field` names the option or recipe field `url` came from."""
    if url is None:
        check_journal(state_dir / JOURNAL)
        if (state_dir / JOURNAL).is_file():
            open_journal(state_dir / JOURNAL)  # every record replays
    elif not url.startswith(STORAGE_SCHEMES):
        raise ConfigError(f"{field} {_hide_password(url)}: not a storage URL; allowed: "
                          f"{', '.join(s + '...' for s in STORAGE_SCHEMES)} (or leave it out "
                          f"for a journal file in the search folder)")
    else:
        open_storage(url, state_dir, field)


def open_storage(url: str | None, state_dir: Path, field: str = "--storage"):
    """The study's storage: a journal file in state_dir, or the database at `url`."""
    optuna.logging.disable_default_handler()  # Optuna's records go through Python logging
    optuna.logging.enable_propagation()
    if url is None:
        return open_journal(state_dir / JOURNAL)
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    except Exception as err:  # SQLAlchemy/driver errors: unreachable server, bad URL, no driver
        raise ConfigError(f"{field} {_hide_password(url)}: cannot open the study database "
                          f"({type(err).__name__}: {str(err).splitlines()[0]}); allowed: a "
                          f"database server reachable from here, or leave it out for a journal "
                          f"file in the search folder") from None


def _hide_password(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, cred = head.partition("//")
    return f"{scheme}//{cred.split(':', 1)[0]}:***@{tail}"


def load_study(storage, name: str, population: int, seed: int) -> optuna.Study:
    """The study (created if new) with an NSGA-II sampler seeded for this process."""
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS),
                               sampler=sampler, load_if_exists=True)


def complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def candidates(study: optuna.Study) -> list[Candidate]:
    """The finished candidates, one per plan (the first trial that evaluated it)."""
    seen: dict[str, Candidate] = {}
    for t in complete(study):
        cand = Candidate.model_validate(t.user_attrs["candidate"])
        seen.setdefault(cand.digest, cand)
    return list(seen.values())


def enqueue_seeds(study: optuna.Study, seeds: list[tuple[str, Choices]]) -> int:
    """Queue the seed points once per study (a resumed study is not seeded again)."""
    if study.user_attrs.get("seeded"):
        return 0
    for label, choices in seeds:
        study.enqueue_trial(choices, user_attrs={"seed": label}, skip_if_exists=True)
    study.set_user_attr("seeded", len(seeds))
    return len(seeds)


def recover_stale(study: optuna.Study, storage, local: bool) -> int:
    """Mark failed the trials left running by dead workers, and queue their plans again.

    Local storage (the search holds its folder's lock): every running trial is stale. Shared
    database: only trials of dead processes on this host (Optuna's heartbeat fails the others).
    """
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if local or _dead_here(t)]
    for t in stale:
        storage.set_trial_user_attr(t._trial_id, LOST, True)  # `finished` does not count it
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        point = t.params or t.system_attrs.get("fixed_params")  # or a queued point not asked yet
        if point:
            study.enqueue_trial(point, user_attrs={"retry_of": t.number})
        log.warning("trial %d of worker %s did not finish; %s", t.number,
                    t.user_attrs.get("worker", "?"), "queued again" if point else "not counted")
    return len(stale)


def _dead_here(trial: FrozenTrial) -> bool:
    """Was the trial started by a process of this host that is gone?"""
    host, _, pid = trial.user_attrs.get("worker", "").partition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- the objective


def _dominated(point: tuple[float, float, float], others: list[tuple[float, float, float]]) -> bool:
    """Is (accuracy, Mbit, LUT+BRAM18) dominated by one of `others`?"""
    a, m, r = point
    return any(oa >= a and om <= m and orr <= r and (oa, om, orr) != point
               for oa, om, orr in others)


def promising(ctx: SearchContext, study: optuna.Study, cand: Candidate) -> bool:
    """Should FINN estimate this candidate now (the recipe's `finn` setting)?"""
    mode = ctx.params.finn
    if mode != "promising":
        return mode == "all"
    screen_ok = feasible(ctx.constraints(cand.figures()))
    others = [(c.val_accuracy, c.size.total_mbit, c.screen.lut_bram18) for c in candidates(study)]
    return screen_ok and not _dominated(
        (cand.val_accuracy, cand.size.total_mbit, cand.screen.lut_bram18), others)


def _prior(study: optuna.Study, plan_digest: str) -> Candidate | None:
    for t in complete(study):
        if t.user_attrs.get("digest") == plan_digest:
            return Candidate.model_validate(t.user_attrs["candidate"])
    return None


def make_objective(ctx: SearchContext) -> Callable[[optuna.Trial], tuple[float, float, float]]:
    """The trial function: point -> plan -> candidate (FINN when promising) -> objectives."""

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        choices = ctx.space.suggest(trial)
        plan = ctx.space.plan(choices)
        trial.set_user_attr("digest", plan.digest())
        cand = _prior(trial.study, plan.digest())
        if cand is not None:
            trial.set_user_attr("duplicate", True)
        else:
            cand, model = evaluate(ctx, plan, choices)
            if promising(ctx, trial.study, cand):
                est, hit = finn_estimate(ctx, plan, model)
                cand = cand.model_copy(update={"finn": est})
                trial.set_user_attr("finn_cache", "hit" if hit else "miss")
        cons = ctx.constraints(cand.figures())
        trial.set_user_attr("candidate", cand.model_dump(mode="json"))
        for c in cons:  # NSGA-II ranks infeasible trials by these (Optuna's named constraints)
            trial.set_constraint(c.name, c.violation)
        return cand.val_accuracy, cand.size.total_mbit, cand.screen.lut_bram18

    return objective


# ----------------------------------------------------------------------------- workers


class StudyJob(BaseModel):
    """What a worker process needs to join the study (passed as JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    study_name: str
    storage_url: str | None
    state_dir: Path
    trials: int
    population: int
    seed: int


def optimize(ctx: SearchContext, job: StudyJob, worker: int) -> None:
    """Run trials in this process until the study counts `job.trials` (see `counted`); a trial
    that fails with a user-facing error is recorded as failed (and counts). Each trial is
    counted and started under the state folder's trial lock, so two workers of this machine
    never both take the last one."""
    study = load_study(open_storage(job.storage_url, job.state_dir), job.study_name,
                       job.population, job.seed + 1000 * worker)
    objective = make_objective(ctx)
    while True:
        with open(job.state_dir / TRIAL_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if counted(study) >= job.trials:
                return
            study.optimize(_started(objective, lock), n_trials=1, catch=(DensiflowError,),
                           gc_after_trial=True)


def _started(objective: Callable[[optuna.Trial], tuple[float, float, float]],
             lock) -> Callable[[optuna.Trial], tuple[float, float, float]]:
    """The objective, first naming this worker on the trial Optuna started and closing `lock`
    (the trial is running now, so other workers count it)."""

    def run(trial: optuna.Trial) -> tuple[float, float, float]:
        trial.set_user_attr("worker", worker_id())
        lock.close()
        return objective(trial)

    return run


def finished(study: optuna.Study) -> int:
    """The trials that count as done: complete, pruned or failed, less the failed ones of dead
    workers (marked lost by `recover_stale`, or retried after the database's heartbeat)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return sum(t.state in FINISHED and not (t.state == TrialState.FAIL and (
        t.user_attrs.get(LOST) or t.number in retried)) for t in trials)


def counted(study: optuna.Study) -> int:
    """Finished trials plus those running in live workers (a running trial of a dead process
    on this host does not count: it is failed and queued again at the next start)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return finished(study) + sum(not _dead_here(t) for t in running)


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the search process dies."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_worker(job: StudyJob, worker: int, log_path: Path) -> subprocess.Popen:
    """A worker process (`python -m flow.search.worker`), its output appended to log_path; it
    ends with the search process (Linux), so no orphan runs trials on its own."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flow.search.worker", job.model_dump_json(), str(worker)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def run_workers(job: StudyJob, workers: int, progress: Progress | None,
                poll_s: float = 1.0) -> list[int]:
    """Start `workers` processes on the study and wait for them; returns their exit codes.

    A worker that dies is reported; the others go on until the study is complete."""
    logs = job.state_dir / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [start_worker(job, i, logs / f"worker-{i}.log") for i in range(workers)]
    (job.state_dir / "workers.pid").write_text(" ".join(str(p.pid) for p in procs) + "\n")
    study = optuna.load_study(study_name=job.study_name,
                              storage=open_storage(job.storage_url, job.state_dir))
    reported: set[int] = set()
    shown = -1
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
            for i, p in enumerate(procs):
                if p.poll() not in (None, 0) and i not in reported:
                    reported.add(i)
                    log.warning("search worker %d (pid %d) ended with code %s; see %s", i, p.pid,
                                p.returncode, logs / f"worker-{i}.log")
            done = min(finished(study), job.trials)
            if progress is not None and done != shown:
                shown = done
                progress(SearchProgress("trials", done, job.trials))
    finally:
        for p in procs:  # interrupted: stop the workers too (their running trials resume later)
            if p.poll() is None:
                p.terminate()
                p.wait()
    return [p.returncode for p in procs]
