"""Synthesis results as typed data: cell counts per node and in total, and FINN's estimate beside.

Yosys' Xilinx cells are counted the way Vivado's utilisation report counts them: LUTs are logic
LUTs (LUT1..LUT6, LUT6_2 and INV, which is implemented in a LUT) plus LUTs used as memory (LUTRAM
primitives weighted by the LUTs each occupies) plus LUTs used as shift registers (SRL16E,
SRLC32E); BRAM is counted in 18 Kb halves (RAMB36 = 2), as FINN counts it.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field, computed_field

from hw_models.resources import BUDGETED, Resources, ResourceSource
from hw_models.synth.errors import SynthesisError

LOGIC_LUTS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "LUT6_2", "INV")
# LUTs each LUTRAM primitive occupies (UG474 7-series CLB guide, UG574 UltraScale CLB guide)
LUTRAM_LUTS = {
    "RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
    "RAM512X1S": 8, "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
    "RAM256X1D": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM64X8SW": 8,
}
SRLS = ("SRL16E", "SRLC16E", "SRLC32E")
FFS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
RAMB18 = ("RAMB18E1", "RAMB18E2")
RAMB36 = ("RAMB36E1", "RAMB36E2")
URAMS = ("URAM288", "URAM288_BASE")
DSPS = ("DSP48E1", "DSP48E2", "DSP58")  # DSP58: FINN's RTL VVAU (Versal), see synth.yosys
# placed without using any of the above (carry chains, wide-function muxes, constants)
ROUTING = ("CARRY4", "CARRY8", "MUXF7", "MUXF8", "MUXF9", "VCC", "GND")
KNOWN = {*LOGIC_LUTS, *LUTRAM_LUTS, *SRLS, *FFS, *RAMB18, *RAMB36, *URAMS, *DSPS, *ROUTING}


class CellCounts(BaseModel):
    """Counts of one node or design, by kind of resource."""

    model_config = ConfigDict(frozen=True)  # dumps carry lut/bram18 too; reading ignores them

    lut_logic: int = 0
    lutram: int = 0  # LUTs used as memory
    srl: int = 0  # LUTs used as shift registers
    ff: int = 0
    ramb18: int = 0
    ramb36: int = 0
    uram: int = 0
    dsp: int = 0
    carry: int = 0  # CARRY4 / CARRY8
    unknown: dict[str, int] = Field(default_factory=dict)  # cell types not classified above

    @computed_field
    @property
    def lut(self) -> int:
        """All LUTs: logic, memory and shift registers."""
        return self.lut_logic + self.lutram + self.srl

    @computed_field
    @property
    def bram18(self) -> int:
        """Block RAM in 18 Kb halves (one RAMB36 is two)."""
        return self.ramb18 + 2 * self.ramb36

    def resources(self) -> Resources:
        """As the shared Resources type (lut, ff, bram18, uram, dsp)."""
        return Resources(lut=self.lut, ff=self.ff, bram18=self.bram18, uram=self.uram,
                         dsp=self.dsp)

    def __add__(self, other: CellCounts) -> CellCounts:
        fields = [f for f in CellCounts.model_fields if f != "unknown"]
        unknown = Counter(self.unknown) + Counter(other.unknown)
        return CellCounts(**{f: getattr(self, f) + getattr(other, f) for f in fields},
                          unknown=dict(unknown))


def count_cells(cells: dict[str, int]) -> CellCounts:
    """Classify Yosys' {cell type: count} of a synthesised Xilinx netlist."""

    def total(types) -> int:
        return sum(cells.get(t, 0) for t in types)

    return CellCounts(
        lut_logic=total(LOGIC_LUTS),
        lutram=sum(n * LUTRAM_LUTS[t] for t, n in cells.items() if t in LUTRAM_LUTS),
        srl=total(SRLS),
        ff=total(FFS),
        ramb18=total(RAMB18),
        ramb36=total(RAMB36),
        uram=total(URAMS),
        dsp=total(DSPS),
        carry=total(("CARRY4", "CARRY8")),
        unknown={t: n for t, n in sorted(cells.items()) if t not in KNOWN},
    )


class NodeSynth(BaseModel):
    """Yosys' result for one node."""

    model_config = ConfigDict(frozen=True)

    name: str
    op_type: str
    counts: CellCounts
    cells: dict[str, int]  # Yosys' cell types as they came
    seconds: float  # its share of its Yosys run's time (of the run that filled the cache)
    cached: bool
    batch_nodes: int  # nodes synthesised by the same Yosys run
    key: str  # content hash of everything its synthesis reads

    @computed_field
    @property
    def resources(self) -> Resources:
        return self.counts.resources()


