"""A user's own network as a densiflow architecture: from a factory in a recipe
(`model: {factory: "pkg.module:make"}`) or registered from Python (`register("name", make)`).

The factory returns a float PyTorch module, written as ordinary PyTorch: Conv2d (plain or
depthwise) and Linear layers, each hidden one followed by an activation (nn.ReLU / F.relu,
nn.ReLU6 / F.relu6, nn.Hardtanh / F.hardtanh at ±1, nn.LeakyReLU / F.leaky_relu at slope 0.01),
optionally with a BatchNorm between; residual adds (`x + f(x)`, `torch.add`, `operator.add`),
optionally followed by a ReLU; max and average pooling (nn.MaxPool2d, nn.AvgPool2d,
F.max_pool2d, F.avg_pool2d), global average pooling (nn.AdaptiveAvgPool2d(1),
F.adaptive_avg_pool2d(x, 1)), flattening (nn.Flatten, torch.flatten, .flatten/.view/.reshape),
Dropout/Identity anywhere; the output is the last Linear, the classifier. Its forward is traced
(torch.fx) into flow.models.graph's DAG, each node named by the module path a person recognises
(`layer2.0.conv1`; a functional call by the path of the module whose forward makes it, e.g.
`layer2.0.add`). densiflow rebuilds it as its own FINN-compatible network (flow.models.build:
bias-free layers, BatchNorm + quantized activation after every hidden layer) and trains it, so
the user's module only says what the network is.
"""
from __future__ import annotations

import importlib
import inspect
import operator
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from flow.core.errors import ConfigError
from flow.models.build import LEAKY_SLOPE
from flow.models.graph import INPUT, Architecture, LayerSpec, Node, OpSpec
from flow.models.zoo import ARCHITECTURES

Factory = Callable[[], nn.Module]
_PASS = (nn.Dropout, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)  # rebuilt or no effect
_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardtanh: "hardtanh",
                nn.LeakyReLU: "leaky_relu"}
_ACT_CALLS = {torch.relu: "relu", F.relu: "relu", "relu": "relu", F.relu6: "relu6",
              F.hardtanh: "hardtanh", F.leaky_relu: "leaky_relu"}
_ADDS = (operator.add, operator.iadd, torch.add, "add", "add_", "__add__")
_FLATTENS = (torch.flatten, "flatten", "view", "reshape")
_POOL_CALLS = {F.max_pool2d: "maxpool", torch.max_pool2d: "maxpool", F.avg_pool2d: "avgpool",
               torch.nn.functional.adaptive_avg_pool2d: "gap"}
_DEPLOYED = ("Conv2d (plain or depthwise), Linear, BatchNorm, ReLU, ReLU6, Hardtanh, LeakyReLU, "
             "residual add, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout")


def load_factory(spec: str, base: Path | None = None) -> Factory:
    """The callable named "package.module:function" (importable from the recipe's folder too)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"model.factory: {spec!r} is not 'package.module:function'")
    if base is not None and str(base) not in sys.path:
        sys.path.insert(0, str(base))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"model.factory: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"model.factory: {module_name} has no function {attr!r}")
    return factory


def import_root(factory: Factory) -> Path:
    """The folder on sys.path that the factory's module was imported from."""
    module = sys.modules[factory.__module__]
    path = Path(inspect.getfile(module)).resolve()
    levels = factory.__module__.count(".") + (path.name == "__init__.py")
    return path.parents[levels]


def architecture_from_module(module: nn.Module, in_shape: tuple[int, int, int],
                             name: str) -> Architecture:
    """The Architecture of a user's float module (see the module doc for what is allowed)."""
    tracer = _Tracer(module, name)
    nodes = tracer.run()
    try:
        arch = Architecture(name, tuple(in_shape), tuple(nodes))
    except ConfigError as err:
        raise ConfigError(f"model {name}: {str(err).split(': ', 1)[-1]}") from None
    _check_sizes(arch, tracer.layers, name)
    return arch


