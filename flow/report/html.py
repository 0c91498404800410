"""Single-file HTML reports: one for a run (its Summary and step artefacts), one for a search
(its SearchOutcome). Tables, plus plots drawn by matplotlib as inline SVG and the run's own PNG
figures as data URIs: the file opens anywhere, with no script and nothing fetched."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from flow.core.io import atomic_write_text
from flow.report.summary import Summary, read_summary, summary_lines
from flow.run.table import step_folder

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{border:1px solid #ddd;padding:4px}
.note{color:#555;font-size:13px}.bad{color:#b00}
"""


# ----------------------------------------------------------------------------- building blocks


def esc(value) -> str:
    return html.escape(str(value))


def table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """An HTML table (cells escaped; floats shown with 4 significant digits)."""
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else esc("-" if v is None else v)

    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def svg(fig) -> str:
    """A matplotlib figure as an inline <svg> element (closed afterwards); the same figure gives
    the same text (no date, fixed element ids)."""
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "densiflow"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return f'<div class="plot">{text[text.index("<svg"):]}</div>'


def png(path: Path) -> str:
    """A PNG file as an <img> with a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<div class="plot"><img alt="{esc(Path(path).name)}" width="560" '
            f'src="data:image/png;base64,{data}"></div>')


def page(title: str, sections: Iterable[str]) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
            + "".join(sections) + "</body></html>\n")


def _figure(width: float = 5.6, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


# ----------------------------------------------------------------------------- run report


def _bits_plot(summary: Summary) -> str:
    fig, ax = _figure()
    names = [r.layer for r in summary.layers]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [r.weight_bits for r in summary.layers], 0.4, label="weights")
    ax.bar([i + 0.2 for i in x], [r.act_bits or 0 for r in summary.layers], 0.4,
           label="activations")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("bits")
    ax.set_title("per-layer precision")
    ax.legend(fontsize=8)
    return svg(fig)


def _resource_plot(summary: Summary) -> str:
    fig, ax = _figure()
    names = [r.layer for r in summary.layers]
    for i, key in enumerate(("lut", "bram18", "dsp")):
        ax.bar([j + (i - 1) * 0.27 for j in range(len(names))],
               [getattr(r, key) or 0 for r in summary.layers], 0.27, label=key.upper())
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("symlog")
    ax.set_title(f"per-layer resources ({summary.hardware.resource_source.label})")
    ax.legend(fontsize=8)
    return svg(fig)


def _cycles_plot(summary: Summary) -> str:
    hw = summary.hardware
    fig, ax = _figure()
    names = [r.layer for r in summary.layers]
    ax.bar(names, [r.cycles or 0 for r in summary.layers], color="#4a7")
    ax.axhline(hw.clock_mhz * 1e6 / hw.target_fps, color="#b00", ls="--", label="target")
    ax.set_ylabel("cycles per frame (slowest node)")
    ax.set_title(f"{hw.fps:,.0f} frames/s at {hw.clock_mhz:g} MHz")
    ax.legend(fontsize=8)
    return svg(fig)


def run_report_html(summary: Summary, run_dir: Path | None = None) -> str:
    """The run's report: headline figures, per-layer table, plots, the plan's PNG figures."""
    cols = ("layer", "W bits", "A bits", "channels", "weight Mbit", "act Mbit", "LUT", "BRAM18",
            "DSP", "cycles")
    rows = [(r.layer, r.weight_bits, r.act_bits, r.channels, r.weight_mbit, r.act_mbit, r.lut,
             r.bram18, r.dsp, r.cycles) for r in summary.layers]
    lines = "".join(f"<li>{esc(line)}</li>" for line in summary_lines(summary))
    plots = [_bits_plot(summary), _resource_plot(summary), _cycles_plot(summary)]
    extra = sorted((run_dir / step_folder("plan")).glob("*.png")) if run_dir else []
    sections = [
        f'<p class="note">{esc(summary.dataset)}, {esc(summary.arch)}, method '
        f"{esc(summary.method)}, board {esc(summary.board)} (target {esc(summary.target)})</p>",
        f"<h2>Figures</h2><ul>{lines}</ul>",
        "<h2>Layers</h2>" + table(cols, rows),
        '<h2>Plots</h2><div class="plots">' + "".join(plots) + "</div>",
    ]
    if extra:
        sections.append('<h2>Method figures</h2><div class="plots">'
                        + "".join(png(p) for p in extra) + "</div>")
    steps = [(s, f"{v.seconds:.1f}") for s, v in summary.steps.items()]
    sections.append("<h2>Steps</h2>" + table(("step", "seconds"), steps))
    return page(f"densiflow run '{summary.run}'", sections)


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """report.html of a finished run (from its summary.json), in the run folder by default."""
    summary = read_summary(Path(run_dir))
    path = Path(out) if out else Path(run_dir) / "report.html"
    atomic_write_text(path, run_report_html(summary, Path(run_dir)))
    return path


# ----------------------------------------------------------------------------- search report


def _front_plot(outcome, title: str, xlabel: str, ylabel: str, x, y, front: str) -> str:
    """All candidates (screen: hollow), FINN-estimated (filled), the front, the chosen plan."""
    fig, ax = _figure()
    est = [c for c in outcome.candidates if c.finn is not None]
    rest = [c for c in outcome.candidates if c.finn is None]
    if rest:
        ax.scatter([x(c) for c in rest], [y(c) for c in rest], s=14, facecolors="none",
                   edgecolors="#999", label="cost-model screen")
    ax.scatter([x(c) for c in est], [y(c) for c in est], s=18, color="#36c",
               label="FINN estimate")
    pts = [c for d in outcome.fronts.get(front, []) for c in est if c.digest == d]
    if pts:
        ax.plot([x(c) for c in pts], [y(c) for c in pts], "-o", color="#d33", ms=4, label="front")
    chosen = [c for c in outcome.candidates if c.digest == outcome.chosen]
    if chosen:
        ax.scatter([x(chosen[0])], [y(chosen[0])], marker="*", s=180, color="#f90",
                   edgecolors="k", label="chosen", zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return svg(fig)


def _search_plots(outcome) -> str:
    return '<div class="plots">' + "".join([
        _front_plot(outcome, "accuracy vs memory", "weights + activations (Mbit)",
                    "val accuracy (%)", lambda c: c.size.total_mbit,
                    lambda c: 100 * c.val_accuracy, "accuracy_vs_mbit"),
        _front_plot(outcome, "accuracy vs LUT + BRAM18", "LUT + BRAM18", "val accuracy (%)",
                    lambda c: c.hardware.lut_bram18, lambda c: 100 * c.val_accuracy,
                    "accuracy_vs_lut_bram18"),
        _front_plot(outcome, "performance density vs frame rate", "frames/s",
                    "performance density (%/Mbit)", lambda c: c.hardware.fps,
                    lambda c: c.performance_density, "pd_vs_fps"),
    ]) + "</div>"


def _points_table(outcome) -> str:
    cols = ("plan", "fronts", "val acc. (short)", "QAT val", "QAT test", "Mbit", "PD (QAT test)",
            "LUT", "BRAM18", "DSP", "frames/s", "source", "recipe")
    rows = []
    for p in outcome.points:
        c, hw, q = p.candidate, p.hardware, p.qat
        rows.append((p.digest[:8] + (" (chosen)" if p.digest == outcome.chosen else ""),
                     ", ".join(p.fronts), 100 * c.val_accuracy,
                     q and 100 * q.val_accuracy, q and 100 * q.test_accuracy, c.size.total_mbit,
                     q and q.performance_density, hw.resources.lut, hw.resources.bram18,
                     hw.resources.dsp, hw.fps, hw.source.label, p.recipe_file))
    return table(cols, rows)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _synth_table(outcome) -> str:
    """Yosys' counts of the final plans' builds beside FINN's estimate of the same builds."""
    points = [p for p in outcome.points if p.synth is not None]
    if not points:
        return ""
    s0 = points[0].synth
    cols = ("plan", "LUT (Yosys)", "logic", "LUTRAM", "SRL", "FF (Yosys)", "BRAM18 (Yosys)",
            "DSP (Yosys)", "LUT (FINN est.)", "BRAM18 (FINN est.)", "DSP (FINN est.)",
            "LUT ratio", "BRAM18 ratio", "screen LUT error %")
    rows = []
    for p in points:
        y, f = p.synth.resources, p.synth.finn
        rows.append((p.digest[:8] + (" (chosen)" if p.digest == outcome.chosen else ""),
                     y.lut, p.synth.lut_logic, p.synth.lutram, p.synth.srl, y.ff, y.bram18,
                     y.dsp, f.lut, f.bram18, f.dsp, _ratio(p.synth.ratio("lut")),
                     _ratio(p.synth.ratio("bram18")), 100 * p.synth.screen_error["lut"]))
    return (f"<h2>Synthesis of the final plans</h2><p>Yosys synthesis ({esc(s0.yosys)}, family "
            f"{esc(s0.family)}) of each plan's FINN build, beside FINN's estimate of the same "
            "build; ratio = Yosys / FINN's estimate. The board fit of these plans is checked on "
            "the synthesised counts.</p>" + table(cols, rows))


