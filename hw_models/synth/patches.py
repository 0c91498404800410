"""finn-rtllib text as Yosys' slang frontend gets it: small, checked patches of a copy.

finn-rtllib is never edited in site-packages. Each patch replaces text that must occur exactly
once in the upstream file; when FINN changes a file so that a patch no longer matches, synthesis
stops with a SynthesisError naming the file instead of silently synthesising something else.
Every patch keeps the hardware the same: it only rewrites constructs slang or Yosys reject or
map badly (see the comment on each).
"""

from __future__ import annotations

from collections.abc import Callable

from hw_models.rtlsim.sources import PATCHES as RTLSIM_PATCHES
from hw_models.synth.errors import SynthesisError

_TAG = "densiflow synth patch"

# slang: "`default_nettype" is not allowed inside a design element.
_NETTYPE = (
    ("`default_nettype none", f"// {_TAG}: `default_nettype none (not allowed inside a module)"),
    ("`default_nettype wire", f"// {_TAG}: `default_nettype wire (not allowed inside a module)"),
)

# A simulation-only startup watchdog (`#100ns` delay, assertion); synthesis tools skip it.
_WATCHDOG = (
    ("if(1) begin : blkRecoveryWatch",
     f"if(0) begin : blkRecoveryWatch  // {_TAG}: simulation-only watchdog"),
)

# Shift-register arrays: declared ascending, read_slang indexes them through an inversion that
# hides the shift register from Yosys' SRL inference. Declaring them descending and shifting the
# other way round keeps element i the same (element 0 is the newest word).
_SRL_NOTE = f"  // {_TAG}: descending, so that Yosys infers SRLs"

_SYNTH_PATCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "dwc/hdl/vpc.sv": _NETTYPE,
    "fifo/hdl/fifo.sv": (
        *_NETTYPE,
        ("dat_t  A[DEPTH_IMPL];", "dat_t  A[DEPTH_IMPL-1:0];" + _SRL_NOTE),
        ("A <= { idat, A[0:DEPTH_IMPL-2] };", "A <= { A[DEPTH_IMPL-2:0], idat };"),
    ),
    "memstream/hdl/memstream.sv": (
        ("data_t  OSrl[FULL_CREDIT-1];", "data_t  OSrl[FULL_CREDIT-2:0];" + _SRL_NOTE),
        ("OSrl <= { Dat3, OSrl[0:FULL_CREDIT-3] };", "OSrl <= { OSrl[FULL_CREDIT-3:0], Dat3 };"),
    ),
    "mvu/mvu_vvu_axi.sv": (
        ("output_t  OBuf[0:MAX_IN_FLIGHT];", "output_t  OBuf[MAX_IN_FLIGHT:0];" + _SRL_NOTE),
        ("OBuf <= { odat, OBuf[0:MAX_IN_FLIGHT-1] };",
         "OBuf <= { OBuf[MAX_IN_FLIGHT-1:0], odat };"),
    ),
    "mvu/mvu.sv": _WATCHDOG,
    "mvu/mvu_vvu_8sx9_dsp58.sv": _WATCHDOG,
    # slang: "unsynthesizable feature" for the reversed part-select p.ptr[M-1:M] at stage 0 (the
    # expression is never selected there: SCOPE_REDUCE is 0); a shift reads the same bits.
    "thresholding/hdl/thresholding.sv": (
        ("p.ptr[M-1:SN+1] < 2**stage - SCOPE_REDUCE;",
         f"(p.ptr[M-1:0] >> (SN+1)) < 2**stage - SCOPE_REDUCE;  // {_TAG}: no reversed select"),
    ),
}


def replace_checked(text: str, rel: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """Apply each (old, new) replacement to finn-rtllib file `rel`; each old must occur once."""
    for old, new in pairs:
        count = text.count(old)
        if count != 1:
            raise SynthesisError(
                f"finn-rtllib/{rel} changed upstream: the text the synthesis patch replaces "
                f"({old!r}) was found {count} times (expected once); update "
                "hw_models/synth/patches.py for this FINN version"
            )
        text = text.replace(old, new)
    return text


def _patch(rel: str) -> Callable[[str], str] | None:
    if rel == "mvu/add_multi.sv":
        # slang rejects the constant function under generate as Verilator does: same patch
        return RTLSIM_PATCHES[rel]
    pairs = _SYNTH_PATCHES.get(rel)
    return None if pairs is None else (lambda text: replace_checked(text, rel, pairs))


def synth_text(rel: str, text: str) -> str:
    """The text of finn-rtllib file `rel` (path relative to finn-rtllib) as Yosys gets it."""
    patch = _patch(rel)
    return patch(text) if patch else text


def patched_files() -> list[str]:
    """The finn-rtllib files (relative paths) that synthesis patches."""
    return sorted([*_SYNTH_PATCHES, "mvu/add_multi.sv"])
