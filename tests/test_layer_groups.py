"""FINN's HW nodes attributed to plan layers by their QONNX origin (the per-layer table)."""
from flow.finn import LayerEstimate
from flow.report.summary import group_hw_layers
from hw_models.resources import Resources


def _row(name: str, op: str, origin: str | None) -> LayerEstimate:
    return LayerEstimate(name=name, op_type=op, impl_style="rtl", pe=1, simd=1,
                         resources=Resources(), cycles=1, origin=origin)


def test_residual_nodes_follow_their_origin_not_the_graph_order():
    # ONNX order of a projection block: the shortcut's MVAU comes before the branch's conv2
    rows = [_row("swg0", "ConvolutionInputGenerator_rtl", "Im2Col_0 (stem)"),
            _row("mvau0", "MVAU_rtl", "Conv_0 (stem)"),
            _row("dup", "DuplicateStreams_rtl", "Relu_0 (stem)x"),
            _row("fifo", "StreamingFIFO_rtl", None),
            _row("mvau_sc", "MVAU_rtl", "Conv_2 (b.shortcut)"),
            _row("mvau1", "MVAU_rtl", "Conv_1 (b.conv1)"),
            _row("thr1", "Thresholding_rtl", "Quant_3 (b.conv1)"),
            _row("add", "AddStreams_rtl", "Add_0 (b.add)"),
            _row("thr_add", "Thresholding_rtl", "Quant_4 (b.add)"),
            _row("mvau2", "MVAU_rtl", "Conv_3 (b.conv2)"),
            _row("fc", "MVAU_rtl", "MatMul_0 (fc)"),
            _row("tail_fifo", "StreamingFIFO_rtl", None)]
    names = ["stem", "b.conv1", "b.conv2", "b.shortcut", "fc"]
    groups = group_hw_layers(rows, names)
    assert {k: [r.name for r in v] for k, v in groups.items()} == {
        "stem": ["swg0", "mvau0"], "b.shortcut": ["dup", "fifo", "mvau_sc"],
        "b.conv1": ["mvau1", "thr1"], "b.conv2": ["add", "thr_add", "mvau2"],
        "fc": ["fc", "tail_fifo"]}


def test_a_foreign_model_is_not_grouped():
    rows = [_row("mvau0", "MVAU_rtl", None), _row("fc", "MVAU_rtl", "MatMul_0 (fc)")]
    assert group_hw_layers(rows, ["conv", "fc"]) == {}
    assert group_hw_layers(rows[1:], ["conv", "fc"]) == {}
