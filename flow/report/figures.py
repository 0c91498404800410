"""`make figures`: the README's measured figures, regenerated from runs anyone can repeat.

Runs (or resumes) each recipe below, reads its current summary and artefacts, renders the tables
in Markdown and writes them into README.md between the `figures` markers, and into
build/figures.json. No figure in the README is typed by hand.
"""
from __future__ import annotations

import datetime
import logging
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from flow.core.errors import ArtefactError, DensiflowError
from flow.core.io import atomic_write_json, atomic_write_text
from flow.methods.aqp.report import AqpTable
from flow.methods.dfq.report import DfqTable
from flow.methods.qsparse.report import QsparseTable
from flow.methods.variant_estimate import FinnEstimate
from flow.pipeline import run_recipe
from flow.recipe.config import load_recipe
from flow.report.summary import Summary, load_current_summary
from flow.run.folder import run_command
from flow.run.table import step_folder
from hw_models.errors import HardwareError

OUT = Path("build/out")
README = Path("README.md")
BEGIN, END = "<!-- figures:begin (make figures) -->", "<!-- figures:end -->"
log = logging.getLogger(__name__)
Table = TypeVar("Table", bound=BaseModel)


def default_table(s: Summary) -> str:
    """The default recipe's figures: accuracy per stage, memory, FINN estimate, RTL simulation."""
    a, m, hw, sim = s.accuracy, s.memory, s.hardware, s.simulation
    rows = [
        ("test accuracy: float / after QAT / simulated RTL",
         f"{100 * a.float_test:.2f} % / {100 * a.qat_test:.2f} % / "
         + (f"{100 * a.rtl_test:.2f} %" if a.rtl_test is not None else "not simulated")),
        ("memory (weights + activations)",
         f"{m.total_mbit:.4f} Mbit ({m.weight_mbit:.4f} + {m.act_mbit:.4f}), performance density "
         f"{s.performance_density:.1f} %/Mbit"),
        (f"{hw.resource_source.label}, {s.board} @ {hw.clock_mhz:g} MHz",
         f"LUT {hw.resources.lut:.0f}, BRAM18 {hw.resources.bram18:.0f}, DSP "
         f"{hw.resources.dsp:.0f}; {hw.fps:,.0f} frames/s, latency {hw.latency_us:.1f} µs; "
         + ("fits" if hw.fits else "does not fit")),
    ]
    if sim is not None:
        rows += [
            (f"RTL simulation (Verilator), {sim.frames} test frames",
             f"{sim.mismatches} mismatching words, agreement with PyTorch "
             f"{100 * sim.agreement_with_pytorch:.1f} %"),
            ("cycles per frame, measured vs FINN estimate",
             f"{sim.measured_cycles_per_frame:.0f} vs {sim.estimated_cycles_per_frame} (ratio "
             f"{sim.measured_over_estimated:.2f}); first-frame latency "
             f"{sim.measured_latency_cycles} cycles"),
        ]
    return _markdown(("figure", "value"), rows)


def aqp_table(run_dir: Path) -> str:
    """AQP against the fixed baselines (02_plan/aqp_table.json)."""
    return aqp_markdown(read_table(AqpTable, run_dir, "aqp_table.json"))


def aqp_markdown(table: AqpTable) -> str:
    """AQP's table in Markdown: b̄, the paper's parameter size (MB), test accuracy, Δ."""
    rows = [(r.method, f"{r.avg_bits:.2f}", f"{r.param_size_mbyte:.4f}",
             f"{100 * r.test_accuracy:.2f} %", f"{r.accuracy_diff_points:+.2f}")
            for r in table.rows]
    return _markdown(("method", "avg bits b̄", "param size (MB)", "test accuracy (stage: QAT "
                      "fine-tune; float: float training)", "Δ vs float (points)"), rows)


def qsparse_table(run_dir: Path) -> str:
    """qsparse's schedules in the paper's Table 4 format (02_plan/qsparse_table.json)."""
    return qsparse_markdown(read_table(QsparseTable, run_dir, "qsparse_table.json"))


def qsparse_markdown(table: QsparseTable) -> str:
    """qsparse's table in Markdown, with the paper's claims."""
    rows = [(r.method, f"{r.weight_bits}/{r.act_bits}", f"{r.weight_sparsity:.3f}",
             f"{r.act_sparsity:.3f}", f"{100 * r.test_accuracy:.2f} %", f"{r.weight_mbit:.4f}",
             f"{r.act_mbit:.4f}", f"{r.performance_density_percent_per_mbit:.0f}", *_finn(r.finn))
            for r in table.rows]
    return _markdown(("variant", "N_W/N_A", "s_W", "s_A", "accuracy", "weights Mbit",
                      "acts Mbit", "PD %/Mbit", *FINN_HEAD), rows) + _claims(table.checks)


