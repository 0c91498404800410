"""Yosys synthesis of a FINN build: the run's `synth` step (hardware.synth: yosys),
`densiflow synth RUN` and `densiflow estimate --synth`.

The HDL of the build's folded RTL chain is generated for the board's part (so that the MVAUs
instantiate the board family's DSP slices) and every node is synthesised by hw_models.synth,
cached by content. The result, per node and in total next to FINN's estimate with the ratio per
resource, is written as synth.json, synth_nodes.txt and synth_vs_finn.txt.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from flow.core.io import atomic_write_text
from flow.finn import FinnBuild
from hw_models.boards import get_board
from hw_models.fit import FitReport, fit
from hw_models.synth import Comparison, SynthReport

Progress = Callable[[str, int, int], None]  # node, done, total


class SynthResult(BaseModel):
    """Yosys' counts of a FINN build, FINN's estimate beside them, and the board fit on them."""

    report: SynthReport
    comparison: Comparison
    fit: FitReport  # on the synthesised counts


def synth_cache(out_root: Path) -> Path:
    """Yosys results, shared by the runs of one output root ($DENSIFLOW_SYNTH_CACHE wins)."""
    env = os.environ.get("DENSIFLOW_SYNTH_CACHE")
    return Path(env) if env else Path(out_root) / "synth_cache"


def synthesise_build(build: FinnBuild, out_dir: Path, cache_dir: Path,
                     progress: Progress | None = None) -> SynthResult:
    """Generate the build's HDL into out_dir/rtl, synthesise every node, write the tables."""
    from hw_models.rtlsim import generate_rtl
    from hw_models.synth import compare_with_finn, render_comparison, synthesise_design

    board = get_board(build.board)
    rtl = generate_rtl(build.path("dataflow_rtl"), out_dir / "rtl", fpgapart=board.part,
                       clk_ns=1000.0 / build.clock_mhz)
    report = synthesise_design(rtl, board.family, cache_dir=cache_dir, progress=progress)
    comparison = compare_with_finn(report, rtl, board.part)
    result = SynthResult(report=report, comparison=comparison,
                         fit=fit(report.resources, board, report.source))
    atomic_write_text(out_dir / "synth.json", result.model_dump_json(indent=1))
    atomic_write_text(out_dir / "synth_nodes.txt", report.table() + "\n")
    atomic_write_text(out_dir / "synth_vs_finn.txt", render_comparison(comparison) + "\n")
    return result


def summary_line(result: SynthResult) -> str:
    """Synthesised totals beside FINN's estimate and the ratio, one line."""
    parts = []
    for r in result.comparison.totals:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        parts.append(f"{r.resource.upper()} {r.yosys:,.0f} vs {r.finn:,.0f} ({ratio})")
    c = result.report.totals
    fits = "fits" if result.fit.fits else f"DOES NOT FIT (over: {', '.join(result.fit.over)})"
    return (f"Yosys synthesis ({result.report.family}) vs FINN estimate: " + ", ".join(parts)
            + f"; LUT = {c.lut_logic:,} logic + {c.lutram:,} LUTRAM + {c.srl:,} SRL, "
            f"FF {c.ff:,}; {fits}")
