"""A user's own network as a densiflow architecture: from a factory in a recipe
(`model: {factory: "pkg.module:make"}`) or registered from Python (`register("name", make)`).

The factory returns a float PyTorch module built from the layer kinds densiflow deploys: Conv2d
and Linear layers, each hidden one followed by a ReLU (optionally with a BatchNorm between), a
Flatten before the first Linear, Dropout/Identity anywhere; the last Linear is the classifier.
Its forward is traced (torch.fx) and must be that chain. densiflow rebuilds it as its own
FINN-compatible network (flow.models.build: bias-free layers, BatchNorm + quantized ReLU after
every hidden layer) and trains it, so the user's module only says what the network is.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from flow.core.errors import ConfigError
from flow.models.zoo import ARCHITECTURES, Architecture, LayerSpec

Factory = Callable[[], nn.Module]
_PASS = (nn.Dropout, nn.Identity)  # no effect on the deployed network


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
    layers, last = [], None
    for where, kind in _traced_chain(module):
        if isinstance(kind, (nn.Conv2d, nn.Linear)):
            if last is not None and not last[2]:
                raise ConfigError(f"model {name}: {last[0]} is followed by {where}, not by a ReLU;"
                                  " hidden layers need Conv/Linear -> [BatchNorm] -> ReLU")
            layers.append(_spec(where, kind, name))
            last = [where, kind, False]
        elif kind == "relu":
            if last is None or last[2]:
                raise ConfigError(f"model {name}: {where} (ReLU) follows no Conv2d/Linear")
            last[2] = True
        elif kind == "flatten" and layers and layers[-1].kind == "linear":
            raise ConfigError(f"model {name}: {where} flattens after a Linear layer")
    if not layers or layers[-1].kind != "linear" or last[2]:
        raise ConfigError(f"model {name}: the last layer must be a Linear classifier without "
                          "ReLU")
    arch = Architecture(name, tuple(in_shape), tuple(layers))
    geo = arch.geometry()
    if any(g.out_hw < 1 for g in geo):
        raise ConfigError(f"model {name}: the convolutions shrink a {in_shape} input below 1x1")
    return arch


def _traced_chain(module: nn.Module):
    """(where, kind) per traced call: a layer module, "relu", "flatten"; errors name the rest."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure is the user's model
        raise ConfigError(f"model: torch.fx cannot trace the network ({err}); write its forward "
                          "as a plain chain of layers") from None
    modules = dict(module.named_modules())
    for node in graph.nodes:
        if len(node.users) > 1 or len(node.all_input_nodes) > 1:
            raise ConfigError(f"model: the network branches at {node.name}; densiflow builds "
                              "plain chains of layers")
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        target = modules.get(node.target) if node.op == "call_module" else None
        yield node.name, _kind(node, target)


def _kind(node, target):
    import torch

    if isinstance(target, (nn.Conv2d, nn.Linear)):
        return target
    if isinstance(target, nn.ReLU) or node.target in (torch.relu, nn.functional.relu, "relu"):
        return "relu"
    if isinstance(target, nn.Flatten) or node.target in (torch.flatten, "flatten", "view",
                                                         "reshape"):
        return "flatten"
    if isinstance(target, (nn.BatchNorm1d, nn.BatchNorm2d, *_PASS)):
        return "pass"
    what = type(target).__name__ if target is not None else str(node.target)
    hint = (" pooling exists only as HLS in FINN, which the RTL simulation cannot run: use a "
            "strided convolution" if "Pool" in what else "")
    raise ConfigError(f"model: {node.name} ({what}) is not a layer kind densiflow deploys "
                      f"(Conv2d, Linear, BatchNorm, ReLU, Flatten, Dropout).{hint}")


def _spec(where: str, layer: nn.Module, name: str) -> LayerSpec:
    """The layer as a LayerSpec named as torch.fx names the call (e.g. features_0)."""
    if isinstance(layer, nn.Linear):
        return LayerSpec(where, "linear", layer.out_features)
    k, s, p = (_square(layer, attr, where, name) for attr in ("kernel_size", "stride", "padding"))
    if layer.groups != 1 or _square(layer, "dilation", where, name) != 1:
        raise ConfigError(f"model {name}: {where} uses groups or dilation; plain convolutions only")
    return LayerSpec(where, "conv", layer.out_channels, k, s, p)


def _square(layer: nn.Module, attr: str, where: str, name: str) -> int:
    value = getattr(layer, attr)
    if isinstance(value, str):
        raise ConfigError(f"model {name}: {where} has padding {value!r}; give it in pixels")
    a, b = value if isinstance(value, tuple) else (value, value)
    if a != b:
        raise ConfigError(f"model {name}: {where} has a non-square {attr} {value}")
    return int(a)


def register(name: str, factory: Factory) -> None:
    """Make a factory usable as `model: {arch: name}` in recipes of this Python process."""
    if name in ARCHITECTURES and name not in _REGISTERED:
        raise ConfigError(f"architecture {name!r} is one of densiflow's; choose another name")
    _REGISTERED[name] = factory


_REGISTERED: dict[str, Factory] = {}


def registered(name: str) -> Factory | None:
    return _REGISTERED.get(name)