def dfq_table(run_dir: Path) -> str:
    """DFQ against uniform precision in the paper's Table 1 format (02_plan/dfq_table.json)."""
    return dfq_markdown(read_table(DfqTable, run_dir, "dfq_table.json"))


def dfq_markdown(table: DfqTable) -> str:
    """DFQ's table in Markdown, with the paper's claims."""
    rows = []
    for r in table.rows:
        bits = r.weight_bits
        bits = " ".join(str(b) for b in bits.values()) if isinstance(bits, dict) else str(bits)
        rows.append((r.method, bits, f"{r.compression_ratio:.2f}x",
                     f"{100 * r.test_accuracy:.2f} %", f"{r.accuracy_diff_points:+.2f}",
                     *_finn(r.finn)))
    return _markdown(("row", "weight bits per layer", "compression", "accuracy", "Δ points",
                      *FINN_HEAD), rows) + _claims(table.checks)


FINN_HEAD = ("LUT (FINN est.)", "BRAM18", "DSP", "frames/s")


def _finn(est: FinnEstimate | None) -> tuple[str, ...]:
    if est is None:
        return ("-",) * len(FINN_HEAD)
    return tuple(f"{v:,.0f}" for v in est.model_dump().values())  # FINN_HEAD's order


def _claims(checks: dict[str, bool]) -> str:
    return "\n\nClaims: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) \
        + "."


def read_table(model: type[Table], run_dir: Path, name: str) -> Table:
    """A method's table file of the run's plan step, refused in one line unless it is `model`'s."""
    path = run_dir / step_folder("plan") / name
    redo = f"rewrite it: {run_command(run_dir, 'plan')}"
    if not path.is_file():
        raise ArtefactError(f"{path} is missing; {redo}")
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise ArtefactError(f"{path} is not a {model.__name__} of this densiflow ({where}: "
                            f"{first['msg']}); {redo}") from None


def synth_table(run_dir: Path) -> str:
    """Yosys' post-synthesis totals beside FINN's estimate (05_finn's model, 07_synth)."""
    s = load_current_summary(run_dir)
    syn = s.hardware.synthesis
    if syn is None:
        return "(no synthesis in this run)"
    rows = [(r.upper(), f"{getattr(syn.resources, r):,.0f}",
             f"{getattr(s.hardware.finn_estimate, r):,.0f}",
             "-" if syn.ratio_to_finn.get(r) is None else f"{syn.ratio_to_finn[r]:.2f}x")
            for r in ("lut", "bram18", "dsp")]
    rows.append(("LUT split", f"logic {syn.lut_logic:,}, LUTRAM {syn.lutram:,}, SRL {syn.srl:,}",
                 "", ""))
    rows.append(("FF", f"{syn.resources.ff:,.0f}", "not estimated", ""))
    return _markdown(("resource", f"Yosys synthesis ({syn.family})", "FINN estimate",
                      "Yosys / FINN"), rows)


def folding_table(run_dir: Path) -> str:
    """densiflow's folding optimiser against FINN's SetFolding at the same target (FINN's
    estimate of both) and the resource-bound ceiling."""
    s = load_current_summary(run_dir)
    hw, f = s.hardware, s.hardware.folding_report
    if f is None:
        return "(FINN's SetFolding only in this run)"
    ours, theirs = hw.finn_estimate, f.setfolding_resources
    bound = min(hw.target_fps, f.ceiling_fps)
    rows = [
        ("densiflow's optimiser", f"{hw.fps:,.0f}", f"{100 * hw.fps / bound:.1f} %",
         f"{ours.lut:,.0f}", f"{ours.bram18:,.0f}", f"{ours.dsp:,.0f}"),
        ("FINN's SetFolding", f"{f.setfolding_fps:,.0f}",
         f"{100 * f.setfolding_fps / bound:.1f} %", f"{theirs.lut:,.0f}",
         f"{theirs.bram18:,.0f}", f"{theirs.dsp:,.0f}"),
    ]
    return (f"Target {hw.target_fps:,.0f} frames/s at {hw.clock_mhz:g} MHz; resource-bound "
            f"ceiling {f.ceiling_fps:,.0f} frames/s (bound by {f.binding}).\n\n"
            + _markdown(("folding", "frames/s", "of min(target, ceiling)", "LUT (FINN est.)",
                         "BRAM18", "DSP"), rows))


GRAPH_RECIPES = ("build/digits_synth.yaml", "build/digits_vgg.yaml", "build/digits_resnet.yaml",
                 "build/digits_mobilenet.yaml")


