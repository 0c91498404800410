"""Typed parameters of every compression method: the recipe's `method:` section.

`MethodParams` is a union discriminated by `name`, so a recipe is checked whole, method
parameters included, when it is loaded. Bounds that depend on the hardware target (1-bit weights
only where HLS layers are allowed) are checked by `check_bits`, called by the recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hw_models.rules import MAX_BITS, MIN_ACT_BITS

Bits = Annotated[int, Field(ge=1, le=MAX_BITS)]
ActBits = Annotated[int, Field(ge=MIN_ACT_BITS, le=MAX_BITS)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # recipe sections besides `method` and `qat` the method reads (dotted paths), so that a
    # change there redoes the plan step
    reads: ClassVar[tuple[str, ...]] = ()

    def input_files(self) -> list[str]:
        """Files the method reads (their content is part of the plan step's inputs)."""
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
    weight_bits: Bits
    act_bits: ActBits
    input_bits: Bits | None = None  # None: the data's pixel bits (capped at 8)

    def weight_bit_fields(self) -> dict[str, list[int]]:
        return {"weight_bits": [self.weight_bits]}


class AqpParams(_Params):
    """AQP (seed 000): layer importance, then a per-layer bits/pruning search in T_margin(l)."""

    name: Literal["aqp"]
    mode: Literal["quant", "prune", "combined"] = "combined"
    pruning: Literal["unstructured", "structured"] = "unstructured"
    t_margin: float = Field(default=0.03, ge=0)  # total val cross-entropy rise (nats) to spend
    max_bits: Bits = 8
    k_max: float = Field(default=3.0, ge=0)
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
    path: str  # YAML/JSON plan file; relative to the recipe file's folder

    @field_validator("path")
    @classmethod
    def _readable_plan(cls, value: str, info: ValidationInfo) -> str:
        from flow.plan import CompressionPlan

        base = (info.context or {}).get("base")
        path = Path(base, value) if base is not None else Path(value)
        CompressionPlan.load(path)  # a ConfigError (a ValueError) names what is wrong
        return str(path.resolve())

    def input_files(self) -> list[str]:
        return [self.path]

    def weight_bit_fields(self) -> dict[str, list[int]]:
        from flow.plan import CompressionPlan

        plan = CompressionPlan.load(self.path)
        return {"path": [lp.weight_bits for lp in plan.layers.values()]}


MethodParams = Annotated[UniformParams | AqpParams | PlanFileParams,
                         Field(discriminator="name")]
METHOD_NAMES = ("uniform", "aqp", "plan")
