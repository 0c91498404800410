"""The README's method tables: rendered from hand-made typed tables against hand-written Markdown,
read back from their files, and a file of another layout refused in one line."""
from __future__ import annotations

import json

import pytest

from flow.core.errors import ArtefactError
from flow.methods.aqp.report import AqpClaimCheck, AqpRow, AqpTable
from flow.methods.dfq.report import DfqRow, DfqTable
from flow.methods.qsparse.report import QsparseRow, QsparseTable
from flow.methods.variant_estimate import FinnEstimate, rows_csv
from flow.report.figures import (
    aqp_markdown,
    aqp_table,
    dfq_markdown,
    dfq_table,
    qsparse_markdown,
    qsparse_table,
)

FINN = FinnEstimate(lut_finn_estimate=12345.4, bram18_finn_estimate=7.0, dsp_finn_estimate=0.0,
                    fps_finn_estimate=98765.6)


def aqp_row(method: str, kind: str, avg_bits: float, size: float, acc: float,
            diff: float) -> AqpRow:
    return AqpRow(method=method, kind=kind, stage="s", model="digits_cnn", params_million=0.047,
                  nonzero_params=47376, avg_bits=avg_bits, param_size_mbyte=size,
                  weight_mbit=8 * size, weight_sparse_mbit=None, compression_ratio=32 / avg_bits,
                  val_accuracy=acc, test_accuracy=acc, accuracy_diff_points=diff, qat_s=None)


AQP = AqpTable(
    rows=[aqp_row("Float baseline", "float", 32.0, 0.189504, 0.98, 0.0),
          aqp_row("AQP (combined)", "adaptive", 2.4567, 0.0145487, 0.97753, -0.247)],
    chosen="AQP (combined)",
    check=AqpClaimCheck(chosen="AQP (combined)", accuracy_diff_points=-0.247, avg_bits=2.4567,
                        loss_ok=True, bits_ok=True, beats_smaller_fixed={}, passed=True),
    per_layer=None, importance=[])
AQP_MD = """\
| method | avg bits b̄ | param size (MB) | test accuracy (stage: QAT fine-tune; float: float training) | Δ vs float (points) |
|---|---|---|---|---|
| Float baseline | 32.00 | 0.1895 | 98.00 % | +0.00 |
| AQP (combined) | 2.46 | 0.0145 | 97.75 % | -0.25 |"""  # noqa: E501


def qsparse_row(method: str, schedule: str, bits: int, s_w: float, acc: float, pd: float,
                finn: FinnEstimate | None) -> QsparseRow:
    return QsparseRow(method=method, schedule=schedule, sparsity=0.5, weight_bits=bits,
                      act_bits=bits, weight_sparsity=s_w, act_sparsity=s_w / 2,
                      float_test_accuracy=0.98, test_accuracy=acc,
                      accuracy_diff_points=100 * (acc - 0.98), weight_mbit=1.23456,
                      act_mbit=0.065432, performance_density_percent_per_mbit=pd, finn=finn,
                      prune_s=None, qat_s=1.0)


QSPARSE = QsparseTable(
    rows=[qsparse_row("Float baseline", "none", 32, 0.0, 0.98, 75.4, None),
          qsparse_row("Layerwise (A) 50%", "layerwise_a", 4, 0.7499, 0.96666, 1234.4, FINN)],
    chosen="Layerwise (A) 50%", finn_source="FINN", rank_agreement=[],
    checks={"layerwise_a >= one_shot at 50%": True, "layerwise_a >= stepwise at 50%": False})
QSPARSE_MD = """\
| variant | N_W/N_A | s_W | s_A | accuracy | weights Mbit | acts Mbit | PD %/Mbit | LUT (FINN est.) | BRAM18 | DSP | frames/s |
|---|---|---|---|---|---|---|---|---|---|---|---|
| Float baseline | 32/32 | 0.000 | 0.000 | 98.00 % | 1.2346 | 0.0654 | 75 | - | - | - | - |
| Layerwise (A) 50% | 4/4 | 0.750 | 0.375 | 96.67 % | 1.2346 | 0.0654 | 1234 | 12,345 | 7 | 0 | 98,766 |

Claims: layerwise_a >= one_shot at 50%: yes; layerwise_a >= stepwise at 50%: NO."""  # noqa: E501


