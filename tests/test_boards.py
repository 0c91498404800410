"""Board catalogue, resource fit and the analytical cycle model (hw_models), in closed form."""
import math

import pytest
from finn.util.basic import get_dsp_block, part_map
from finn.util.platforms import platforms

from hw_models.boards import BOARDS, board_names, get_board
from hw_models.cycles import critical_path_cycles, pipeline_performance, throughput_fps
from hw_models.errors import HardwareError, UnknownBoardError
from hw_models.fit import fit
from hw_models.resources import BUDGETED, Resources, ResourceSource

# device totals from AMD's product tables (DS190, DS891, DS987, DS962); BRAM in 18 Kb halves
EXPECTED = {
    "Pynq-Z1": ("xc7z020clg400-1", 53_200, 106_400, 280, 0, 220, "DSP48E1"),
    "ZCU104": ("xczu7ev-ffvc1156-2-e", 230_400, 460_800, 624, 96, 1_728, "DSP48E2"),
    "KV260": ("xck26-sfvc784-2LV-c", 117_120, 234_240, 288, 64, 1_248, "DSP48E2"),
    "U250": ("xcu250-figd2104-2L-e", 1_728_000, 3_456_000, 5_376, 1_280, 12_288, "DSP48E2"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_board_counts(name):
    b = get_board(name)
    assert (b.part, b.lut, b.ff, b.bram18, b.uram, b.dsp, b.dsp_type) == EXPECTED[name]
    assert b.capacity() == Resources(lut=b.lut, bram18=b.bram18, uram=b.uram, dsp=b.dsp, ff=b.ff)
    assert b.clock_hz == b.clock_mhz * 1e6 > 0


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.name)
def test_board_agrees_with_finn(board):
    # FINN's part map and DSP family for the same board
    assert part_map[board.finn_board] == board.part
    assert get_dsp_block(board.part) == board.dsp_type
    # FINN's platform tables hold what Vivado leaves usable: never more than the device totals
    if board.finn_board in platforms:
        slrs = platforms[board.finn_board]().compute_resources
        lut, ff, bram18, uram, dsp = (sum(s[i] for s in slrs) for i in range(5))
        assert lut <= board.lut and ff <= board.ff and bram18 <= board.bram18
        assert uram <= board.uram and dsp <= board.dsp
        assert lut >= 0.85 * board.lut and dsp >= 0.9 * board.dsp  # same device, not another


@pytest.mark.parametrize(
    "alias, name",
    [("pynq-z1", "Pynq-Z1"), ("PYNQ-Z1", "Pynq-Z1"), ("zcu104", "ZCU104"), ("Kv260", "KV260"),
     ("kv260_som", "KV260"), ("u250", "U250"), (" Alveo-U250 ", "U250")],
)
def test_lookup_is_case_insensitive(alias, name):
    assert get_board(alias).name == name
    assert get_board(get_board(alias)) is get_board(alias)


def test_unknown_board_lists_allowed_names():
    with pytest.raises(UnknownBoardError) as err:
        get_board("zcu102")
    assert isinstance(err.value, HardwareError)
    for name in board_names():
        assert name in str(err.value)


# ----------------------------------------------------------------------------- resources

FINN = ResourceSource.FINN_ESTIMATE


def test_totals_sum_each_resource():
    parts = [Resources(lut=100, bram18=2, dsp=3), Resources(lut=50.5, uram=1, ff=999)]
    assert Resources.total(parts) == Resources(lut=150.5, bram18=2, uram=1, dsp=3, ff=999)
    assert Resources.total([Resources(lut=1)]).ff is None  # no source counted FFs


def test_fit_per_resource_closed_form():
    z1 = get_board("pynq-z1")  # 53,200 LUT, 280 BRAM18, 0 URAM, 220 DSP
    report = fit(Resources(lut=26_600, bram18=280, uram=0, dsp=221), z1, FINN)
    rows = {r.resource: r for r in report.rows}
    assert list(rows) == list(BUDGETED)
    assert rows["lut"].utilisation == 0.5 and rows["lut"].fits
    assert rows["bram18"].utilisation == 1.0 and rows["bram18"].fits  # exactly full still fits
    assert rows["uram"].utilisation == 0.0 and rows["uram"].fits
    assert rows["dsp"].used == 221 and rows["dsp"].available == 220 and not rows["dsp"].fits
    assert not report.fits and report.over == ["dsp"]
    assert "dsp 221/220" in report.describe() and "OVER" in report.describe()
    assert report.source is FINN


def test_fit_reports_every_resource_over_and_missing_uram():
    report = fit(Resources(lut=60_000, bram18=300, uram=1, dsp=0), "Pynq-Z1", FINN)
    assert report.over == ["lut", "bram18", "uram"]  # Zynq-7020 has no URAM at all
    assert math.isinf(report.row("uram").utilisation)


def test_fit_limit_and_bad_limit():
    used = Resources(lut=40_000)
    assert fit(used, "pynq-z1", FINN).fits
    assert fit(used, "pynq-z1", FINN, limit=0.7).over == ["lut"]  # 40,000 > 0.7 * 53,200
    with pytest.raises(ValueError):
        fit(used, "pynq-z1", FINN, limit=1.5)


def test_resources_reject_negative_and_unknown_names():
    with pytest.raises(ValueError):
        Resources(lut=-1)
    with pytest.raises(KeyError, match="lut, bram18"):
        Resources().get("LUT")


# ----------------------------------------------------------------------------- cycles


def test_pipeline_performance_closed_form():
    cycles = {"a": 100, "b": 400, "c": 250}
    perf = pipeline_performance(cycles, clock_mhz=200.0)
    assert perf.steady_state_cycles == 400 and perf.bottleneck == "b"
    assert perf.fps == 200e6 / 400 == 500_000
    assert perf.latency_cycles == 750  # first frame: sum along the chain
    assert perf.latency_us == pytest.approx(750 / 200.0)
    assert perf.to_dict()["fps"] == perf.fps


def test_critical_path_of_a_branching_graph():
    # a -> (b | c) -> d: the longest path goes through b
    cycles = {"a": 10, "b": 50, "c": 20, "d": 5}
    preds = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert critical_path_cycles(cycles, preds) == 65
    assert critical_path_cycles(cycles) == 85  # no graph given: a plain chain
    assert pipeline_performance(cycles, 100.0, preds).latency_cycles == 65


def test_cycle_model_rejects_empty_or_zero():
    with pytest.raises(ValueError):
        pipeline_performance({}, 100.0)
    with pytest.raises(ValueError):
        throughput_fps(0, 100.0)
