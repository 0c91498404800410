"""The recipe's `budget:` section as constraints on a candidate plan, and their enforcement.

Every limit becomes a `Constraint` whose `violation` is <= 0 where it is met and otherwise the
relative excess: (value - limit) / limit for an upper bound, (limit - value) / limit for a lower
bound, and for the accuracy drop the points over the limit divided by max(limit, 1 point). The
NSGA-II sampler reads the violations (Optuna's named trial constraints); the final choice keeps only
plans that meet every constraint. The board itself always bounds the design: each resource at
most its `board_fraction` of the board (the whole board where no fraction is set).

Accuracy is measured on the validation split (the test split is never used to choose); the drop is
in points against the float network's validation accuracy. Before the full QAT (the trials, which
plans FINN estimates and which get the full QAT) the short fine-tune's accuracy is held to the
drop widened by the search's `trial_slack_points`; the chosen plan meets the budget itself.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from flow.core.errors import DensiflowError
from flow.ml.metrics import performance_density
from flow.recipe.config import BudgetSection
from flow.search.hardware import HwFigures
from hw_models.boards import Board
from hw_models.resources import BUDGETED


class BudgetError(DensiflowError):
    """No plan the search found meets the recipe's budget."""


class Constraint(BaseModel):
    """One limit of the budget applied to one plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # the recipe field, e.g. budget.max_total_mbit
    limit: float
    value: float
    unit: str
    violation: float  # <= 0: met; > 0: relative excess

    @property
    def met(self) -> bool:
        return self.violation <= 0

    def describe(self) -> str:
        """e.g. 'budget.max_total_mbit 0.0213 Mbit vs limit 0.01 (113.0 % over)'."""
        state = "met" if self.met else f"{100 * self.violation:.1f} % over"
        return f"{self.name} {self.value:.4g} {self.unit} vs limit {self.limit:.4g} ({state})"


class PlanFigures(BaseModel):
    """What the budget is checked on: a plan's accuracy, size and hardware figures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float  # validation accuracy in [0, 1]
    weight_mbit: float
    total_mbit: float
    hardware: HwFigures

    @property
    def performance_density(self) -> float:
        return performance_density(self.accuracy, self.total_mbit)


def _upper(name: str, value: float, limit: float, unit: str) -> Constraint:
    return Constraint(name=name, limit=limit, value=value, unit=unit,
                      violation=(value - limit) / limit if limit > 0 else value)


def _lower(name: str, value: float, limit: float, unit: str) -> Constraint:
    return Constraint(name=name, limit=limit, value=value, unit=unit,
                      violation=(limit - value) / limit)


def check(budget: BudgetSection, board: Board, float_accuracy: float, point: PlanFigures,
          accuracy_slack_points: float = 0.0) -> list[Constraint]:
    """Every constraint of the budget (and the board) on one plan; `accuracy_slack_points` widen
    the accuracy drop allowed (for accuracies measured before the full QAT)."""
    out = []
    if budget.max_weight_mbit is not None:
        out.append(_upper("budget.max_weight_mbit", point.weight_mbit, budget.max_weight_mbit,
                          "Mbit"))
    if budget.max_total_mbit is not None:
        out.append(_upper("budget.max_total_mbit", point.total_mbit, budget.max_total_mbit,
                          "Mbit"))
    if budget.min_performance_density is not None:
        out.append(_lower("budget.min_performance_density", point.performance_density,
                          budget.min_performance_density, "%/Mbit"))
    if budget.max_accuracy_drop_points is not None:
        limit = budget.max_accuracy_drop_points + accuracy_slack_points
        drop = 100 * (float_accuracy - point.accuracy)
        out.append(Constraint(name="budget.max_accuracy_drop_points", limit=limit, value=drop,
                              unit="points", violation=(drop - limit) / max(limit, 1.0)))
    capacity = board.capacity()
    for res in BUDGETED:
        share = getattr(budget.board_fraction, res)
        limit = (1.0 if share is None else share) * capacity.get(res)
        used = point.hardware.resources.get(res)
        if limit > 0 or used > 0:
            out.append(_upper(f"budget.board_fraction.{res}", used, limit, res.upper()))
    if budget.min_fps is not None:
        out.append(_lower("budget.min_fps", point.hardware.fps, budget.min_fps, "frames/s"))
    return out


def feasible(constraints: list[Constraint]) -> bool:
    return all(c.met for c in constraints)


def distance(constraints: list[Constraint]) -> tuple[float, float]:
    """How far a plan is from the budget: (largest violation, sum of violations)."""
    over = [c.violation for c in constraints if not c.met]
    return (max(over, default=0.0), sum(over))


def infeasible_message(closest: str, constraints: list[Constraint], plans: int,
                       plan_file: str) -> str:
    """One line: the binding constraint, the closest plan found and where its plan file is."""
    missed = sorted((c for c in constraints if not c.met), key=lambda c: -c.violation)
    binding = missed[0]
    also = "; it also misses " + ", ".join(c.describe() for c in missed[1:]) if missed[1:] else ""
    return (f"budget cannot be met: none of the {plans} plans the search evaluated meets it; "
            f"binding constraint {binding.name} (limit {binding.limit:.4g} {binding.unit}): the "
            f"closest plan {closest} reaches {binding.value:.4g} {binding.unit}, "
            f"{100 * binding.violation:.1f} % over{also}; its plan: {plan_file}; relax "
            f"{binding.name} or widen the search space")
