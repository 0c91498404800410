"""Compression methods: each turns a trained float network into a CompressionPlan.

base.py holds the interface; params.py the recipe's typed parameters; one file a method.

A method is `make_plan(ctx, params, out_dir) -> MethodOutput`: `params` is the recipe's typed
`method` section (flow.methods.params), `out_dir` the step folder for its artefacts (tables,
plots). A method that trains returns its network too; the qat step then fine-tunes from it
instead of from the float network.
"""