def _plan_table(point) -> str:
    plan = point.candidate.plan
    rows = [(name, lp["weight_bits"], lp["act_bits"],
             "all" if lp["keep"] is None else len(lp["keep"]))
            for name, lp in plan["layers"].items()]
    return (f"<p>input bits {plan['input_bits']}; plan file {esc(point.plan_file)}</p>"
            + table(("layer", "W bits", "A bits", "kept channels"), rows))


def _error_tables(err) -> str:
    if err is None:
        return "<p>No candidate was estimated by FINN.</p>"
    cols = ("quantity", "nodes", "median %", "worst %", "worst at")
    nodes = [(q, s.count, 100 * s.median, 100 * s.worst, s.worst_at) for q, s in err.nodes.items()]
    screen = [(q, s.count, 100 * s.median, 100 * s.worst, s.worst_at)
              for q, s in err.screen.items()]
    types = [(t, q, s.count, 100 * s.median, 100 * s.worst) for t, qs in err.by_node_type.items()
             for q, s in qs.items() if s.count]
    return (f"<p>{err.candidates} candidates estimated by FINN. Cost model (geometry only) vs "
            "FINN on every node, same folding:</p>" + table(cols, nodes)
            + "<p>The screen's design totals (its own folding) vs FINN's build:</p>"
            + table(("quantity", "candidates", "median %", "worst %", "worst at"), screen)
            + "<p>By node type:</p>"
            + table(("node type", "quantity", "nodes", "median %", "worst %"), types))


