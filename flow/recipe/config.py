"""The recipe: one YAML file describing a run, validated whole (method parameters included) when it
is loaded, with errors naming the file, the field and what is allowed."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flow.core.errors import ConfigError
from flow.core.io import read_yaml
from flow.methods.params import METHOD_NAMES, MethodParams, UniformParams
from flow.recipe.plan import CompressionPlan
from hw_models.rules import (
    DEFAULT_FIFO_DEPTH,
    MAX_FIFO_DEPTH,
    MIN_FIFO_DEPTH,
    MIN_RTL_BITS,
)

if TYPE_CHECKING:
    from flow.models.zoo import Architecture

# channels, height, width of each data set's images (synthetic: data.shape, this by default)
IN_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
             "synthetic": (1, 8, 8)}
# folders densiflow keeps next to the run folders in the output root
RESERVED_NAMES = ("rtlsim_cache", "synth_cache", "compare", "estimate", "search", "test_cache")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # no '.', '..', hidden or nested names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataSection(_Section):
    dataset: Literal["digits", "mnist", "cifar10", "synthetic"] = "digits"
    path: str | None = None  # folder of MNIST idx files or CIFAR-10 python batches
    seed: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)  # cap on training samples, for quick runs
    # synthetic only: channels, height, width of its images (default 1 x 8 x 8)
    shape: list[int] | None = Field(default=None, min_length=3, max_length=3)

    @model_validator(mode="after")
    def _path_fits_dataset(self) -> DataSection:
        if self.shape is not None and (self.dataset != "synthetic" or min(self.shape) < 1):
            raise ValueError("data.shape: only for dataset 'synthetic', three sizes >= 1 "
                             "(channels, height, width)")
        needs_path = self.dataset in ("mnist", "cifar10")
        if needs_path and self.path is None:
            raise ValueError(f"data.path: dataset '{self.dataset}' needs the folder of its files "
                             "(nothing is downloaded)")
        if not needs_path and self.path is not None:
            raise ValueError(f"data.path: dataset '{self.dataset}' reads no files; remove path")
        return self

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Channels, height, width of the images (known without reading the data)."""
        return tuple(self.shape) if self.shape is not None else IN_SHAPES[self.dataset]


class ModelSection(_Section):
    """One of densiflow's architectures, one registered from Python (flow.models.custom.register),
    or a user's own network from a factory "package.module:function" (flow.models.custom)."""

    arch: str | None = None  # default digits_cnn
    factory: str | None = None
    factory_dir: str | None = None  # where the factory's package is found (the recipe's folder)

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("arch") is not None and data.get("factory") is not None:
            raise ValueError("model: give arch or factory, not both")
        if data.get("factory") is None:
            return {"arch": "digits_cnn", **{k: v for k, v in data.items() if v is not None}}
        if not isinstance(data["factory"], str):
            return data  # the field's own check names the type
        from flow.models.custom import import_root, load_factory

        base = data.get("factory_dir") or (info.context or {}).get("base")
        base = Path(base).resolve() if base else None
        # importable and callable, else a ConfigError; where it was found is kept for the
        # processes a run starts (search workers), whatever their sys.path
        factory = load_factory(data["factory"], base)
        return {**data, "factory_dir": str(base or import_root(factory))}

    @model_validator(mode="after")
    def _known(self) -> ModelSection:
        from flow.models.custom import registered
        from flow.models.zoo import ARCHITECTURES

        known = self.arch in ARCHITECTURES or registered(self.arch) is not None
        if self.factory is None and not known:
            raise ValueError(f"model.arch: unknown architecture '{self.arch}'; allowed: "
                             f"{sorted(ARCHITECTURES)} or a model.factory")
        return self

    @property
    def name(self) -> str:
        return self.factory or self.arch

    def architecture(self, in_shape: tuple[int, int, int]) -> Architecture:
        """The network's layers, for images of `in_shape` (a user's network is built, untrained,
        and traced)."""
        from flow.models.custom import architecture_from_module, load_factory, registered
        from flow.models.zoo import get_architecture

        factory = (load_factory(self.factory, Path(self.factory_dir) if self.factory_dir else None)
                   if self.factory else registered(self.arch))
        if factory is None:
            return get_architecture(self.arch)
        return architecture_from_module(factory(), in_shape, self.name)


class TrainSection(_Section):
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=3e-3, gt=0, allow_inf_nan=False)
    batch_size: int = Field(default=64, ge=2)
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class HardwareSection(_Section):
    board: str = "pynq-z1"
    # rtl: every layer in FINN's RTL library (>= 2-bit weights), simulated in Verilator;
    # estimate: FINN estimates only, HLS layers (1-bit weights) allowed, no RTL simulation
    target: Literal["rtl", "estimate"] = "rtl"
    target_fps: float = Field(default=100_000, gt=0, allow_inf_nan=False)
    clock_mhz: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # None: the board's
    fifo_depth: int = Field(default=DEFAULT_FIFO_DEPTH, ge=MIN_FIFO_DEPTH, le=MAX_FIFO_DEPTH)
    # size each FIFO by Verilator simulation: the smallest depths keeping the cycles per frame
    # within 1 % of deep FIFOs (fifo_depth is then the starting depth); rtl target only
    fifo_sizing: bool = False
    # optimiser: densiflow's folding (hw_models.folding), fewest resources at the target within
    # budget.board_fraction; finn: FINN's SetFolding
    folding: Literal["optimiser", "finn"] = "optimiser"
    # yosys: synthesise the generated RTL per node (post-synthesis counts; board fit on them)
    synth: Literal["none", "yosys"] = "none"

    @field_validator("board")
    @classmethod
    def _known(cls, value: str) -> str:
        from hw_models.boards import get_board
        from hw_models.errors import UnknownBoardError

        try:
            get_board(value)
        except UnknownBoardError as err:
            raise ValueError(str(err)) from None
        return value

    @property
    def min_weight_bits(self) -> int:
        """Narrowest weights the target can build."""
        return MIN_RTL_BITS if self.target == "rtl" else 1


