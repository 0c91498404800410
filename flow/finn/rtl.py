"""The stitched RTL of a folded dataflow model: per-node HDL, one top module, its file list.

The same RTL the Verilator simulation verified bit-exact (hw_models.rtlsim: FINN's HDL generation
node by node, finn-rtllib with the Verilator fixes, which are equivalent rewrites, and the
graph's top module), written as plain files that a synthesis tool reads in `filelist.f`'s order.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flow.core.io import atomic_write_text

FILELIST = "filelist.f"  # one source per line, relative to the RTL folder, packages first
TOP_FILE = "top.sv"


class StitchedRtl(BaseModel):
    """The stitched RTL in a folder; paths relative to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top_module: str
    files: list[str]  # compile order, TOP_FILE last
    data_files: list[str]  # memory initialisation files ($readmemh) the top points at
    data_dir: str  # absolute path of the node folders written into TOP_FILE
    in_width: int  # AXI-Stream data widths of the top's in0_V / out0_V
    out_width: int


def _sources(nodes: list, out: Path) -> tuple[list, list[str], list[str]]:
    """(node sources, library + generated files, data files), written below `out`."""
    from hw_models.rtlsim.sources import collect_node_sources, patched_text, rtllib_dir

    lib = rtllib_dir()
    srcs = [collect_node_sources(n, lib) for n in nodes]
    files: list[str] = []
    data: list[str] = []
    for src in srcs:
        for rel in src.library:
            if f"lib/{rel}" not in files:
                atomic_write_text(out / "lib" / rel, patched_text(rel, (lib / rel).read_text()))
                files.append(f"lib/{rel}")
        files += [f.relative_to(out).as_posix() for f in src.generated]
        data += [f.resolve().relative_to(out).as_posix() for f in src.data]
    packages = [f for f in files if f.endswith("_pkg.sv")]
    return srcs, packages + [f for f in files if f not in packages], data


def stitch_rtl(model_path: Path | str, out_dir: Path | str, part: str,
               clock_mhz: float) -> StitchedRtl:
    """Generate each node's HDL into out_dir/nodes/, the top module and filelist.f.

    Needs FINN's settings (flow.finn.settings.finn_settings) around it.
    """
    from hw_models.rtlsim import generate_rtl
    from hw_models.rtlsim.stitch import (
        TOP_MODULE,
        check_links,
        dataflow_graph,
        find_ports,
        render_top,
        top_streams,
    )

    out = Path(out_dir).resolve()
    model = generate_rtl(model_path, out / "nodes", fpgapart=part, clk_ns=1000.0 / clock_mhz)
    graph = dataflow_graph(model)
    check_links(graph.infos, graph.edges)
    srcs, files, data = _sources(graph.nodes, out)
    ports = [find_ports(s.generated, s.top_module) for s in srcs]
    streamers = [find_ports(s.generated, s.weight_streamer) if s.weight_streamer else None
                 for s in srcs]
    data_dir = str(out / "nodes")
    atomic_write_text(out / TOP_FILE, render_top(graph.infos, srcs, ports, streamers, data_dir,
                                                 graph.edges))
    files.append(TOP_FILE)
    atomic_write_text(out / FILELIST, "\n".join(files) + "\n")
    ins, outs = top_streams(graph.edges)
    return StitchedRtl(top_module=TOP_MODULE, files=files, data_files=data, data_dir=data_dir,
                       in_width=graph.edges[ins[0]].width, out_width=graph.edges[outs[0]].width)