def _budget_text(budget: dict) -> str:
    """The limits that are set, e.g. 'max_total_mbit=0.1, board_fraction.lut=0.5'."""
    flat = {**{k: v for k, v in budget.items() if k != "board_fraction"},
            **{f"board_fraction.{k}": v for k, v in budget.get("board_fraction", {}).items()}}
    return ", ".join(f"{k}={v:g}" for k, v in flat.items() if v is not None) or "none"


def search_report_html(outcome) -> str:
    """The search's report: figures, fronts, kept plans, the choice, the cost model's error."""
    o = outcome
    facts = [
        f"{o.dataset}, {o.arch}, board {o.board} at {o.target_fps:,.0f} frames/s target "
        f"(folding: {o.folding}); study {o.study} in {o.storage}",
        f"{o.trials} trials ({o.failed} failed, {o.duplicates} repeated a plan) in "
        f"{o.search_seconds:.0f} s: {o.trials_per_minute:.1f} trials/min; whole search "
        f"{o.total_seconds:.0f} s",
        f"FINN estimates: {o.finn_cache.requests} requests, {o.finn_cache.hits} from the cache "
        f"({100 * o.finn_cache.hit_rate:.0f} %)"
        + (f"; Yosys syntheses: {o.synth_cache.requests}, {o.synth_cache.hits} from the cache"
           if o.synth_cache else ""),
        f"float network: validation accuracy {100 * o.float_val_accuracy:.2f} %"
        + (f", test {100 * o.float_test_accuracy:.2f} %" if o.float_test_accuracy else ""),
        f"budget: {_budget_text(o.budget)}; choice by {o.select}",
    ]
    sections = [f"<ul>{''.join(f'<li>{esc(f)}</li>' for f in facts)}</ul>"]
    if o.infeasible:
        sections.append(f'<p class="bad">{esc(o.infeasible)}</p>')
    sections.append("<h2>Pareto fronts</h2>" + _search_plots(o))
    chosen = o.chosen_point
    if chosen is not None:
        cons = chosen.qat.constraints if chosen.qat else []
        sections.append("<h2>Chosen plan</h2>" + _plan_table(chosen)
                        + table(("constraint", "value", "limit", "unit", "met"),
                                [(c.name, c.value, c.limit, c.unit, "yes" if c.met else "NO")
                                 for c in cons]))
    sections.append("<h2>Plans kept (fronts, full QAT)</h2>" + _points_table(o) + _synth_table(o))
    sections.append("<h2>Cost model vs FINN</h2>" + _error_tables(o.cost_model_error))
    return page(f"densiflow search '{o.name}'", sections)


def write_search_report(outcome, path: Path) -> Path:
    """report.html of a search."""
    atomic_write_text(Path(path), search_report_html(outcome))
    return Path(path)
