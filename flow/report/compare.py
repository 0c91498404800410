"""`densiflow compare`: finished runs side by side (table, CSV, plot), current summaries only."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flow.core.io import atomic_write_text
from flow.report.summary import Summary, load_current_summary

log = logging.getLogger(__name__)

COLUMNS = ("run", "dataset", "board", "method", "qat_test_accuracy", "total_mbit", "avg_bits",
           "performance_density", "lut", "bram18", "dsp", "resource_source", "fps", "fits")


def rows_of(path: Path) -> list[dict]:
    """Comparison rows of a run folder (one) or of a search folder (its fully trained plans)."""
    if (path / "outcome.json").is_file():
        from flow.search.outcome import SearchOutcome
        from flow.search.pareto import comparison_rows as search_rows

        return search_rows(SearchOutcome.load(path))
    return comparison_rows([load_current_summary(path)])


def comparison_rows(summaries: list[Summary]) -> list[dict]:
    """One row per run: accuracy after QAT, size, density and hardware totals with their source."""
    rows = []
    for s in summaries:
        hw = s.hardware
        rows.append({
            "run": s.run, "dataset": s.dataset, "board": s.board, "method": s.method,
            "qat_test_accuracy": s.accuracy.qat_test, "total_mbit": s.memory.total_mbit,
            "avg_bits": s.memory.avg_bits, "performance_density": s.performance_density,
            "lut": hw.resources.lut, "bram18": hw.resources.bram18, "dsp": hw.resources.dsp,
            "resource_source": hw.resource_source.label, "fps": hw.fps, "fits": hw.fits,
        })
    return rows


def mixed(rows: list[dict]) -> list[str]:
    """Warnings for comparisons across data sets or boards."""
    notes = []
    for key, what in (("dataset", "data sets"), ("board", "boards")):
        values = sorted({r[key] for r in rows})
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


def write_comparison(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """comparison.csv and comparison.png (accuracy vs Mbit, marker area ~ LUTs) in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out_dir / "comparison.csv"
    atomic_write_text(csv_path, buf.getvalue())

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        ax.scatter(r["total_mbit"], 100 * r["qat_test_accuracy"], s=40 + r["lut"] / 50, alpha=0.7)
        ax.annotate(f"{r['run']}\n{r['performance_density']:.0f} %/Mbit",
                    (r["total_mbit"], 100 * r["qat_test_accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("weights + activations (Mbit)")
    ax.set_ylabel("test accuracy after QAT (%)")
    sources = ", ".join(sorted({r["resource_source"] for r in rows}))
    ax.set_title(f"performance density across runs (marker area ~ LUTs, {sources})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = out_dir / "comparison.png"
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png_path)
    return {"csv": csv_path, "png": png_path}


def print_comparison(rows: list[dict], console: Console | None = None) -> None:
    """The comparison as a terminal table, best performance density first."""
    console = console or Console()
    table = Table(title="runs compared (accuracy after QAT; resources: "
                        + ", ".join(sorted({r["resource_source"] for r in rows})) + ")")
    shown = [c for c in COLUMNS if c != "resource_source"]
    for col in shown:
        table.add_column(col, justify="left" if col in ("run", "dataset", "board", "method")
                         else "right")
    for r in sorted(rows, key=lambda r: -r["performance_density"]):
        table.add_row(
            r["run"], r["dataset"], r["board"], r["method"],
            f"{100 * r['qat_test_accuracy']:.2f} %",
            f"{r['total_mbit']:.4f}", f"{r['avg_bits']:.2f}", f"{r['performance_density']:.1f}",
            *(f"{r[k]:.0f}" for k in ("lut", "bram18", "dsp", "fps")),
            "yes" if r["fits"] else "no",
        )
    console.print(table)