class SynthReport(BaseModel):
    """Post-synthesis resource counts of a design, per node and in total."""

    model_config = ConfigDict(frozen=True)

    family: str
    yosys: str
    source: ResourceSource = ResourceSource.YOSYS
    nodes: list[NodeSynth]
    wall_seconds: float
    notes: list[str] = Field(default_factory=list)

    @computed_field
    @property
    def totals(self) -> CellCounts:
        out = CellCounts()
        for node in self.nodes:
            out = out + node.counts
        return out

    @computed_field
    @property
    def resources(self) -> Resources:
        return self.totals.resources()

    def node(self, name: str) -> NodeSynth:
        """The result of the node called `name`."""
        return next(n for n in self.nodes if n.name == name)

    def table(self) -> str:
        """Per-node table of the synthesised counts with totals (plain text)."""
        cols = ("LUT", "logic", "LUTRAM", "SRL", "FF", "RAMB18", "RAMB36", "URAM", "DSP", "s")
        width = max([len(n.name) for n in self.nodes] + [5])
        lines = [f"{'node':{width}} " + " ".join(f"{c:>7}" for c in cols)]
        for n in [*self.nodes, None]:
            c = self.totals if n is None else n.counts
            vals = (c.lut, c.lut_logic, c.lutram, c.srl, c.ff, c.ramb18, c.ramb36, c.uram, c.dsp)
            secs = sum(x.seconds for x in self.nodes) if n is None else n.seconds
            label = "total" if n is None else n.name
            lines.append(f"{label:{width}} " + " ".join(f"{v:7d}" for v in vals)
                         + f" {secs:7.1f}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Yosys beside FINN's estimate


class ResourceRatio(BaseModel):
    """One resource of one node (or the total): Yosys' count, FINN's estimate, their ratio."""

    model_config = ConfigDict(frozen=True)

    resource: str
    yosys: float
    finn: float
    ratio: float | None  # yosys / finn; None where FINN estimates 0


class NodeComparison(BaseModel):
    """Yosys vs FINN's estimate for one node, per budgeted resource."""

    model_config = ConfigDict(frozen=True)

    name: str
    op_type: str
    rows: list[ResourceRatio]

    def row(self, resource: str) -> ResourceRatio:
        return next(r for r in self.rows if r.resource == resource)


class Comparison(BaseModel):
    """Yosys vs FINN's estimate, per node and in total."""

    model_config = ConfigDict(frozen=True)

    family: str
    fpgapart: str
    nodes: list[NodeComparison]
    totals: list[ResourceRatio]

    def total(self, resource: str) -> ResourceRatio:
        return next(r for r in self.totals if r.resource == resource)


def _ratio(resource: str, yosys: float, finn: float) -> ResourceRatio:
    return ResourceRatio(resource=resource, yosys=yosys, finn=finn,
                         ratio=None if finn == 0 else yosys / finn)


def _rows(yosys: Resources, finn: Resources) -> list[ResourceRatio]:
    return [_ratio(r, yosys.get(r), finn.get(r)) for r in BUDGETED]


def compare(report: SynthReport, finn: dict[str, Resources], fpgapart: str) -> Comparison:
    """Yosys' counts of `report` beside FINN's per-node estimate `finn` (by node name)."""
    missing = [n.name for n in report.nodes if n.name not in finn]
    if missing:
        raise SynthesisError(f"FINN's estimate has no node(s) {', '.join(missing)}; compare the "
                             "report with the model it was synthesised from")
    nodes = [NodeComparison(name=n.name, op_type=n.op_type, rows=_rows(n.resources, finn[n.name]))
             for n in report.nodes]
    finn_total = Resources.total(finn[n.name] for n in report.nodes)
    return Comparison(family=report.family, fpgapart=fpgapart, nodes=nodes,
                      totals=_rows(report.resources, finn_total))


def _fmt_ratio(r: ResourceRatio) -> str:
    return "-" if r.ratio is None else f"{r.ratio:.2f}"


def render_comparison(comp: Comparison) -> str:
    """Plain-text table: per node and resource, Yosys / FINN (ratio); resources all zero omitted."""
    shown = [t.resource for t in comp.totals if t.yosys or t.finn]
    width = max([len(n.name) for n in comp.nodes] + [5])
    head = f"{'node':{width}} {'op':28}" + "".join(f" {r + ' yosys/finn (x)':>26}" for r in shown)
    lines = [f"Yosys ({comp.family}) vs FINN's estimate ({comp.fpgapart})", head]
    for label, op, rows in [*((n.name, n.op_type, n.rows) for n in comp.nodes),
                            ("total", "", comp.totals)]:
        by = {r.resource: r for r in rows}
        cells = "".join(
            f" {f'{by[r].yosys:g} / {by[r].finn:g} ({_fmt_ratio(by[r])})':>26}" for r in shown
        )
        lines.append(f"{label:{width}} {op:28}{cells}")
    return "\n".join(lines)
