"""Analytical performance of a streaming dataflow pipeline from per-layer cycle counts.

Every layer of a FINN dataflow pipeline works on its own frame at the same time, so:
- steady-state interval II = max_l cycles(l)          (the slowest layer sets the pace)
- throughput               = f_clk / II               frames per second
- first-frame latency      = sum of cycles along the longest input->output path of the graph
  (through a fork/join: the slower branch; pessimistic, as FINN's `dataflow_performance`: assumes
  no overlap between layers of one frame)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict


class Performance(BaseModel):
    """Throughput and latency of a pipeline at one clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clock_mhz: float
    steady_state_cycles: int  # cycles between frames in steady state (slowest layer)
    bottleneck: str  # name of the slowest layer
    latency_cycles: int  # first frame, summed along the critical path
    fps: float  # frames per second at clock_mhz
    latency_us: float  # first-frame latency in microseconds

    def to_dict(self) -> dict:
        """Plain JSON-able fields."""
        return self.model_dump(mode="json")


def throughput_fps(steady_state_cycles: int, clock_mhz: float) -> float:
    """Frames per second when a frame leaves every `steady_state_cycles` cycles."""
    if steady_state_cycles <= 0:
        raise ValueError(f"steady_state_cycles must be positive, got {steady_state_cycles}")
    return clock_mhz * 1e6 / steady_state_cycles


def cycles_to_us(cycles: int, clock_mhz: float) -> float:
    """Duration of `cycles` clock cycles in microseconds."""
    return cycles / clock_mhz


def topological_order(nodes: Sequence[str], predecessors: Mapping[str, Sequence[str]]
                      ) -> list[str]:
    """`nodes` ordered so that each comes after its predecessors (ties keep the given order);
    predecessors outside `nodes` (the graph's input, nodes without cycles) are ignored."""
    known = set(nodes)
    preds = {n: [p for p in predecessors.get(n, ()) if p in known] for n in nodes}
    done: dict[str, None] = {}
    for _ in range(len(nodes)):
        ready = [n for n in nodes if n not in done and all(p in done for p in preds[n])]
        if not ready:
            break
        done.update(dict.fromkeys(ready))
    if len(done) < len(nodes):
        stuck = [n for n in nodes if n not in done]
        raise ValueError(f"the graph has a cycle through {', '.join(stuck)}: not a pipeline")
    return list(done)


def critical_path_cycles(
    layer_cycles: Mapping[str, int], predecessors: Mapping[str, Sequence[str]] | None = None
) -> int:
    """Longest input->output sum of cycles over the graph `predecessors` describes (a fork feeds
    every branch, a join waits for its slowest input); a plain chain (sum of all) when no graph
    is given."""
    if predecessors is None:
        return int(sum(layer_cycles.values()))
    done: dict[str, int] = {}
    for name in topological_order(list(layer_cycles), predecessors):
        before = [done[p] for p in predecessors.get(name, ()) if p in done]
        done[name] = int(layer_cycles[name]) + max(before, default=0)
    return max(done.values(), default=0)


def graph_predecessors(model) -> dict[str, list[str]]:
    """{node name: names of the nodes feeding it} of a FINN/ONNX model (ModelWrapper)."""
    return {n.name: [p.name for p in model.find_direct_predecessors(n) or []]
            for n in model.graph.node}


def pipeline_performance(
    layer_cycles: Mapping[str, int],
    clock_mhz: float,
    predecessors: Mapping[str, Sequence[str]] | None = None,
) -> Performance:
    """Throughput (f_clk / max cycles) and first-frame latency of the pipeline `layer_cycles`."""
    if not layer_cycles:
        raise ValueError("no layers: cannot compute the performance of an empty pipeline")
    bottleneck = max(layer_cycles, key=lambda name: layer_cycles[name])
    ii = int(layer_cycles[bottleneck])
    latency = critical_path_cycles(layer_cycles, predecessors)
    return Performance(
        clock_mhz=clock_mhz,
        steady_state_cycles=ii,
        bottleneck=bottleneck,
        latency_cycles=latency,
        fps=throughput_fps(ii, clock_mhz),
        latency_us=cycles_to_us(latency, clock_mhz),
    )