class ResourceFractions(_Section):
    """Largest share of the board's resources a design may use (None: no limit)."""

    lut: float | None = Field(default=None, gt=0, le=1)
    bram18: float | None = Field(default=None, gt=0, le=1)
    uram: float | None = Field(default=None, gt=0, le=1)
    dsp: float | None = Field(default=None, gt=0, le=1)


class BudgetSection(_Section):
    """What a compressed design must meet (None: no limit); the search enforces every one."""

    max_weight_mbit: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_total_mbit: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # + activations
    min_performance_density: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_accuracy_drop_points: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    board_fraction: ResourceFractions = ResourceFractions()
    min_fps: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class SimulateSection(_Section):
    enabled: bool = True
    frames: int | None = Field(default=None, ge=1)  # None: the whole test split
    backpressure: float = Field(default=0.0, ge=0, lt=1)  # probability of a stalled output cycle
    # share of test frames whose RTL prediction must equal PyTorch's (1.0: bit-exact flows)
    min_agreement: float = Field(default=1.0, ge=0, le=1)


class DeploySection(_Section):
    """The deployment folder (driver, test vectors, stitched RTL, HIL agent), and the bitstream
    where Vivado exists."""

    enabled: bool = True
    bitstream: bool = True  # build it when Vivado and Vitis HLS are on this machine


class Recipe(_Section):
    """A whole run: data, architecture, training, compression method, hardware target."""

    name: str = Field(pattern=NAME_PATTERN)
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    qat: TrainSection = TrainSection(epochs=10, lr=1e-3)
    method: MethodParams = UniformParams(name="uniform", weight_bits=4, act_bits=4)
    hardware: HardwareSection = HardwareSection()
    budget: BudgetSection = BudgetSection()
    simulate: SimulateSection = SimulateSection()
    deploy: DeploySection = DeploySection()

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"'{value}' is a folder densiflow keeps beside run folders; "
                             f"reserved: {', '.join(RESERVED_NAMES)}")
        return value

    @model_validator(mode="after")
    def _fits_target(self) -> Recipe:
        hw = self.hardware
        why = ("FINN's RTL layers need >= 2-bit weights; set hardware.target: estimate for "
               "FINN estimates with HLS layers")
        self.method.check_bits(hw.min_weight_bits, why)
        if hw.target == "estimate" and hw.fifo_sizing:
            raise ValueError("hardware.fifo_sizing: sizing simulates the RTL, which the 'estimate' "
                             "target may not have; use hardware.target: rtl")
        if hw.target == "estimate" and self.simulate.enabled:
            raise ValueError("simulate.enabled: the 'estimate' target may build HLS layers, which "
                             "Verilator cannot simulate; set simulate.enabled: false")
        return self

    @model_validator(mode="after")
    def _plans_fit_model(self) -> Recipe:
        """Every plan file the method uses names the network's layers (before any training)."""
        files = self.method.plan_files()
        if files:
            arch = self.model.architecture(self.data.in_shape)
            for path in files:
                arch.check_plan(CompressionPlan.load(path), source=f"plan file {path}")
        return self


def parse_recipe(data: Any, source: str = "recipe", base: Path | None = None) -> Recipe:
    """Validate plain data; a ConfigError names every offending field and what is allowed.
    Files the recipe names (a method's plan file) are relative to `base`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data, context={"base": base})
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in err.errors())) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file."""
    return parse_recipe(read_yaml(path, "recipe file"), source=str(path), base=Path(path).parent)


def _describe(error: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    if len(loc) > 1 and loc[0] == "method" and loc[1] in METHOD_NAMES:
        loc = [loc[0], *loc[2:]]  # the union's tag is not a field
    field = ".".join(loc)
    msg = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{field}'"
    if not field:
        return msg
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = error.get("input", {}).get("name") if isinstance(error.get("input"), dict) else None
        allowed = ", ".join(METHOD_NAMES)
        return (f"{field}.name: {got!r} is not a method; allowed: {allowed}" if got is not None
                else f"{field}.name: required; allowed: {allowed}")
    if kind == "value_error" and msg.startswith(("method.", "simulate.", "data.", "budget.",
                                                  "model", "hardware.")):
        return msg  # a cross-field check that names its own field
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    if isinstance(got, float) and not math.isfinite(got):
        shown = f" (got {got})"
    return f"{field}: {msg}{shown}"
