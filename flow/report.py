"""What a person looks at: summary.json, the per-layer terminal table, cross-run comparison."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from flow.io import atomic_write_json

RESOURCE_KEYS = ("lut", "bram18", "uram", "dsp")


def group_hw_layers(finn_layers: list[dict], layer_names: list[str]) -> dict[str, list[dict]]:
    """Attribute FINN's HW nodes to plan layers, in chain order.

    Each MVAU/VVAU closes a layer; the Thresholding right after it is that layer's activation;
    every other node (padding, sliding window, width converter, FIFO, the input quantizer) belongs
    to the next compute layer; nodes after the last one to the last layer. Returns {} where the
    number of compute nodes differs from the number of layers (a foreign model).
    """
    compute = [i for i, r in enumerate(finn_layers) if r["op_type"].startswith(("MVAU", "VVAU"))]
    if len(compute) != len(layer_names):
        return {}
    groups: dict[str, list[dict]] = {name: [] for name in layer_names}
    layer = 0
    after_compute = False
    for i, row in enumerate(finn_layers):
        is_thr = row["op_type"].startswith("Thresholding")
        if after_compute and is_thr:
            groups[layer_names[layer - 1]].append(row)
            after_compute = False
            continue
        if i in compute:
            groups[layer_names[layer]].append(row)
            layer += 1
            after_compute = True
        else:
            after_compute = after_compute and row["op_type"].startswith(("StreamingFIFO", "StreamingDataWidth"))
            groups[layer_names[min(layer, len(layer_names) - 1)]].append(row)
    return groups


def layer_table_rows(qat: dict, finn: dict | None) -> list[dict]:
    """Per-layer rows joining plan metrics with FINN estimates (summed over the layer's nodes)."""
    metrics = qat["metrics"]["layers"]
    groups = group_hw_layers(finn["layers"], [r["layer"] for r in metrics]) if finn else {}
    rows = []
    for m in metrics:
        nodes = groups.get(m["layer"], [])
        row = {
            "layer": m["layer"],
            "weight_bits": m["weight_bits"],
            "act_bits": m["act_bits"],
            "channels": f"{m['out_ch']}/{m['full_out_ch']}",
            "weight_mb": m["weight_mb"],
            "act_mb": m["act_mb"],
            "nodes": [n["name"] for n in nodes],
        }
        if nodes:
            row.update({k: sum(n[k] for n in nodes) for k in RESOURCE_KEYS})
            row["cycles"] = max(n["cycles"] for n in nodes)
        rows.append(row)
    return rows


def build_summary(recipe: dict, results: dict) -> dict:
    """The run's figures in one JSON-able dict."""
    qat, finn, sim = results.get("qat"), results.get("finn"), results.get("simulate")
    summary = {
        "run": recipe["name"],
        "dataset": recipe["data"]["dataset"],
        "arch": recipe["model"]["arch"],
        "method": recipe["method"]["name"],
        "board": recipe["hardware"]["board"],
        "float_test_accuracy": results["baseline"]["test_accuracy"],
        "plan": results["plan"]["plan"],
        "seconds": {step: r.get("seconds") for step, r in results.items()},
    }
    if qat:
        t = qat["metrics"]["totals"]
        summary.update({
            "test_accuracy": qat["test_accuracy"],
            "accuracy_drop_points": 100 * (results["baseline"]["test_accuracy"] - qat["test_accuracy"]),
            "weight_mb": t["weight_mb"], "act_mb": t["act_mb"], "total_mb": t["total_mb"],
            "avg_bits": t["avg_bits"], "params": t["params"],
            "performance_density": qat["performance_density"],
        })
    if finn:
        summary["hardware"] = {
            "totals": finn["totals"], "fits": finn["fit"]["fits"], "over": finn["fit"]["over"],
            "fps": finn["performance"]["fps"], "latency_us": finn["performance"]["latency_us"],
            "steady_state_cycles": finn["performance"]["steady_state_cycles"],
            "clock_mhz": finn["clock_mhz"], "hls_nodes": finn["hls_nodes"],
            "target_fps": recipe["hardware"]["target_fps"],
        }
    if sim:
        summary["simulation"] = {k: v for k, v in sim.items() if k != "seconds"}
    summary["layers"] = layer_table_rows(qat, finn) if qat else []
    return summary


def write_summary(run_dir: Path, summary: dict) -> Path:
    """summary.json in the run folder, atomically."""
    path = run_dir / "summary.json"
    atomic_write_json(path, summary)
    return path


def print_summary(summary: dict, console: Console | None = None) -> None:
    """The per-layer table and the totals, for the terminal."""
    console = console or Console()
    table = Table(title=f"densiflow run '{summary['run']}' — {summary['arch']} on "
                        f"{summary['dataset']}, {summary['method']} plan, {summary['board']}")
    for col in ("layer", "W/A bits", "channels", "weight Mb", "act Mb", "LUT", "BRAM18", "DSP",
                "cycles"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in summary["layers"]:
        table.add_row(
            r["layer"], f"{r['weight_bits']}/{r['act_bits'] or '-'}", r["channels"],
            f"{r['weight_mb']:.4f}", f"{r['act_mb']:.4f}",
            *(f"{r[k]:.0f}" if k in r else "-" for k in ("lut", "bram18", "dsp", "cycles")),
        )
    hw = summary.get("hardware")
    if hw:
        t = hw["totals"]
        table.add_row("total", "", "", f"{summary['weight_mb']:.4f}", f"{summary['act_mb']:.4f}",
                      f"{t['LUT']:.0f}", f"{t['BRAM18']:.0f}", f"{t['DSP']:.0f}",
                      str(hw["steady_state_cycles"]), style="bold")
    console.print(table)
    lines = [
        f"accuracy: float {100 * summary['float_test_accuracy']:.2f} %, "
        f"compressed {100 * summary['test_accuracy']:.2f} % "
        f"(drop {summary['accuracy_drop_points']:.2f} points)",
        f"size: {summary['total_mb']:.4f} Mb (weights {summary['weight_mb']:.4f} + activations "
        f"{summary['act_mb']:.4f}), average bit-width {summary['avg_bits']:.2f}, "
        f"performance density {summary['performance_density']:.1f} %/Mb",
    ]
    if hw:
        fit = "fits" if hw["fits"] else f"DOES NOT FIT (over: {', '.join(hw['over'])})"
        met = "met" if hw["fps"] >= hw["target_fps"] else "MISSED"
        lines.append(
            f"hardware: {hw['fps']:,.0f} frames/s at {hw['clock_mhz']:g} MHz (target "
            f"{hw['target_fps']:,.0f}: {met}), latency {hw['latency_us']:.2f} us (estimate), "
            f"{fit} on {summary['board']}"
        )
    sim = summary.get("simulation")
    if sim:
        lines.append(
            f"RTL simulation: {sim['frames']} frames, {sim['mismatches']} mismatching words, "
            f"accuracy {100 * sim['accuracy']:.2f} %, {sim['measured_cycles_per_frame']:.1f} "
            f"cycles/frame measured vs {sim['estimated_cycles_per_frame']} estimated, first-frame "
            f"latency {sim['measured_latency_cycles']} cycles"
        )
        if sim.get("bottleneck"):
            b = sim["bottleneck"]
            lines.append(f"measured bottleneck: {b['node']}, busy {b['busy_cycles']:.0f} "
                         f"cycles/frame (FINN estimate {b['estimated_cycles']})")
    for line in lines:
        console.print(line)


COMPARE_COLUMNS = ("run", "method", "test_accuracy", "total_mb", "avg_bits", "performance_density",
                   "LUT", "BRAM18", "DSP", "fps", "fits")


def comparison_rows(summaries: list[dict]) -> list[dict]:
    """One row per run: accuracy, size, density and hardware totals."""
    rows = []
    for s in summaries:
        hw = s.get("hardware") or {}
        totals = hw.get("totals", {})
        rows.append({
            "run": s["run"], "method": s["method"], "test_accuracy": s.get("test_accuracy"),
            "total_mb": s.get("total_mb"), "avg_bits": s.get("avg_bits"),
            "performance_density": s.get("performance_density"),
            "LUT": totals.get("LUT"), "BRAM18": totals.get("BRAM18"), "DSP": totals.get("DSP"),
            "fps": hw.get("fps"), "fits": hw.get("fits"),
        })
    return rows


def write_comparison(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """comparison.csv and comparison.png (accuracy vs Mb, marker area ~ LUTs) in out_dir."""
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flow.io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COMPARE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out_dir / "comparison.csv"
    atomic_write_text(csv_path, buf.getvalue())

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        ax.scatter(r["total_mb"], 100 * r["test_accuracy"], s=40 + (r["LUT"] or 0) / 50, alpha=0.7)
        ax.annotate(f"{r['run']}\n{r['performance_density']:.0f} %/Mb",
                    (r["total_mb"], 100 * r["test_accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("weights + activations (Mb)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("performance density across runs (marker area ~ LUTs)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = out_dir / "comparison.png"
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png_path)
    return {"csv": csv_path, "png": png_path}


def print_comparison(rows: list[dict], console: Console | None = None) -> None:
    """The comparison as a terminal table, best performance density first."""
    console = console or Console()
    table = Table(title="runs compared")
    for col in COMPARE_COLUMNS:
        table.add_column(col, justify="left" if col in ("run", "method") else "right")
    for r in sorted(rows, key=lambda r: -(r["performance_density"] or 0)):
        table.add_row(
            r["run"], r["method"], f"{100 * r['test_accuracy']:.2f} %", f"{r['total_mb']:.4f}",
            f"{r['avg_bits']:.2f}", f"{r['performance_density']:.1f}",
            *(f"{r[k]:.0f}" if r[k] is not None else "-" for k in ("LUT", "BRAM18", "DSP", "fps")),
            "yes" if r["fits"] else "no" if r["fits"] is not None else "-",
        )
    console.print(table)
