"""CompressionPlan: per-layer precision and kept channels, as plain data a person can edit."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from flow.core.errors import ConfigError
from flow.core.io import atomic_write_text, read_yaml
from hw_models.rules import MAX_BITS, MIN_ACT_BITS

MIN_BITS = 1
DEFAULT_QUANTIZER = "default"
# largest prune_k: every layer keeps a weight for k < 1 (max |w| >= σ); at k = 5 a Gaussian layer
# keeps about 6 weights in 10 million, so larger thresholds only empty layers (AQP's k_max: 3)
MAX_PRUNE_K = 5.0


class LayerPlan(BaseModel):
    """Precision and structure of one quantizable layer.

    `act_bits` is the width of the layer's output activation; None only for the classifier,
    whose output is not requantized. `keep` lists kept output channels (indices into the
    architecture's full layer), None keeps all. `prune_k` is AQP's unstructured magnitude
    threshold multiplier: weights with |w| <= k·σ(l) are zeroed (0 = none). `quantizer` picks
    how the layer quantizes (flow.models.build): "default" (Brevitas per-tensor float scales:
    max-statistics weights, learned activation scale), or "moving_average" (qsparse's
    Algorithms 2 and 3, flow.models.quantizers); a default quantizer is left out of the plan's
    dict, so plans without one read, write and hash as before.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    weight_bits: int = Field(ge=MIN_BITS, le=MAX_BITS)
    act_bits: int | None = Field(ge=MIN_ACT_BITS, le=MAX_BITS)
    keep: tuple[int, ...] | None = None
    prune_k: float = Field(default=0.0, allow_inf_nan=False)
    quantizer: Literal["default", "moving_average"] = DEFAULT_QUANTIZER

    @field_validator("keep", mode="before")
    @classmethod
    def _keep_list(cls, value):
        return tuple(value) if isinstance(value, list) else value

    @field_validator("keep")
    @classmethod
    def _keep_indices(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not value or min(value) < 0:
            raise ValueError("must be a non-empty list of channel indices >= 0")
        if len(set(value)) != len(value):
            raise ValueError("channel indices repeat")
        return tuple(sorted(value))

    @field_validator("prune_k")
    @classmethod
    def _prune_range(cls, value: float) -> float:
        if not 0 <= value <= MAX_PRUNE_K:
            raise ValueError(f"{value:g} is out of range; allowed: 0..{MAX_PRUNE_K:g} (weights "
                             "with |w| <= k·σ are zeroed; a larger k zeroes whole layers)")
        return value

    @model_validator(mode="after")
    def _quantizer_bits(self) -> LayerPlan:
        if self.quantizer == "moving_average" and self.weight_bits < 2:
            raise ValueError("quantizer 'moving_average' needs weight_bits >= 2 (its symmetric "
                             "levels are ±(2^(b-1) - 1))")
        return self


class CompressionPlan(BaseModel):
    """What every method produces: input precision plus a LayerPlan per layer, by stable name."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    input_bits: int = Field(ge=MIN_BITS, le=MAX_BITS)
    layers: dict[str, LayerPlan] = {}

    def with_layer(self, name: str, **changes) -> CompressionPlan:
        """A copy with one layer's fields changed."""
        layer = self.layers[name].model_copy(update=changes)
        return self.model_copy(update={"layers": {**self.layers, name: layer}})

    def to_dict(self) -> dict:
        """Plain-data form (the YAML/JSON schema)."""
        data = self.model_dump(mode="json")
        for layer in data["layers"].values():
            layer["keep"] = None if layer["keep"] is None else list(layer["keep"])
            if layer["quantizer"] == DEFAULT_QUANTIZER:
                del layer["quantizer"]
        return data

    def digest(self) -> str:
        """A short content hash (same plan, same digest)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data, source: str = "plan") -> CompressionPlan:
        """Parse and range-check plain data; a ConfigError names the field and what is allowed."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping with input_bits and layers")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            parts = []
            for e in err.errors():
                field = ".".join(str(p) for p in e["loc"])
                msg = e["msg"].removeprefix("Value error, ")
                if e["type"] == "extra_forbidden":
                    msg = "unknown key; allowed: input_bits, layers (weight_bits, act_bits, " \
                          "keep, prune_k, quantizer)"
                parts.append(f"{source}: {field}: {msg}")
            raise ConfigError("; ".join(parts)) from None

    def save(self, path: str | Path) -> None:
        """Write as YAML (or JSON if the suffix is .json), atomically."""
        data = self.to_dict()
        text = (
            json.dumps(data, indent=2)
            if str(path).endswith(".json")
            else yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        )
        atomic_write_text(Path(path), text)

    @classmethod
    def load(cls, path: str | Path) -> CompressionPlan:
        """Read a YAML or JSON plan file."""
        return cls.from_dict(read_yaml(path, "plan file", "YAML/JSON"), source=str(path))