class _Tracer:
    """Walks the torch.fx graph of a module and emits DAG nodes named by module path."""

    def __init__(self, module: nn.Module, name: str):
        import torch.fx

        try:
            self.graph = torch.fx.symbolic_trace(module).graph
        except Exception as err:  # noqa: BLE001 - any tracing failure is the user's model
            raise ConfigError(f"model {name}: torch.fx cannot trace the network ({err}); write "
                              "its forward without data-dependent control flow") from None
        self.modules = dict(module.named_modules())
        self.model = name
        self.nodes: list[Node] = []
        self.layers: dict[str, nn.Module] = {}  # DAG layer name -> the user's layer
        self.value: dict[str, str] = {}  # fx node name -> the DAG node whose output it is
        self.names: set[str] = set()
        self.moved: dict[str, tuple[str, str]] = {}  # layer -> (activation, max-pool) moved past

    def run(self) -> list[Node]:
        for fx in self.graph.nodes:
            if fx.op == "placeholder":
                self.value[fx.name] = INPUT
            elif fx.op == "output":
                self._output(fx)
            else:
                self._visit(fx)
        for layer, (act, pool) in self.moved.items():
            users = [n.name for n in self.nodes if layer in n.inputs]
            if users != [pool]:
                raise ConfigError(f"model {self.model}: {act} after max-pool {pool} applies to "
                                  f"{layer}, which also feeds {users[-1]}; apply the activation "
                                  "before the pool")
        return self.nodes

    # ------------------------------------------------------------------ one fx node

    def _visit(self, fx) -> None:
        where = self._where(fx)
        target = self.modules.get(fx.target) if fx.op == "call_module" else None
        kind = target if target is not None else fx.target
        tensors = [a for a in fx.args if hasattr(a, "op")]
        if isinstance(target, (nn.Conv2d, nn.Linear)):
            self._emit(_layer(where, target, self.model), fx)
            self.layers[where] = target
        elif isinstance(target, _PASS):
            self.value[fx.name] = self._in(tensors[0])
        elif type(target) in _ACT_MODULES or (target is None and kind in _ACT_CALLS):
            act = _ACT_MODULES[type(target)] if target is not None else _ACT_CALLS[kind]
            self._activate(fx, where, act, target)
        elif target is None and kind in _ADDS:
            self._add(fx, where, tensors)
        elif isinstance(target, nn.Flatten) or (target is None and kind in _FLATTENS):
            self._emit(OpSpec(where, "flatten", inputs=(self._in(tensors[0]),)), fx)
        elif isinstance(target, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)) or (
                target is None and kind in _POOL_CALLS):
            self._emit(_pool(where, fx, target, self.model, self._in(tensors[0])), fx)
        else:
            what = type(target).__name__ if target is not None else getattr(
                kind, "__name__", str(kind))
            raise ConfigError(f"model {self.model}: {where} ({what}) is not a layer kind "
                              f"densiflow deploys; use {_DEPLOYED}{_hint(what)}")

    def _activate(self, fx, where: str, act: str, target: nn.Module | None) -> None:
        src = self._in(fx.args[0])
        node = self._node(src)
        _check_act_args(fx, target, act, where, self.model)
        if isinstance(node, OpSpec) and node.kind == "maxpool" and self._open(node.inputs[0]):
            self.moved[node.inputs[0]] = (where, node.name)
            node = self._node(node.inputs[0])  # act(maxpool(x)) = maxpool(act(x)): act monotonic
        if isinstance(node, OpSpec) and node.kind == "add" and node.act is None and act == "relu":
            self._replace(replace(node, act="relu"))
        elif isinstance(node, LayerSpec) and node.act is None:
            self._replace(replace(node, act=act))
        else:
            after = "the network input" if node is None else node.name
            raise ConfigError(f"model {self.model}: {where} ({act}) follows {after}; an "
                              "activation follows a Conv2d/Linear (optionally via BatchNorm), or "
                              "a ReLU follows a residual add")
        self.value[fx.name] = src

    def _add(self, fx, where: str, tensors: list) -> None:
        if len(tensors) != 2 or len(fx.args) != 2 or fx.kwargs.get("alpha", 1) != 1:
            raise ConfigError(f"model {self.model}: {where} adds a constant or scales a term; "
                              "residual adds join two tensors (x + f(x))")
        a, b = (self._in(t) for t in tensors)
        # the main branch first: the input whose layer has no activation of its own
        if self._open(b) and not self._open(a):
            a, b = b, a
        self._emit(OpSpec(where, "add", inputs=(a, b)), fx)

    def _output(self, fx) -> None:
        out = fx.args[0]
        if not hasattr(out, "op") or self._in(out) != self.nodes[-1].name:
            raise ConfigError(f"model {self.model}: the network must return one tensor, the "
                              "output of its last layer (the Linear classifier)")
        last = self.nodes[-1]
        if not isinstance(last, LayerSpec) or last.kind != "linear" or last.act is not None:
            raise ConfigError(f"model {self.model}: the last layer must be a Linear classifier "
                              f"without activation, not {last.name}")

    # ------------------------------------------------------------------ bookkeeping

    def _emit(self, node: Node, fx) -> None:
        if isinstance(node, LayerSpec):
            node = replace(node, act=None, inputs=(self._in(fx.args[0]),))
        self.nodes.append(node)
        self.names.add(node.name)
        self.value[fx.name] = node.name

    def _in(self, arg) -> str:
        return self.value[arg.name]

    def _node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def _open(self, name: str) -> bool:
        node = self._node(name)
        return isinstance(node, LayerSpec) and node.act is None

    def _replace(self, node: Node) -> None:
        self.nodes = [node if n.name == node.name else n for n in self.nodes]

    def _where(self, fx) -> str:
        """The module path of a call: the module itself, or the module whose forward makes a
        functional call, plus the call's name (`layer1.0.add`, `layer1.0.relu_1`)."""
        if fx.op == "call_module":
            return fx.target
        stack = fx.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else ""
        base = fx.target if isinstance(fx.target, str) else getattr(
            fx.target, "__name__", "op")
        base = {"fn": "max_pool2d", "iadd": "add", "__add__": "add", "add_": "add"}.get(
            base.strip("_") or base, base.strip("_") or base)
        stem = f"{path}.{base}" if path else base
        where, i = stem, 0
        while where in self.names or where in self.modules:
            i += 1
            where = f"{stem}_{i}"
        return where


