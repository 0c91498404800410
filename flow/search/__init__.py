"""Hardware-aware co-design search: per-layer precision and channel pruning under a budget.

space (the choices and the channel ranking), hardware (the analytic screen), evaluate (one
candidate: short fine-tuning, screen, FINN estimate cached by plan digest), budget (constraints
and their enforcement), study (Optuna NSGA-II, storage, worker processes), seeds, pareto (fronts,
plan and recipe files), outcome (the typed result), runner (`run_search`,
`densiflow search`), method (the `search` method of a run), bench.
"""
from flow.search.budget import BudgetError, Constraint
from flow.search.outcome import SearchOutcome
from flow.search.runner import run_search
from flow.search.study import SearchProgress

__all__ = ["BudgetError", "Constraint", "SearchOutcome", "SearchProgress", "run_search"]
