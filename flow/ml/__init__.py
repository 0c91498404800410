"""Data, training, metrics, QONNX export and class agreement."""
