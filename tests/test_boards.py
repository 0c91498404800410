"""Board catalogue, resource fit and the analytical cycle model (hw_models), in closed form."""
import math

import pytest
from finn.util.basic import get_dsp_block, part_map
from finn.util.platforms import platforms

from hw_models.boards import BOARDS, Board, board_names, get_board
from hw_models.cycles import critical_path_cycles, pipeline_performance, throughput_fps
from hw_models.errors import HardwareError, UnknownBoardError
from hw_models.resources import RESOURCES, fit, total_resources

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
    assert b.capacity() == {"LUT": b.lut, "BRAM18": b.bram18, "URAM": b.uram, "DSP": b.dsp}
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


def test_board_is_frozen():
    with pytest.raises(AttributeError):
        get_board("zcu104").dsp = 1  # type: ignore[misc]
    assert isinstance(BOARDS[0], Board)


# ----------------------------------------------------------------------------- resources


def test_totals_sum_each_resource():
    layers = [{"LUT": 100, "BRAM18": 2, "DSP": 3}, {"LUT": 50.5, "URAM": 1, "FF": 999}]
    assert total_resources(layers) == {"LUT": 150.5, "BRAM18": 2, "URAM": 1, "DSP": 3}


def test_fit_per_resource_closed_form():
    z1 = get_board("pynq-z1")  # 53,200 LUT, 280 BRAM18, 0 URAM, 220 DSP
    report = fit({"LUT": 26_600, "BRAM18": 280, "URAM": 0, "DSP": 221}, z1)
    rows = {r.resource: r for r in report.rows}
    assert list(rows) == list(RESOURCES)
    assert rows["LUT"].utilisation == 0.5 and rows["LUT"].fits
    assert rows["BRAM18"].utilisation == 1.0 and rows["BRAM18"].fits  # exactly full still fits
    assert rows["URAM"].utilisation == 0.0 and rows["URAM"].fits
    assert rows["DSP"].used == 221 and rows["DSP"].available == 220 and not rows["DSP"].fits
    assert not report.fits and report.over == ["DSP"]
    assert "DSP 221/220" in report.describe() and "OVER" in report.describe()
    d = report.to_dict()
    assert d["fits"] is False and d["over"] == ["DSP"] and d["resources"]["LUT"]["fits"]


def test_fit_reports_every_resource_over_and_missing_uram():
    report = fit({"LUT": 60_000, "BRAM18": 300, "URAM": 1, "DSP": 0}, "Pynq-Z1")
    assert report.over == ["LUT", "BRAM18", "URAM"]  # Zynq-7020 has no URAM at all
    assert math.isinf(report.row("URAM").utilisation)


def test_fit_limit_and_bad_limit():
    totals = {"LUT": 40_000}
    assert fit(totals, "pynq-z1").fits
    assert fit(totals, "pynq-z1", limit=0.7).over == ["LUT"]  # 40,000 > 0.7 * 53,200
    with pytest.raises(ValueError):
        fit(totals, "pynq-z1", limit=1.5)


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
