"""The network as a typed DAG: quantizable layers and weightless operations, with the queries a
plan needs (shapes, per-layer geometry, coupled channel groups, plan checks).

Nodes are in topological order; each has a unique `name` (a module path a person recognises,
e.g. `layer2.0.conv1`) and `inputs` (empty = the previous node, or the network input for the
first node; the network input itself is named `INPUT`). The last node is the classifier: a
linear layer without activation. A chain of `LayerSpec`s is a DAG too, so the chain
architectures and their plans read as before.

Quantization on the graph (flow.models.build): every hidden layer is followed by BatchNorm and
its activation's quantizer at the layer's `act_bits`; a layer without activation feeds adds only
(the last convolution of a residual branch, a projection shortcut). The two inputs of an add share
ONE signed quantizer whose bits are the `act_bits` of its main branch, the layer producing its
first input; the add's ReLU requantizes at the same bits. Pools and flattening carry the
quantized values through.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from flow.core.errors import ConfigError
from flow.recipe.plan import DEFAULT_QUANTIZER, CompressionPlan

INPUT = "input"  # the network input, as a node's input name
Act = Literal["relu", "relu6", "hardtanh", "leaky_relu"]
ACTS = ("relu", "relu6", "hardtanh", "leaky_relu")
OP_KINDS = ("maxpool", "avgpool", "gap", "add", "flatten")


@dataclass(frozen=True)
class LayerSpec:
    """A quantizable layer at full width, followed by BatchNorm and `act` (None: no activation,
    for the classifier and for a layer feeding adds only). groups == in channels == out is a
    depthwise convolution."""

    name: str
    kind: Literal["conv", "linear"]
    out: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    act: Act | None = "relu"
    inputs: tuple[str, ...] = ()

    @property
    def depthwise(self) -> bool:
        return self.groups > 1


@dataclass(frozen=True)
class OpSpec:
    """A weightless node: max/average pooling (kernel, stride, padding), global average pooling
    to 1x1, a residual add of exactly two inputs (`act` after the add), or flattening."""

    name: str
    kind: Literal["maxpool", "avgpool", "gap", "add", "flatten"]
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    act: Literal["relu"] | None = None
    inputs: tuple[str, ...] = ()


Node = LayerSpec | OpSpec


@dataclass(frozen=True)
class LayerGeometry:
    """A layer's sizes under a plan: what weight and activation memory are computed from."""

    name: str
    kind: str
    in_ch: int
    out_ch: int
    kernel: int
    out_hw: int  # output height = width (1 for linear layers)
    in_hw: int
    groups: int = 1  # = out_ch for a depthwise convolution

    @property
    def params(self) -> int:
        """Weight count (no bias: BatchNorm follows every hidden layer)."""
        return self.out_ch * (self.in_ch // self.groups) * self.kernel * self.kernel

    @property
    def out_elems(self) -> int:
        """Output activation elements per frame."""
        return self.out_ch * self.out_hw * self.out_hw

    @property
    def macs(self) -> int:
        """Multiply-accumulates per frame."""
        return self.params * self.out_hw * self.out_hw


@dataclass(frozen=True)
class Shape:
    """A node's output: channels (features after flattening) and height = width."""

    ch: int
    hw: int


@dataclass(frozen=True)
class Architecture:
    """A named network: input shape (channels, height, width) and its nodes in topological
    order; the last node is the classifier (its act is None, whatever a chain gave it)."""

    name: str
    in_shape: tuple[int, int, int]
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        if nodes and isinstance(nodes[-1], LayerSpec) and nodes[-1].act is not None:
            nodes = (*nodes[:-1], replace(nodes[-1], act=None))  # the classifier has none
        object.__setattr__(self, "nodes", nodes)
        _check_structure(self)

    # ------------------------------------------------------------------ structure

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        """The quantizable layers in order (the plan's layers; the last is the classifier)."""
        return tuple(n for n in self.nodes if isinstance(n, LayerSpec))

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out

    @property
    def is_chain(self) -> bool:
        """Layers only, each fed by the one before: densiflow's original networks."""
        return all(isinstance(n, LayerSpec) and not n.inputs and not n.depthwise
                   for n in self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"architecture '{self.name}': no node {name!r}")

    def inputs_of(self, name: str) -> tuple[str, ...]:
        """The names of a node's inputs (INPUT for the network input)."""
        i = next(i for i, n in enumerate(self.nodes) if n.name == name)
        node = self.nodes[i]
        return node.inputs or ((self.nodes[i - 1].name,) if i else (INPUT,))

    def consumers(self, name: str) -> list[str]:
        return [n.name for n in self.nodes if name in self.inputs_of(n.name)]

    def carrier(self, name: str) -> LayerSpec | None:
        """The layer whose output channels the output of node `name` carries (through pools,
        flattening and adds, by their first input); None for the network input."""
        while name != INPUT:
            node = self.node(name)
            if isinstance(node, LayerSpec):
                return node
            name = self.inputs_of(name)[0]
        return None

    def channel_source(self, name: str) -> str | None:
        """The layer whose channels node `name`'s (first) input carries; None: the network input."""
        src = self.carrier(self.inputs_of(name)[0])
        return None if src is None else src.name

    def channel_groups(self) -> list[tuple[str, ...]]:
        """Layers whose kept output channels must be one set (two or more per group): the
        producers into one add, transitively, and a depthwise layer with its producer."""
        parent = {name: name for name in self.layer_names}

        def root(a: str) -> str:
            while parent[a] != a:
                a = parent[a]
            return a

        def union(a: LayerSpec | None, b: LayerSpec | None) -> None:
            if a is not None and b is not None:
                parent[root(b.name)] = root(a.name)

        for node in self.nodes:
            srcs = [self.carrier(i) for i in self.inputs_of(node.name)]
            if isinstance(node, OpSpec) and node.kind == "add":
                union(*srcs)
            elif isinstance(node, LayerSpec) and node.depthwise:
                union(srcs[0], node)
        groups: dict[str, list[str]] = {}
        for name in self.layer_names:
            groups.setdefault(root(name), []).append(name)
        return [tuple(g) for g in groups.values() if len(g) > 1]

    def add_bits_source(self, name: str) -> str:
        """The layer whose act_bits an add's shared quantizer (and its ReLU) uses: its main
        branch, the producer of its first input."""
        return self.channel_source(name)

    # ------------------------------------------------------------------ sizes

    def shapes(self, plan: CompressionPlan | None = None) -> dict[str, Shape]:
        """Every node's output shape (and INPUT's) with the plan's kept channels applied."""
        c, h, w = self.in_shape
        out = {INPUT: Shape(c, h)}
        for node in self.nodes:
            ins = [out[i] for i in self.inputs_of(node.name)]
            out[node.name] = _out_shape(node, ins, plan)
        return out

    def geometry(self, plan: CompressionPlan | None = None) -> list[LayerGeometry]:
        """Per-layer sizes with the plan's kept channels applied (full width without a plan)."""
        shapes = self.shapes(plan)
        geo = []
        for spec in self.layers:
            src, dst = shapes[self.inputs_of(spec.name)[0]], shapes[spec.name]
            if spec.kind == "conv":
                groups = dst.ch if spec.depthwise else 1
                geo.append(LayerGeometry(spec.name, "conv", src.ch, dst.ch, spec.kernel, dst.hw,
                                         src.hw, groups))
            else:
                geo.append(LayerGeometry(spec.name, "linear", src.ch * src.hw * src.hw, dst.ch,
                                         1, 1, 1))
        return geo

    # ------------------------------------------------------------------ plans

    def uniform_plan(self, weight_bits: int, act_bits: int, input_bits: int,
                     quantizer: str = DEFAULT_QUANTIZER) -> CompressionPlan:
        """Every layer at the same precision and quantizer, all channels kept."""
        last = self.layers[-1].name
        layers = {
            name: {"weight_bits": weight_bits, "act_bits": None if name == last else act_bits,
                   "quantizer": quantizer}
            for name in self.layer_names
        }
        return CompressionPlan.from_dict({"input_bits": input_bits, "layers": layers})

    def kept(self, plan: CompressionPlan | None, name: str) -> tuple[int, ...]:
        """A layer's kept output channels (all without a plan or without `keep`)."""
        keep = plan.layers[name].keep if plan else None
        return keep if keep is not None else tuple(range(self.node(name).out))

    def check_plan(self, plan: CompressionPlan, source: str = "plan") -> None:
        """Raise ConfigError unless the plan names exactly this architecture's layers, sensibly,
        and keeps one channel set per coupled group; the message starts with `source`."""
        missing = [n for n in self.layer_names if n not in plan.layers]
        extra = [n for n in plan.layers if n not in self.layer_names]
        if missing or extra:
            raise ConfigError(
                f"{source} does not fit architecture '{self.name}': "
                + (f"layers {extra} do not exist; " if extra else "")
                + (f"layers {missing} are missing; " if missing else "")
                + f"its layers are {self.layer_names}"
            )
        for spec in self.layers:
            _check_layer(spec, plan, f"{source}: layers.{spec.name}", spec is self.layers[-1])
        for group in self.channel_groups():
            keeps = {name: self.kept(plan, name) for name in group}
            first = group[0]
            for name, keep in keeps.items():
                if keep != keeps[first]:
                    raise ConfigError(
                        f"{source}: layers.{name}.keep must equal layers.{first}.keep: "
                        f"{_coupling(self, first, name)} keep one channel set "
                        f"(coupled group {list(group)})")


def _check_layer(spec: LayerSpec, plan: CompressionPlan, where: str, is_classifier: bool) -> None:
    lp = plan.layers[spec.name]
    if is_classifier and lp.act_bits is not None:
        raise ConfigError(f"{where}.act_bits: the classifier output is not requantized; "
                          "set it to null")
    if not is_classifier and lp.act_bits is None:
        raise ConfigError(f"{where}.act_bits: required (1..8)")
    if lp.keep is not None:
        if is_classifier and len(lp.keep) != spec.out:
            raise ConfigError(f"{where}.keep: the classifier keeps all classes")
        if max(lp.keep) >= spec.out:
            raise ConfigError(f"{where}.keep: channel {max(lp.keep)} does not exist; "
                              f"the layer has channels 0..{spec.out - 1}")


def _coupling(arch: Architecture, a: str, b: str) -> str:
    if arch.node(b).depthwise or arch.node(a).depthwise:
        return "a depthwise layer and its producer"
    return "the producers into one residual add"


def _out_shape(node: Node, ins: list[Shape], plan: CompressionPlan | None) -> Shape:
    src = ins[0]
    if isinstance(node, LayerSpec):
        keep = plan.layers[node.name].keep if plan and node.name in plan.layers else None
        ch = len(keep) if keep is not None else node.out
        if node.kind == "linear":
            return Shape(ch, 1)
        return Shape(ch, _window(src.hw, node))
    if node.kind in ("maxpool", "avgpool"):
        return Shape(src.ch, _window(src.hw, node))
    if node.kind == "gap":
        return Shape(src.ch, 1)
    if node.kind == "flatten":
        return Shape(src.ch * src.hw * src.hw, 1)
    return src  # add: equal shapes (checked at construction, full width)


def _window(hw: int, node: Node) -> int:
    return (hw + 2 * node.padding - node.kernel) // node.stride + 1


def _check_structure(arch: Architecture) -> None:
    """One-line ConfigErrors for a graph densiflow cannot build; each names the node."""
    where = f"architecture '{arch.name}'"
    seen = {INPUT}
    for node in arch.nodes:
        if node.name in seen:
            raise ConfigError(f"{where}: node name {node.name!r} is used twice (or is reserved)")
        for inp in node.inputs:
            if inp not in seen:
                raise ConfigError(f"{where}: {node.name} reads {inp!r}, which is not an "
                                  "earlier node")
        _check_node(node, where)
        seen.add(node.name)
    if not arch.nodes or not isinstance(arch.nodes[-1], LayerSpec) \
            or arch.nodes[-1].kind != "linear":
        raise ConfigError(f"{where}: the last node must be the Linear classifier")
    used = {i for n in arch.nodes for i in arch.inputs_of(n.name)}
    for node in arch.nodes[:-1]:
        if node.name not in used:
            raise ConfigError(f"{where}: the output of {node.name} is never used; the network "
                              f"has one output, the classifier {arch.nodes[-1].name}")
    _check_shapes(arch, where)


def _check_node(node: Node, where: str) -> None:
    if isinstance(node, OpSpec):
        if node.kind not in OP_KINDS:
            raise ConfigError(f"{where}: {node.name} has kind {node.kind!r}; allowed: "
                              f"{list(OP_KINDS)}")
        if node.kind == "add" and len(node.inputs) != 2:
            raise ConfigError(f"{where}: add {node.name} needs exactly two inputs")
        if node.act not in (None, "relu"):
            raise ConfigError(f"{where}: {node.name}: only a ReLU may follow an add")
        if node.kind == "avgpool" and node.padding:
            raise ConfigError(f"{where}: average pool {node.name} has padding {node.padding}; "
                              "FINN sums pools without padding: use padding 0")
        return
    if node.act is not None and node.act not in ACTS:
        raise ConfigError(f"{where}: {node.name} has activation {node.act!r}; allowed: "
                          f"{list(ACTS)} or None")
    if node.depthwise and node.groups != node.out:
        raise ConfigError(f"{where}: {node.name} has groups={node.groups} and {node.out} "
                          "outputs; only depthwise (groups = in = out channels) or groups=1")


def _check_shapes(arch: Architecture, where: str) -> None:
    shapes = arch.shapes()
    for node in arch.nodes:
        ins = [shapes[i] for i in arch.inputs_of(node.name)]
        out = shapes[node.name]
        if out.hw < 1:
            raise ConfigError(f"{where}: {node.name} shrinks the {ins[0].hw}x{ins[0].hw} "
                              "input below 1x1")
        if isinstance(node, OpSpec) and node.kind == "add" and ins[0] != ins[1]:
            a, b = node.inputs
            raise ConfigError(f"{where}: add {node.name} joins {a} ({_fmt(ins[0])}) and {b} "
                              f"({_fmt(ins[1])}); both inputs need one shape (use a 1x1 "
                              "projection shortcut)")
        if isinstance(node, LayerSpec) and node.depthwise and ins[0].ch != node.out:
            raise ConfigError(f"{where}: depthwise {node.name} has {node.out} channels but "
                              f"its input has {ins[0].ch}")
        if isinstance(node, LayerSpec) and node.kind == "conv" and ins[0].hw == 1 \
                and _flattened(arch, node.name):
            raise ConfigError(f"{where}: {node.name} convolves flattened features")
        if isinstance(node, LayerSpec) and node.act is None and node is not arch.nodes[-1]:
            bad = [c for c in arch.consumers(node.name)
                   if not (isinstance(arch.node(c), OpSpec) and arch.node(c).kind == "add")]
            if bad:
                raise ConfigError(f"{where}: {node.name} has no activation but feeds {bad[0]}; "
                                  "a hidden layer without activation may feed residual adds "
                                  "only")


def _flattened(arch: Architecture, name: str) -> bool:
    inp = arch.inputs_of(name)[0]
    return inp != INPUT and isinstance(arch.node(inp), OpSpec) and arch.node(inp).kind == "flatten"


def _fmt(s: Shape) -> str:
    return f"{s.ch}x{s.hw}x{s.hw}"
