"""Whether the integer hardware predicts the class PyTorch predicts.

The accelerator's outputs are integers: where two classes tie, it takes the first. PyTorch
computes the same logits in float32, and rounding breaks such a tie either way (seen on digits:
integer logits 11 and 11 for classes 1 and 6, PyTorch 3.4378135 and 3.4378138). A class whose
PyTorch logit is within float32 rounding of the top one therefore agrees.
"""
from __future__ import annotations

import numpy as np

TIE_RTOL = 1e-5  # of the frame's largest |logit|; float32 rounding over a layer's sums


def agrees(classes: np.ndarray, logits: np.ndarray, rtol: float = TIE_RTOL) -> np.ndarray:
    """Per frame: `classes[i]` is a top class of `logits[i]` (ties within rounding count)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    picked = logits[np.arange(len(logits)), np.asarray(classes).reshape(-1)]
    return picked >= logits.max(1) - rtol * np.abs(logits).max(1)
