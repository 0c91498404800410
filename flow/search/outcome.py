"""The search's typed result (outcome.json): candidates, fronts, the plans written, the choice,
and the cost model's error against FINN."""
from __future__ import annotations

from pathlib import Path
from statistics import median

from pydantic import BaseModel, ConfigDict, ValidationError

from flow.core.errors import ArtefactError
from flow.search.budget import Constraint
from flow.search.evaluate import Candidate, SynthFigures

OUTCOME_FILE = "outcome.json"
REPORT_FILE = "report.html"


class QatFigures(BaseModel):
    """A plan after the full QAT (flow.models.qat_model, the recipe's qat section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    val_accuracy: float
    test_accuracy: float
    performance_density: float  # test accuracy in % per Mbit
    constraints: list[Constraint]  # the budget with the QAT validation accuracy
    feasible: bool


class SearchPoint(BaseModel):
    """A plan the search kept: its candidate, fronts, files and (if given) its full QAT."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    digest: str
    candidate: Candidate
    fronts: list[str]
    plan_file: str
    recipe_file: str  # runs the plan: densiflow run RECIPE_FILE
    qat: QatFigures | None = None
    synth: SynthFigures | None = None  # Yosys' counts of its FINN build (hardware.synth: yosys)

    @property
    def hardware(self):
        """Synthesised figures where they exist, else FINN's (or the screen's)."""
        return self.synth.figures if self.synth is not None else self.candidate.hardware


class ErrorStat(BaseModel):
    """Median and worst relative error of one quantity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int
    median: float
    worst: float
    worst_at: str = ""


class CostModelAccuracy(BaseModel):
    """The cost model against FINN's estimate over every candidate FINN estimated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    candidates: int
    nodes: dict[str, ErrorStat]  # per quantity, over all nodes (cost model, same folding)
    by_node_type: dict[str, dict[str, ErrorStat]]
    screen: dict[str, ErrorStat]  # the screen's design totals (its own folding) vs FINN's


class CacheStats(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int
    hits: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


class SearchOutcome(BaseModel):
    """Everything a finished search found (outcome.json in its output folder)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dataset: str
    arch: str
    board: str
    target_fps: float
    folding: str
    study: str
    storage: str
    float_val_accuracy: float
    float_test_accuracy: float | None
    trials: int  # completed
    # this run of the search (a resumed study counts only the trials it ran now)
    failed: int
    duplicates: int  # trials whose plan an earlier trial had evaluated
    search_seconds: float  # the trial phase
    total_seconds: float
    trials_per_minute: float
    finn_cache: CacheStats  # FINN estimates asked for in this run (trials and final choice)
    synth_cache: CacheStats | None = None  # Yosys syntheses of the final plans (synth: yosys)
    cost_model_error: CostModelAccuracy | None
    budget: dict
    select: str
    candidates: list[Candidate]
    fronts: dict[str, list[str]]  # front name -> plan digests along the front
    points: list[SearchPoint]
    chosen: str | None  # digest of the chosen plan (None: the budget cannot be met)
    infeasible: str | None = None  # the message naming the binding constraint
    report: str | None = None

    def point(self, plan_digest: str) -> SearchPoint:
        return next(p for p in self.points if p.digest == plan_digest)

    @property
    def chosen_point(self) -> SearchPoint | None:
        return self.point(self.chosen) if self.chosen else None

    def save(self, out_dir: Path) -> Path:
        from flow.core.io import atomic_write_text

        path = out_dir / OUTCOME_FILE
        atomic_write_text(path, self.model_dump_json(indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> SearchOutcome:
        """outcome.json (or the folder holding it); ArtefactError naming the file if unreadable."""
        path = Path(path)
        file = path / OUTCOME_FILE if path.is_dir() else path
        try:
            return cls.model_validate_json(file.read_text())
        except (OSError, ValidationError, ValueError):
            raise ArtefactError(f"{file} is not a readable search outcome; run the search again: "
                                "densiflow search RECIPE") from None


def error_stat(values: list[tuple[float, str]]) -> ErrorStat:
    """Median and worst of (relative error, where) pairs."""
    if not values:
        return ErrorStat(count=0, median=0.0, worst=0.0)
    worst = max(values)
    return ErrorStat(count=len(values), median=median(v for v, _ in values), worst=worst[0],
                     worst_at=worst[1])


def cost_model_error(cands: list[Candidate]) -> CostModelAccuracy | None:
    """Pool the node errors (quantities where model or FINN is non-zero) and the screen errors."""
    from hw_models.cost import QUANTITIES

    est = [c for c in cands if c.finn is not None]
    if not est:
        return None
    nodes = {q: [] for q in QUANTITIES}
    by_type: dict[str, dict[str, list]] = {}
    for c in est:
        for row in c.finn.node_errors:
            for q in row.live:
                err = row.rel_error[q]
                where = f"{row.name} of {c.digest[:8]}"
                nodes[q].append((err, where))
                by_type.setdefault(row.node_type, {}).setdefault(q, []).append((err, where))
    screen = {q: error_stat([(c.finn.screen_error[q], c.digest[:8]) for c in est])
              for q in est[0].finn.screen_error}
    return CostModelAccuracy(
        candidates=len(est), nodes={q: error_stat(v) for q, v in nodes.items()},
        by_node_type={t: {q: error_stat(v) for q, v in qs.items()}
                      for t, qs in sorted(by_type.items())},
        screen=screen)