def dfq_row(method: str, bits: int | dict[str, int], compression: float, acc: float,
            finn: FinnEstimate | None) -> DfqRow:
    return DfqRow(method=method, weight_bits=bits, avg_bits=32 / compression,
                  compression_ratio=compression, test_accuracy=acc,
                  accuracy_diff_points=100 * (acc - 0.98), weight_mbit=0.1,
                  finn=finn, lut_bram18_board_share=None, search_s=None, qat_s=None)


DFQ = DfqTable(
    rows=[dfq_row("float32", 32, 1.0, 0.98, None),
          dfq_row("DFQ (size)", {"conv1": 8, "conv2": 2, "fc1": 8}, 12.346, 0.9712, FINN)],
    chosen="DFQ (size)", act_bits=4, finn_source="FINN", searches={},
    checks={"compression >= 10x": True})
DFQ_MD = """\
| row | weight bits per layer | compression | accuracy | Δ points | LUT (FINN est.) | BRAM18 | DSP | frames/s |
|---|---|---|---|---|---|---|---|---|
| float32 | 32 | 1.00x | 98.00 % | +0.00 | - | - | - | - |
| DFQ (size) | 8 2 8 | 12.35x | 97.12 % | -0.88 | 12,345 | 7 | 0 | 98,766 |

Claims: compression >= 10x: yes."""  # noqa: E501

CASES = [(AQP, aqp_markdown, aqp_table, "aqp_table.json", AQP_MD),
         (QSPARSE, qsparse_markdown, qsparse_table, "qsparse_table.json", QSPARSE_MD),
         (DFQ, dfq_markdown, dfq_table, "dfq_table.json", DFQ_MD)]


@pytest.mark.parametrize("table, render, _read, _name, expected", CASES)
def test_table_renders_as_the_readme_shows_it(table, render, _read, _name, expected):
    assert render(table) == expected


@pytest.mark.parametrize("table, _render, read, name, expected", CASES)
def test_table_file_reads_back_through_its_model(tmp_path, table, _render, read, name, expected):
    (tmp_path / "02_plan").mkdir()
    (tmp_path / "02_plan" / name).write_text(json.dumps(table.model_dump(mode="json")))
    assert read(tmp_path) == expected


@pytest.mark.parametrize("table, _render, read, name, _expected", CASES)
def test_a_table_file_of_another_layout_is_refused_in_one_line(tmp_path, table, _render, read,
                                                               name, _expected):
    data = table.model_dump(mode="json")
    data["rows"][0]["accuracy"] = data["rows"][0].pop("test_accuracy")  # the untyped layout
    path = tmp_path / "02_plan" / name
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    with pytest.raises(ArtefactError, match=rf"^{path} is not a {type(table).__name__} .*"
                                            r"rows\.0\.test_accuracy.* --from plan$") as err:
        read(tmp_path)
    assert "\n" not in str(err.value)
    path.unlink()
    with pytest.raises(ArtefactError, match=rf"^{path} is missing; .* --from plan$"):
        read(tmp_path)


def test_csv_splices_the_finn_estimate_in_place():
    text = rows_csv(DFQ.rows)
    head, float_row, dfq = text.splitlines()
    assert head == ("method,weight_bits,avg_bits,compression_ratio,test_accuracy,"
                    "accuracy_diff_points,weight_mbit,lut_finn_estimate,bram18_finn_estimate,"
                    "dsp_finn_estimate,fps_finn_estimate,lut_bram18_board_share,search_s,qat_s")
    assert float_row == "float32,32,32,1,0.98,0,0.1,,,,,,,"
    assert dfq == ("DFQ (size),conv1:8 conv2:2 fc1:8,2.59193,12.346,0.9712,-0.88,0.1,12345.4,7,0,"
                   "98765.6,,,")
