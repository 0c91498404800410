"""CompressionPlan: per-layer precision and kept channels, as plain data a person can edit."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import yaml

from flow.errors import ConfigError
from flow.io import atomic_write_text, read_yaml

MIN_BITS, MAX_BITS = 1, 8


@dataclass(frozen=True)
class LayerPlan:
    """Precision and structure of one quantizable layer.

    `act_bits` is the width of the layer's output activation; None only for the classifier,
    whose output is not requantized. `keep` lists kept output channels (indices into the
    architecture's full layer), None keeps all. `prune_k` is AQP's unstructured magnitude
    threshold multiplier: weights with |w| <= k·σ(l) are zeroed (0 = none).
    """

    weight_bits: int
    act_bits: int | None
    keep: tuple[int, ...] | None = None
    prune_k: float = 0.0


@dataclass(frozen=True)
class CompressionPlan:
    """What every method produces: input precision plus a LayerPlan per layer, by stable name."""

    input_bits: int
    layers: dict[str, LayerPlan] = field(default_factory=dict)

    def with_layer(self, name: str, **changes) -> CompressionPlan:
        """A copy with one layer's fields changed."""
        return replace(self, layers={**self.layers, name: replace(self.layers[name], **changes)})

    def to_dict(self) -> dict:
        """Plain-data form (the YAML/JSON schema)."""
        layers = {}
        for name, lp in self.layers.items():
            d = asdict(lp)
            d["keep"] = list(lp.keep) if lp.keep is not None else None
            layers[name] = d
        return {"input_bits": self.input_bits, "layers": layers}

    @classmethod
    def from_dict(cls, data: dict, source: str = "plan") -> CompressionPlan:
        """Parse and range-check plain data; errors name the field."""
        if not isinstance(data, dict) or set(data) - {"input_bits", "layers"}:
            extra = sorted(set(data) - {"input_bits", "layers"}) if isinstance(data, dict) else data
            raise ConfigError(f"{source}: unknown keys {extra}; allowed: input_bits, layers")
        input_bits = _check_bits(data.get("input_bits"), f"{source}.input_bits")
        layers = {}
        for name, d in (data.get("layers") or {}).items():
            where = f"{source}.layers.{name}"
            unknown = set(d) - {"weight_bits", "act_bits", "keep", "prune_k"}
            if unknown:
                raise ConfigError(
                    f"{where}: unknown keys {sorted(unknown)}; "
                    "allowed: weight_bits, act_bits, keep, prune_k"
                )
            act = d.get("act_bits")
            keep = d.get("keep")
            prune_k = float(d.get("prune_k", 0.0))
            if prune_k < 0:
                raise ConfigError(f"{where}.prune_k: {prune_k} is negative; allowed: >= 0")
            layers[name] = LayerPlan(
                weight_bits=_check_bits(d.get("weight_bits"), f"{where}.weight_bits"),
                act_bits=None if act is None else _check_bits(act, f"{where}.act_bits"),
                keep=None if keep is None else _check_keep(keep, f"{where}.keep"),
                prune_k=prune_k,
            )
        return cls(input_bits=input_bits, layers=layers)

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


def _check_bits(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise ConfigError(f"{where}: {value!r} is not allowed; use an integer {MIN_BITS}..{MAX_BITS}")
    return value


def _check_keep(keep, where: str) -> tuple[int, ...]:
    if not isinstance(keep, (list, tuple)) or not keep or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in keep
    ):
        raise ConfigError(f"{where}: must be a non-empty list of channel indices >= 0")
    if len(set(keep)) != len(keep):
        raise ConfigError(f"{where}: channel indices repeat")
    return tuple(sorted(keep))