def graph_row(s: Summary) -> tuple[str, ...]:
    """One network of the graph-networks table: accuracy per stage, memory, FINN's estimate and
    Yosys' counts, frame rate and the simulation's cycles against the estimate."""
    a, hw, sim, syn = s.accuracy, s.hardware, s.simulation, s.hardware.synthesis
    est = hw.finn_estimate
    yosys = ("not synthesised" if syn is None else
             f"{syn.resources.lut:,.0f} / {syn.resources.bram18:,.0f} / {syn.resources.dsp:,.0f}")
    cycles = ("not simulated" if sim is None else
              f"{sim.measured_cycles_per_frame:.0f} vs {sim.estimated_cycles_per_frame} "
              f"({sim.measured_over_estimated:.3f})")
    rtl = "-" if a.rtl_test is None else f"{100 * a.rtl_test:.2f} %"
    return (s.arch, f"{100 * a.float_test:.2f} % / {100 * a.qat_test:.2f} % / {rtl}",
            f"{s.memory.total_mbit:.4f}", f"{s.performance_density:.1f}",
            f"{est.lut:,.0f} / {est.bram18:,.0f} / {est.dsp:,.0f}", yosys, f"{hw.fps:,.0f}",
            cycles)


def graph_table(summaries: list[Summary]) -> str:
    """The graph networks (pooling, residual blocks, depthwise convolutions) against digits_cnn,
    each uniform W4A4 on the same board, synthesised and simulated."""
    return _markdown(("network", "test accuracy: float / QAT / RTL", "Mbit", "PD %/Mbit",
                      "LUT / BRAM18 / DSP (FINN estimate)", "LUT / BRAM18 / DSP (Yosys)",
                      "frames/s (FINN estimate)", "cycles/frame measured vs estimated (ratio)"),
                     [graph_row(s) for s in summaries])


def _markdown(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _summary(run_dir: Path) -> str:
    return default_table(load_current_summary(run_dir))


# (title, recipe, renderer of the run folder) in README order
SECTIONS: list[tuple[str, str, Callable[[Path], str]]] = [
    ("Default recipe (`make demo`, build/digits.yaml: digits CNN, uniform W4A4, Pynq-Z1, "
     "100k frames/s)", "build/digits.yaml", _summary),
    ("The same design synthesised by Yosys (build/digits_synth.yaml: hardware.synth: yosys, "
     "FIFOs sized by simulation)", "build/digits_synth.yaml", synth_table),
    ("AQP (build/digits_aqp.yaml) against fixed baselines, from 02_plan/aqp_table.json",
     "build/digits_aqp.yaml", aqp_table),
    ("AQP's chosen plan through the whole flow", "build/digits_aqp.yaml", _summary),
    ("qsparse (build/digits_qsparse.yaml), the paper's Table 4 with FINN's estimates",
     "build/digits_qsparse.yaml", qsparse_table),
    ("qsparse's chosen plan (layerwise (A), 50 %) through the whole flow",
     "build/digits_qsparse.yaml", _summary),
    ("DFQ (build/digits_dfq.yaml), the paper's Table 1 with FINN's estimates",
     "build/digits_dfq.yaml", dfq_table),
    ("The co-design search's chosen plan (build/digits_search.yaml: within 0.5 points of float, "
     "at least W4A4's frame rate) through the whole flow", "build/digits_search.yaml", _summary),
    ("The same search choosing the fewest LUT + BRAM18 (build/digits_search_lut.yaml)",
     "build/digits_search_lut.yaml", _summary),
    ("Folding a CNV-class network (build/cnv_zcu104.yaml: cnv W4A4 on ZCU104, synthetic 3x32x32 "
     "data)", "build/cnv_zcu104.yaml", folding_table),
]


def _run(recipe_path: str, data: dict) -> Path:
    """The run folder of a recipe, run or resumed; its summary recorded in `data`."""
    recipe = load_recipe(recipe_path)
    run_recipe(recipe, OUT)
    run_dir = OUT / recipe.name
    data[recipe.name] = load_current_summary(run_dir).model_dump(mode="json")
    return run_dir


def render() -> tuple[str, dict]:
    """Run or resume every section's recipe; the Markdown block and the figures as data."""
    blocks, data = [], {}
    for title, recipe_path, renderer in SECTIONS:
        blocks.append(f"**{title}**\n\n{renderer(_run(recipe_path, data))}")
    graphs = [load_current_summary(_run(r, data)) for r in GRAPH_RECIPES]
    blocks.append("**Networks beyond chains (build/digits_{vgg,resnet,mobilenet}.yaml) against "
                  "digits_cnn (build/digits_synth.yaml): uniform W4A4, Pynq-Z1, FIFOs sized by "
                  f"simulation, every node synthesised by Yosys**\n\n{graph_table(graphs)}")
    stamp = (f"Measured by `make figures` on {datetime.date.today().isoformat()}, "
             f"{platform.machine()}, Python {platform.python_version()}.")
    return "\n\n".join([stamp, *blocks]), data


def write_readme(block: str, readme: Path = README) -> None:
    """Replace the text between the figure markers of the README."""
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: the markers {BEGIN} ... {END} are missing")
    atomic_write_text(readme, pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        block, data = render()
    except (DensiflowError, HardwareError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_readme(block)
    atomic_write_json(Path("build/figures.json"), data)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
