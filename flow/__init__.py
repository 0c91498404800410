"""densiflow: hardware-aware compression of PyTorch networks into FINN dataflow accelerators."""
