"""Typed parameters of every compression method: the recipe's `method:` section.

`METHODS` is the one registry of methods: each parameter class names its method (`name`) and the
function that makes its plan (`implementation`, "module:function", imported only when it runs, so
that the recipe does not import the methods). `MethodParams` is their union discriminated by
`name`, so a recipe is checked whole, method parameters included, when it is loaded. Bounds that
depend on the hardware target (1-bit weights only where HLS layers are allowed) are checked by
`check_bits`, called by the recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from flow.recipe.plan import MAX_PRUNE_K
from hw_models.rules import MAX_BITS, MIN_ACT_BITS

Bits = Annotated[int, Field(ge=1, le=MAX_BITS)]
ActBits = Annotated[int, Field(ge=MIN_ACT_BITS, le=MAX_BITS)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
KeepFraction = Annotated[float, Field(gt=0, le=1)]
STORAGE_SCHEMES = ("postgresql://", "postgresql+psycopg://", "sqlite:///")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # recipe sections besides `method` and `qat` the method reads (dotted paths), so that a
    # change there redoes the plan step
    reads: ClassVar[tuple[str, ...]] = ()
    # "module:function" of the method's make_plan(ctx, params, out_dir) -> MethodOutput
    implementation: ClassVar[str]

    def input_files(self) -> list[str]:
        """Files the method reads (their content is part of the plan step's inputs)."""
        return []

    def plan_files(self) -> list[str]:
        """Plan files the method uses as they are (checked against the network at load)."""
        return []

    def weight_bit_fields(self) -> dict[str, list[int]]:
        """Every weight bit-width the method may use, by field name (checked against the target)."""
        return {}

    def check_bits(self, min_weight_bits: int, why: str) -> None:
        """Raise ValueError naming the field if a weight bit-width is below the target's minimum."""
        for field, values in self.weight_bit_fields().items():
            low = [b for b in values if b < min_weight_bits]
            if low:
                raise ValueError(f"method.{field}: {low[0]} bits is below {min_weight_bits}: {why}")


class UniformParams(_Params):
    """One weight/activation width for every layer (the fixed baselines)."""

    name: Literal["uniform"]
    implementation: ClassVar[str] = "flow.methods.uniform:make_plan"
    weight_bits: Bits
    act_bits: ActBits
    input_bits: Bits | None = None  # None: the data's pixel bits (capped at 8)

    def weight_bit_fields(self) -> dict[str, list[int]]:
        return {"weight_bits": [self.weight_bits]}


class AqpParams(_Params):
    """AQP ("Adaptive Quantization and Pruning of Deep Neural Networks via Layer Importance
    Estimation"): layer importance, then a per-layer bits/pruning search in T_margin(l)."""

    name: Literal["aqp"]
    implementation: ClassVar[str] = "flow.methods.aqp:make_plan"
    mode: Literal["quant", "prune", "combined"] = "combined"
    pruning: Literal["unstructured", "structured"] = "unstructured"
    t_margin: float = Field(default=0.03, ge=0)  # total val cross-entropy rise (nats) to spend
    max_bits: Bits = 8
    k_max: float = Field(default=3.0, ge=0, le=MAX_PRUNE_K)
    k_step: float = Field(default=0.25, gt=0)
    act_bits: Literal["follow"] | ActBits = "follow"  # "follow" the weights, or fixed
    min_act_bits: ActBits = MIN_ACT_BITS
    fixed_layers: Literal["ends", "none"] | list[str] = "ends"
    order: Literal["bits_first", "prune_first"] = "bits_first"
    importance: dict[str, float] | None = None  # measure -> weight, summing to 1; None: equal
    calib_samples: int = Field(default=256, ge=1)
    trial_epochs: int = Field(default=0, ge=0)
    trial_samples: int = Field(default=256, ge=1)
    min_keep: int = Field(default=2, ge=1)
    report: bool = True
    baseline_bits: list[Bits] = [2, 3, 4, 8]
    baseline_prune: list[Fraction] = [0.25, 0.5, 0.75]
    baseline_prune_bits: Bits = 8

    @field_validator("importance")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        from flow.importance.weights import check_weights

        return None if value is None else check_weights(value)

    def weight_bit_fields(self) -> dict[str, list[int]]:
        return {"max_bits": [self.max_bits], "baseline_bits": self.baseline_bits,
                "baseline_prune_bits": [self.baseline_prune_bits]}

    def fixed(self, layer_names: list[str]) -> list[str]:
        """Layers the search leaves at max_bits and unpruned ("ends": first and classifier)."""
        if self.fixed_layers == "ends":
            return [layer_names[0], layer_names[-1]]
        if self.fixed_layers == "none":
            return []
        unknown = sorted(set(self.fixed_layers) - set(layer_names))
        if unknown:
            raise ValueError(f"method.fixed_layers: unknown layers {unknown}; "
                             f"the layers are {layer_names}")
        return list(self.fixed_layers)


class PlanFileParams(_Params):
    """A plan written by a person or by the search (a Pareto point), used as it is."""

    name: Literal["plan"]
    implementation: ClassVar[str] = "flow.methods.plan_file:make_plan"
    path: str  # YAML/JSON plan file; relative to the recipe file's folder

    @field_validator("path")
    @classmethod
    def _readable_plan(cls, value: str, info: ValidationInfo) -> str:
        from flow.recipe.plan import CompressionPlan

        base = (info.context or {}).get("base")
        path = Path(base, value) if base is not None else Path(value)
        CompressionPlan.load(path)  # a ConfigError (a ValueError) names what is wrong
        return str(path.resolve())

    def input_files(self) -> list[str]:
        return [self.path]

    def plan_files(self) -> list[str]:
        return [self.path]

    def check_bits(self, min_weight_bits: int, why: str) -> None:
        """Name the plan file and its first layer below the target's narrowest weights."""
        from flow.recipe.plan import CompressionPlan

        for name, lp in CompressionPlan.load(self.path).layers.items():
            if lp.weight_bits < min_weight_bits:
                raise ValueError(f"method.path: plan file {self.path}: layers.{name}.weight_bits: "
                                 f"{lp.weight_bits} bits is below {min_weight_bits}: {why}")


class SearchParams(_Params):
    """Hardware-aware co-design search (flow.search): per-layer weight bits, activation bits and
    kept channels chosen by Optuna's NSGA-II under the recipe's `budget:` on its `hardware:`."""

    name: Literal["search"]
    implementation: ClassVar[str] = "flow.search.method:make_plan"
    reads: ClassVar[tuple[str, ...]] = ("hardware", "budget")

    trials: int = Field(default=48, ge=1)  # completed trials in all (a resumed study counts on)
    population: int = Field(default=12, ge=2)  # NSGA-II generation size
    weight_bits: list[Bits] = Field(default=[2, 3, 4, 5, 6, 8], min_length=1)
    act_bits: list[ActBits] = Field(default=[2, 3, 4, 5, 6, 8], min_length=1)
    # share of each hidden layer's output channels kept (the most important ones)
    keep_fractions: list[KeepFraction] = Field(
        default=[0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], min_length=1)
    min_keep: int = Field(default=2, ge=1)
    trial_epochs: int = Field(default=3, ge=0)  # short fine-tuning per candidate (0: PTQ only)
    # before the full QAT, a plan's short fine-tune may fall this many points further below the
    # float network than budget.max_accuracy_drop_points allows (the full QAT recovers accuracy;
    # the budget itself is checked after it)
    trial_slack_points: float = Field(default=1.0, ge=0)
    # FINN's estimate in the loop: for candidates the cost model finds feasible and not dominated
    # ("promising"), for every candidate ("all"), or only for the final Pareto plans ("none")
    finn: Literal["promising", "all", "none"] = "promising"
    qat_top: int = Field(default=6, ge=1)  # feasible plans given the full QAT before choosing
    select: Literal["performance_density", "lut_bram18", "accuracy", "total_mbit"] = \
        "performance_density"
    builtin_seeds: list[Literal["uniform", "importance"]] = ["uniform", "importance"]
    seeds: list[MethodParams] = []  # further seed plans: any other method (aqp, plan files, ...)
    workers: int = Field(default=1, ge=1)  # trial processes on this machine
    storage: str | None = None  # None: an Optuna journal file in the run; or postgresql://...
    report: bool = True  # the single-file HTML report of the search

    @field_validator("weight_bits", "act_bits", "keep_fractions")
    @classmethod
    def _distinct(cls, value: list) -> list:
        if len(set(value)) != len(value):
            raise ValueError("values repeat")
        return sorted(value)

    @field_validator("seeds")
    @classmethod
    def _no_nested_search(cls, value: list) -> list:
        if any(p.name == "search" for p in value):
            raise ValueError("a search cannot seed a search; allowed: the other methods")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(STORAGE_SCHEMES):
            raise ValueError(f"{value!r} is not a storage URL; allowed: "
                             f"{', '.join(s + '...' for s in STORAGE_SCHEMES)} (or leave it out)")
        return value

    def input_files(self) -> list[str]:
        return [f for p in self.seeds for f in p.input_files()]

    def plan_files(self) -> list[str]:
        return [f for p in self.seeds for f in p.plan_files()]

    def weight_bit_fields(self) -> dict[str, list[int]]:
        return {"weight_bits": self.weight_bits}


class QsparseParams(_Params):
    """qsparse ("Learning Low-Precision Structured Subnetworks Using Joint Layerwise Channel
    Pruning and Uniform Quantization"): layerwise channel pruning, moving-average QAT."""

    name: Literal["qsparse"]
    implementation: ClassVar[str] = "flow.methods.qsparse:make_plan"
    reads: ClassVar[tuple[str, ...]] = ("train", "hardware")  # scratch training; FINN columns

    schedule: Literal["layerwise_a", "layerwise_w", "stepwise", "one_shot", "scratch"] = \
        "layerwise_a"
    sparsity: Fraction = 0.5  # share of every hidden layer's output channels removed
    weight_bits: Annotated[int, Field(ge=2, le=MAX_BITS)] = 4  # N_W (symmetric: >= 2)
    act_bits: ActBits = 4  # N_A
    epochs: int = Field(default=20, ge=1)  # pruning-schedule training from the float network
    prune_fraction: Fraction = 0.5  # share of those steps over which the masks are set
    min_keep: int = Field(default=2, ge=1)
    calib_samples: int = Field(default=256, ge=1)  # one-shot importance images
    report: bool = True  # every schedule at every report_sparsities value, Table 4
    report_sparsities: list[Fraction] = [0.5, 0.75]

    def weight_bit_fields(self) -> dict[str, list[int]]:
        return {"weight_bits": [self.weight_bits]}


class DfqParams(_Params):
    """DFQ ("Differentiable Fine-grained Quantization for Deep Neural Network Compression"):
    softmax-relaxed per-layer weight bit-widths, bi-level search (flow.methods.dfq)."""

    name: Literal["dfq"]
    implementation: ClassVar[str] = "flow.methods.dfq:make_plan"
    reads: ClassVar[tuple[str, ...]] = ("hardware",)  # the hardware cost's board and frame rate

    candidates: list[Bits] = Field(default=[2, 8], min_length=2)  # FINN's RTL layers: >= 2
    act_bits: ActBits = 4  # every hidden layer's activations (the search is over weights)
    cost: Literal["size", "hardware"] = "size"  # G(α): expected model size, or LUT+BRAM+DSP
    theta_margin: float = Field(default=0.05, ge=0, allow_inf_nan=False)  # θ = L_val(float) + it
    lambda_inf: float = Field(default=100.0, gt=0, allow_inf_nan=False)  # λ's "∞"
    epochs: int = Field(default=30, ge=1)  # search epochs (w and α steps alternate)
    warmup_epochs: int = Field(default=5, ge=0)  # first epochs: w only ("retrain ... first")
    alpha_lr: float = Field(default=0.1, gt=0, allow_inf_nan=False)  # SGD on α
    report: bool = True  # both costs, uniform baselines, Table 1 and Figure 2

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("values repeat")
        return sorted(value)

    def weight_bit_fields(self) -> dict[str, list[int]]:
        return {"candidates": self.candidates}


METHODS: tuple[type[_Params], ...] = (UniformParams, AqpParams, PlanFileParams, SearchParams,
                                      QsparseParams, DfqParams)


def method_name(params: type[_Params]) -> str:
    """The recipe's `method.name` of a parameter class."""
    return get_args(params.model_fields["name"].annotation)[0]


METHOD_NAMES = tuple(method_name(p) for p in METHODS)
if len(set(METHOD_NAMES)) != len(METHOD_NAMES):
    raise TypeError(f"two methods share a name: {METHOD_NAMES}")
MethodParams = Annotated[Union[METHODS], Field(discriminator="name")]  # noqa: UP007
SearchParams.model_rebuild()
