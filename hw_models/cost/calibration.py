"""Calibration: the coefficients of the cost model's terms per node type and resource, fitted
(`fit_calibration`, non-negative least squares) to samples of one `ResourceSource` and stored as
JSON under hw_models/calibration/ (`python -m hw_models.calibrate` regenerates them)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from statistics import median

from pydantic import BaseModel, ConfigDict

from hw_models.cost.layers import CostModelError, Layer
from hw_models.cost.terms import fitted_terms
from hw_models.resources import BUDGETED, Resources, ResourceSource

CALIBRATION_DIR = Path(__file__).parent.parent / "calibration"


class TermFitError(BaseModel):
    """How well one node type's fitted resource reproduces its calibration samples."""

    model_config = ConfigDict(frozen=True)

    samples: int
    median_rel_error: float
    worst_rel_error: float


class Calibration(BaseModel):
    """Fitted coefficients of the terms, per node type and resource, from one source of figures."""

    model_config = ConfigDict(frozen=True)

    source: ResourceSource
    family: str = "any"  # Yosys family (xc7 / xcup) the samples came from, or "any"
    description: str = ""
    coefficients: dict[str, dict[str, dict[str, float]]]  # node type -> resource -> term -> c
    fit: dict[str, dict[str, TermFitError]] = {}  # node type -> resource -> error on samples
    held_out: dict[str, dict[str, TermFitError]] = {}  # leave-one-out error, where measured

    def save(self, path: Path | str) -> Path:
        """Write the calibration as JSON."""
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=1) + "\n")
        return Path(path)

    def covering(self, fallback: Calibration) -> Calibration:
        """This calibration with `fallback`'s coefficients for the node types it lacks."""
        missing = sorted(set(fallback.coefficients) - set(self.coefficients))
        if not missing:
            return self
        note = (f" Node types without samples ({', '.join(missing)}) use the "
                f"{fallback.source.label} calibration.")
        return self.model_copy(update={
            "coefficients": {**{k: fallback.coefficients[k] for k in missing},
                             **self.coefficients},
            "description": self.description + note})

    def extended(self, other: Calibration) -> Calibration:
        """This calibration with `other`'s node types added (theirs replace any of the same
        name); both must come from the same source and family."""
        if (other.source, other.family) != (self.source, self.family):
            raise CostModelError(
                f"cannot extend a {self.source.value}/{self.family} calibration with a "
                f"{other.source.value}/{other.family} one")
        return self.model_copy(update={
            "coefficients": {**self.coefficients, **other.coefficients},
            "fit": {**self.fit, **other.fit}, "held_out": {**self.held_out, **other.held_out},
            "description": f"{self.description} Added: {other.description}"})

    def digest(self) -> str:
        """Hash of the coefficients (what changes the estimates)."""
        import hashlib

        text = json.dumps([self.source.value, self.family, self.coefficients], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        """Read a calibration JSON file."""
        try:
            return cls.model_validate_json(Path(path).read_text())
        except FileNotFoundError:
            raise CostModelError(f"calibration file {path} not found; regenerate it with "
                                 "`python -m hw_models.calibrate`") from None


def calibration_path(source: ResourceSource, family: str = "any") -> Path:
    """Where the calibration for `source` (and Yosys family) is stored."""
    suffix = "" if family == "any" else f"_{family}"
    return CALIBRATION_DIR / f"{source.value}{suffix}.json"


@lru_cache(maxsize=8)
def load_calibration(source: ResourceSource = ResourceSource.FINN_ESTIMATE,
                     family: str = "any") -> Calibration:
    """The stored calibration for `source` (FINN's estimate by default)."""
    return Calibration.load(calibration_path(source, family))


def synthesis_calibration(family: str) -> Calibration | None:
    """The Yosys calibration of a family, FINN's estimate's coefficients filling in the node
    types it has no samples of (HLS layers Yosys cannot synthesise); None if not calibrated."""
    if not calibration_path(ResourceSource.YOSYS, family).is_file():
        return None
    return load_calibration(ResourceSource.YOSYS, family).covering(load_calibration())


def board_calibration(family: str, source: ResourceSource | None = None) -> Calibration:
    """The calibration costing a design for a board family: `source`'s, else Yosys' where the
    family is calibrated (what synthesis counts), else FINN's estimate."""
    if source in (None, ResourceSource.YOSYS):
        cal = synthesis_calibration(family)
        if cal is not None:
            return cal
        if source is not None:
            raise CostModelError(f"no Yosys calibration for family {family!r}; generate it with "
                                 f"`python -m hw_models.calibrate --source yosys --family "
                                 f"{family}`")
    if source not in (None, ResourceSource.FINN_ESTIMATE):
        raise CostModelError(f"no calibration source {source.value!r}; use finn_estimate or "
                             "yosys")
    return load_calibration()


class CalibrationSample(BaseModel):
    """One layer and the resources one source gave it."""

    model_config = ConfigDict(frozen=True)

    layer: Layer
    resources: Resources
    source: ResourceSource


def relative_error(model: float, ref: float) -> float:
    """|model - ref| / ref; where ref is 0: 0 if model is (near) 0, else the absolute error."""
    if ref == 0:
        return 0.0 if abs(model) < 0.5 else abs(model)
    return abs(model - ref) / abs(ref)


def _fit_terms(rows: Sequence[dict[str, float]], targets: Sequence[float]) -> dict[str, float]:
    """Non-negative least squares of targets on the terms, relative error weighted."""
    import numpy as np
    from scipy.optimize import nnls

    names = sorted({k for r in rows for k, v in r.items() if v})
    if not names:
        return {}
    x = np.array([[r.get(k, 0.0) for k in names] for r in rows], dtype=float)
    y = np.asarray(targets, dtype=float)
    weight = 1.0 / np.maximum(np.abs(y), 1.0)  # relative error, as the goal is stated
    coef, _ = nnls(x * weight[:, None], y * weight)
    return {k: float(round(c, 6)) for k, c in zip(names, coef) if c > 1e-9}


def _error_stats(got: Sequence[float], ref: Sequence[float]) -> TermFitError:
    errs = [relative_error(g, r) for g, r in zip(got, ref)]
    return TermFitError(samples=len(errs), median_rel_error=median(errs),
                        worst_rel_error=max(errs))


def _held_out(terms: Sequence[dict[str, float]], ref: Sequence[float]) -> TermFitError:
    """Leave-one-out: each sample predicted by the coefficients fitted to the others."""
    got = []
    for i in range(len(ref)):
        rest = [j for j in range(len(ref)) if j != i]
        coef = _fit_terms([terms[j] for j in rest], [ref[j] for j in rest])
        got.append(max(0.0, weighted_sum(coef, terms[i])))
    return _error_stats(got, ref)


def fit_calibration(samples: Iterable[CalibrationSample], description: str = "",
                    family: str = "any", held_out: bool = False) -> Calibration:
    """Fit the coefficients of every node type and resource to the samples (one source).

    `held_out` also measures each node type's leave-one-out error (each sample predicted by a fit
    to the others of its type), the error to expect on nodes the fit has not seen.
    """
    groups: dict[str, list[CalibrationSample]] = {}
    for s in samples:
        groups.setdefault(s.layer.node_type, []).append(s)
    sources = {s.source for g in groups.values() for s in g}
    if len(sources) != 1:
        raise CostModelError(f"calibration samples must come from one source, got {sources}")
    coefficients: dict[str, dict[str, dict[str, float]]] = {}
    fit: dict[str, dict[str, TermFitError]] = {}
    loo: dict[str, dict[str, TermFitError]] = {}
    source = next(iter(sources))
    for node_type, group in sorted(groups.items()):
        terms = [fitted_terms(s.layer, source) for s in group]
        coefficients[node_type], fit[node_type] = {}, {}
        for res in BUDGETED:
            ref = [s.resources.get(res) for s in group]
            rows = [t[res] for t in terms]
            coefficients[node_type][res] = _fit_terms(rows, ref)
            fit[node_type][res] = _error_stats(
                [weighted_sum(coefficients[node_type][res], r) for r in rows], ref)
            if held_out and len(group) > 1:
                loo.setdefault(node_type, {})[res] = _held_out(rows, ref)
    return Calibration(source=source, family=family, description=description,
                       coefficients=coefficients, fit=fit, held_out=loo)


def weighted_sum(coef: dict[str, float], terms: dict[str, float]) -> float:
    """Sum of the terms weighted by their coefficients (a term without one counts 0)."""
    return sum(c * terms.get(k, 0.0) for k, c in coef.items())
