"""The resource ceiling: the closed-form best frame rate a board's DSP/LUT budget allows for a
network's MACs (MVAUs and depthwise VVAUs), at the calibrated cost model's DSPs and LUTs per
MAC."""
from __future__ import annotations

import math
from collections.abc import Sequence

from hw_models.boards import Board, get_board
from hw_models.cost import Calibration, Layer, MvauLayer, VvauLayer, estimate, load_calibration
from hw_models.folding.report import Budget, Ceiling, FoldingError


def _per_mac(x: MvauLayer | VvauLayer, cal: Calibration) -> tuple[float, float]:
    """(DSPs, LUTs) per MAC of this layer's multipliers, marginal, from the cost model."""
    if isinstance(x, MvauLayer):
        big = {"mw": 256, "mh": 256, "vectors": 1, "acc_bits": None}
        lanes = ((64, 64), (8, 8))  # SIMD, PE: the marginal cost of one more lane
    else:
        big = {"channels": 256, "kernel": (3, 3), "dim": (1, 1), "acc_bits": None}
        lanes = ((9, 64), (9, 8))
    hi, lo = (estimate(x.model_copy(update=big | {"simd": s, "pe": p}), cal).resources
              for s, p in lanes)
    n = lanes[0][0] * lanes[0][1] - lanes[1][0] * lanes[1][1]
    return (hi.dsp - lo.dsp) / n, (hi.lut - lo.lut) / n


def _macs(x: MvauLayer | VvauLayer) -> int:
    if isinstance(x, MvauLayer):
        return x.mw * x.mh * x.vectors
    return x.channels * x.kernel[0] * x.kernel[1] * x.dim[0] * x.dim[1]


def _lut_mult(x: MvauLayer | VvauLayer) -> MvauLayer | VvauLayer:
    return x.model_copy(update={"impl": "hls", "res_type": "lut", "ram_style": "auto"})


def resource_ceiling(layers: Sequence[Layer], board: Board | str, budget: Budget,
                     clock_mhz: float, calibration: Calibration | None = None) -> Ceiling:
    """Closed form: f_clk * min(DSP cap / sum(MACs * DSP/MAC), LUT cap / sum(MACs * LUT/MAC))."""
    cal = calibration or load_calibration()
    caps = budget.caps(get_board(board))
    mvaus = [x for x in layers if isinstance(x, (MvauLayer, VvauLayer))]
    if not mvaus:
        raise FoldingError("the model has no MVAU or VVAU: no MACs to bound the frame rate by")
    macs = [_macs(x) for x in mvaus]
    own = [_per_mac(x, cal) for x in mvaus]
    lutm = [_per_mac(_lut_mult(x), cal)[1] for x in mvaus]
    dsp_need = sum(m * d for m, (d, _) in zip(macs, own))
    lut_need = sum(m * lu for m, (_, lu) in zip(macs, own))
    f = clock_mhz * 1e6
    fps = min(f * caps["dsp"] / dsp_need if dsp_need else math.inf,
              f * caps["lut"] / lut_need if lut_need else math.inf)
    total = sum(macs)
    dsp_macs = sum(m for m, (d, _) in zip(macs, own) if d > 0)
    dpm = dsp_need / dsp_macs if dsp_macs else 0.0
    lpm = sum(m * lu for m, lu in zip(macs, lutm)) / total
    pooled = (caps["dsp"] / dpm if dpm else 0.0) + (caps["lut"] / lpm if lpm else 0.0)
    return Ceiling(macs_per_frame=total, dsp_macs=dsp_macs, lut_macs=total - dsp_macs,
                   dsp_per_mac=dpm, lut_per_mac=lpm, fps=fps, fps_any_multiplier=f * pooled / total)
