"""`densiflow compare`: finished runs side by side (table, CSV, plot), current summaries only."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from flow.core.io import atomic_write_text
from flow.report.summary import Summary, load_current_summary
from flow.search.outcome import SearchOutcome

log = logging.getLogger(__name__)

class ComparisonRow(BaseModel):
    """One design in a comparison: accuracy after QAT, size, density, hardware with its source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    dataset: str
    board: str
    method: str
    qat_test_accuracy: float  # a fraction
    total_mbit: float  # weights + activations
    avg_bits: float
    performance_density: float  # accuracy % per Mbit
    lut: float
    bram18: float
    dsp: float
    resource_source: str  # the label of the resources' source (FINN estimate, Yosys, Vivado)
    fps: float
    fits: bool


COLUMNS = tuple(ComparisonRow.model_fields)


def rows_of(path: Path) -> list[ComparisonRow]:
    """Comparison rows of a run folder (one) or of a search folder (its fully trained plans)."""
    if (path / "outcome.json").is_file():
        return search_rows(SearchOutcome.load(path))
    return [run_row(load_current_summary(path))]


def run_row(s: Summary) -> ComparisonRow:
    """A finished run's row."""
    hw = s.hardware
    return ComparisonRow(
        run=s.run, dataset=s.dataset, board=s.board, method=s.method,
        qat_test_accuracy=s.accuracy.qat_test, total_mbit=s.memory.total_mbit,
        avg_bits=s.memory.avg_bits, performance_density=s.performance_density,
        lut=hw.resources.lut, bram18=hw.resources.bram18, dsp=hw.resources.dsp,
        resource_source=hw.resource_source.label, fps=hw.fps, fits=hw.fits)


def search_rows(outcome: SearchOutcome) -> list[ComparisonRow]:
    """The rows of a search's plans that got the full QAT (synthesised counts where they exist)."""
    rows = []
    for p in outcome.points:
        if p.qat is None:
            continue
        c, hw = p.candidate, p.hardware
        chosen = " (chosen)" if p.digest == outcome.chosen else ""
        rows.append(ComparisonRow(
            run=f"{outcome.name}:{p.digest[:8]}{chosen}", dataset=outcome.dataset,
            board=outcome.board, method="search", qat_test_accuracy=p.qat.test_accuracy,
            total_mbit=c.size.total_mbit, avg_bits=c.size.avg_bits,
            performance_density=p.qat.performance_density, lut=hw.resources.lut,
            bram18=hw.resources.bram18, dsp=hw.resources.dsp, resource_source=hw.source.label,
            fps=hw.fps, fits=all(x.met for x in p.qat.constraints
                                 if x.name.startswith("budget.board_fraction"))))
    return rows


def mixed(rows: list[ComparisonRow]) -> list[str]:
    """Warnings for comparisons across data sets or boards."""
    notes = []
    for key, what in (("dataset", "data sets"), ("board", "boards")):
        values = sorted({getattr(r, key) for r in rows})
        if len(values) > 1:
            notes.append(f"the runs use different {what} ({', '.join(values)}): their figures "
                         "are not directly comparable")
    return notes


def unique_runs(paths: list[str]) -> list[Path]:
    """The run folders in the order given, each once (the same folder named twice counts once)."""
    seen, out = set(), []
    for p in paths:
        key = Path(p).resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(p))
    return out


def write_comparison(rows: list[ComparisonRow], out_dir: Path) -> dict[str, Path]:
    """comparison.csv and comparison.png (accuracy vs Mbit, marker area ~ LUTs) in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.model_dump() for r in rows)
    csv_path = out_dir / "comparison.csv"
    atomic_write_text(csv_path, buf.getvalue())

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        ax.scatter(r.total_mbit, 100 * r.qat_test_accuracy, s=40 + r.lut / 50, alpha=0.7)
        ax.annotate(f"{r.run}\n{r.performance_density:.0f} %/Mbit",
                    (r.total_mbit, 100 * r.qat_test_accuracy), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("weights + activations (Mbit)")
    ax.set_ylabel("test accuracy after QAT (%)")
    sources = ", ".join(sorted({r.resource_source for r in rows}))
    ax.set_title(f"performance density across runs (marker area ~ LUTs, {sources})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = out_dir / "comparison.png"
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png_path)
    return {"csv": csv_path, "png": png_path}


def print_comparison(rows: list[ComparisonRow], console: Console | None = None) -> None:
    """The comparison as a terminal table, best performance density first."""
    console = console or Console()
    table = Table(title="runs compared (accuracy after QAT; resources: "
                        + ", ".join(sorted({r.resource_source for r in rows})) + ")")
    shown = [c for c in COLUMNS if c != "resource_source"]
    for col in shown:
        table.add_column(col, justify="left" if col in ("run", "dataset", "board", "method")
                         else "right")
    for r in sorted(rows, key=lambda r: -r.performance_density):
        table.add_row(
            r.run, r.dataset, r.board, r.method, f"{100 * r.qat_test_accuracy:.2f} %",
            f"{r.total_mbit:.4f}", f"{r.avg_bits:.2f}", f"{r.performance_density:.1f}",
            *(f"{v:.0f}" for v in (r.lut, r.bram18, r.dsp, r.fps)), "yes" if r.fits else "no",
        )
    console.print(table)
