"""densiflow's RTL custom ops for the FINN layers that finn-plus 1.6.1 has only as HLS.

Importing this package registers them in FINN's own registries (`register_custom_op` of
`finn.custom_op.fpgadataflow` and `finn.custom_op.fpgadataflow.rtl`), so that FINN's passes treat
them like FINN's own layers. FINN's python execution of each op stays the golden reference.
`vvau` re-registers FINN's VVAU_rtl so that the RTL depthwise unit exists off Versal too.
"""
from hw_models.finn_ops import (  # noqa: F401
    add_streams,
    duplicate_streams,
    global_acc_pool,
    pool,
    vvau,
)