def _layer(where: str, layer: nn.Module, model: str) -> LayerSpec:
    """The layer as a LayerSpec named by its module path (e.g. features.0)."""
    if isinstance(layer, nn.Linear):
        return LayerSpec(where, "linear", layer.out_features)
    k, s, p, d = (_square(layer, attr, where, model)
                  for attr in ("kernel_size", "stride", "padding", "dilation"))
    if d != 1:
        raise ConfigError(f"model {model}: {where} has dilation {d}; use dilation 1")
    groups = layer.groups
    if groups != 1 and not (groups == layer.in_channels == layer.out_channels):
        raise ConfigError(f"model {model}: {where} has groups={groups} with "
                          f"{layer.in_channels} in and {layer.out_channels} out channels; use "
                          "groups=1 or a depthwise convolution (groups = in = out channels)")
    return LayerSpec(where, "conv", layer.out_channels, k, s, p, groups)


def _pool(where: str, fx, target: nn.Module | None, model: str, inp: str) -> OpSpec:
    if target is not None:
        kind = {nn.MaxPool2d: "maxpool", nn.AvgPool2d: "avgpool",
                nn.AdaptiveAvgPool2d: "gap"}[type(target)]
        attrs = {a: getattr(target, a) for a in ("kernel_size", "stride", "padding",
                                                 "output_size", "dilation", "ceil_mode")
                 if hasattr(target, a)}
    else:
        kind = _POOL_CALLS[fx.target]
        names = ("output_size",) if kind == "gap" else ("kernel_size", "stride", "padding")
        attrs = {n: v for n, v in zip(names, fx.args[1:])}
        attrs.update({k: v for k, v in fx.kwargs.items() if v is not None})
    if kind == "gap":
        size = attrs.get("output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise ConfigError(f"model {model}: {where} pools to {size}; global average pooling "
                              "is AdaptiveAvgPool2d(1), other sizes: use AvgPool2d")
        return OpSpec(where, "gap", inputs=(inp,))
    if attrs.get("ceil_mode") or attrs.get("dilation", 1) not in (1, (1, 1)):
        raise ConfigError(f"model {model}: {where} uses ceil_mode or dilation; use the defaults")
    k = _pair(attrs["kernel_size"], where, model)
    s = _pair(attrs.get("stride") or k, where, model)
    return OpSpec(where, kind, k, s, _pair(attrs.get("padding", 0), where, model),
                  inputs=(inp,))


def _check_act_args(fx, target: nn.Module | None, act: str, where: str, model: str) -> None:
    """Clipped and leaky activations deploy at fixed constants."""
    if act == "hardtanh":
        lo = target.min_val if target is not None else fx.kwargs.get("min_val", -1.0)
        hi = target.max_val if target is not None else fx.kwargs.get("max_val", 1.0)
        if (lo, hi) != (-1.0, 1.0):
            raise ConfigError(f"model {model}: {where} clips to [{lo}, {hi}]; Hardtanh deploys "
                              "as [-1, 1] (or use ReLU6)")
    if act == "leaky_relu":
        slope = target.negative_slope if target is not None else (
            fx.args[1] if len(fx.args) > 1 else fx.kwargs.get("negative_slope", 0.01))
        if slope != LEAKY_SLOPE:
            raise ConfigError(f"model {model}: {where} has negative slope {slope}; LeakyReLU "
                              f"deploys with slope {LEAKY_SLOPE}")


def _check_sizes(arch: Architecture, layers: dict[str, nn.Module], model: str) -> None:
    """The user's layer sizes against the shapes the data gives them (data.shape)."""
    shapes = arch.shapes()
    c, h, w = arch.in_shape
    for spec in arch.layers:
        got = shapes[arch.inputs_of(spec.name)[0]]
        layer = layers[spec.name]
        if isinstance(layer, nn.Linear):
            given, wanted = got.ch * got.hw * got.hw, layer.in_features
            what = "input features"
        else:
            given, wanted, what = got.ch, layer.in_channels, "input channels"
        if given != wanted:
            raise ConfigError(f"model {model}: {spec.name} expects {wanted} {what}, but a "
                              f"{c}x{h}x{w} input (data.shape) gives it {given}; change the "
                              "layer or data.shape")
    if h != w:
        raise ConfigError(f"model {model}: images of {h}x{w}; densiflow deploys square images")


def _pair(value, where: str, model: str) -> int:
    a, b = value if isinstance(value, (tuple, list)) else (value, value)
    if a != b:
        raise ConfigError(f"model {model}: {where} has a non-square size {value}")
    return int(a)


def _square(layer: nn.Module, attr: str, where: str, model: str) -> int:
    value = getattr(layer, attr)
    if isinstance(value, str):
        raise ConfigError(f"model {model}: {where} has padding {value!r}; give it in pixels")
    return _pair(value, where, model)


def _hint(what: str) -> str:
    if what in ("cat", "concat", "stack"):
        return " (concatenation is not deployed yet: use a residual add)"
    return ""


def register(name: str, factory: Factory) -> None:
    """Make a factory usable as `model: {arch: name}` in recipes of this Python process."""
    if name in ARCHITECTURES and name not in _REGISTERED:
        raise ConfigError(f"architecture {name!r} is one of densiflow's; choose another name")
    _REGISTERED[name] = factory


_REGISTERED: dict[str, Factory] = {}


def registered(name: str) -> Factory | None:
    return _REGISTERED.get(name)
