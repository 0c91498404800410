"""`densiflow` command line: run a recipe, estimate a QONNX file, simulate, compare runs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from flow.errors import DensiflowError
from flow.finn_build import DEFAULT_FIFO_DEPTH
from hw_models.errors import HardwareError

console = Console(width=None if sys.stdout.isatty() else 140)  # logs and CI get whole tables


def cmd_run(args: argparse.Namespace) -> None:
    from flow.config import load_recipe
    from flow.pipeline import run_recipe
    from flow.report import print_summary

    recipe = load_recipe(args.recipe)
    run_recipe(recipe, Path(args.out), fresh=args.fresh, from_step=args.from_step)
    summary = json.loads((Path(args.out) / recipe.name / "summary.json").read_text())
    print_summary(summary, console)
    console.print(f"artefacts: {Path(args.out) / recipe.name}")


def cmd_estimate(args: argparse.Namespace) -> None:
    from flow.finn_build import estimate_qonnx

    work = Path(args.out) / "estimate" / Path(args.model).stem
    est = estimate_qonnx(args.model, args.board, args.target_fps, work,
                         input_dtype=args.input_dtype, clock_mhz=args.clock_mhz,
                         fifo_depth=args.fifo_depth)
    _print_estimate(est.to_dict())
    console.print(f"estimate.json and intermediate models: {work}")


def _run_folder(path: str, step: str) -> Path:
    """A finished run folder that has completed `step` (else a clear error)."""
    from flow.pipeline import step_folder

    run_dir = Path(path)
    folder = step_folder(step)
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / folder).is_dir():
        raise DensiflowError(f"{run_dir}: not a run folder with a finished '{step}' step "
                             f"(expected recipe.yaml and {folder}/)")
    return run_dir


def cmd_simulate(args: argparse.Namespace) -> None:
    from flow.config import load_recipe, parse_recipe
    from flow.pipeline import run_recipe
    from flow.report import print_summary

    run_dir = _run_folder(args.run, "finn")
    recipe = load_recipe(run_dir / "recipe.yaml")
    if recipe.name != run_dir.name:
        raise DensiflowError(f"{run_dir}: the folder of run '{recipe.name}' was renamed; "
                             f"name it {recipe.name} again")
    sim = {**recipe.simulate.model_dump(), "enabled": True}
    sim.update({k: v for k, v in (("frames", args.frames), ("backpressure", args.backpressure))
                if v is not None})
    recipe = parse_recipe({**recipe.model_dump(), "simulate": sim}, f"densiflow simulate {run_dir}")
    run_recipe(recipe, run_dir.parent, from_step="simulate")
    print_summary(json.loads((run_dir / "summary.json").read_text()), console)


def cmd_compare(args: argparse.Namespace) -> None:
    from flow.errors import ConfigError
    from flow.report import comparison_rows, print_comparison, write_comparison

    summaries = []
    for run_dir in args.runs:
        path = Path(run_dir) / "summary.json"
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no summary.json; is it a finished run folder?")
        summaries.append(json.loads(path.read_text()))
    rows = comparison_rows(summaries)
    print_comparison(rows, console)
    paths = write_comparison(rows, Path(args.out))
    console.print(f"table: {paths['csv']}  plot: {paths['png']}")


def cmd_importance(args: argparse.Namespace) -> None:
    from rich.table import Table

    from flow.config import load_recipe
    from flow.importance import compare_measures
    from flow.importance.inspect import measure_scores, run_importance, same_kind, save_comparison
    from flow.pipeline import Run

    run_dir = _run_folder(args.run, "baseline")
    layer, channels = run_importance(Run(load_recipe(run_dir / "recipe.yaml"), run_dir))
    console.print(layer.table())
    if not args.compare:
        return
    names = tuple(args.compare)
    a, b = (measure_scores(layer, channels, n) for n in names)
    same_kind(a, b, names)
    result = compare_measures(a, b)
    table = Table(title=f"rank agreement: {names[0]} vs {names[1]}")
    for col in ("scope", "n", "Kendall tau", "Levenshtein"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    scopes = ([("layers", result["layers"])] if result["layers"] else []) + list(
        result["per_layer"].items())
    for scope, r in scopes:
        table.add_row(scope, str(r["n"]), f"{r['tau']:.3f}", str(r["lev"]))
    console.print(table)
    console.print(f"saved: {save_comparison(run_dir, names, result)}")


def cmd_boards(args: argparse.Namespace) -> None:
    from rich.table import Table

    from hw_models.boards import BOARDS

    table = Table(title="boards")
    for col in ("name", "part", "LUT", "FF", "BRAM18", "URAM", "DSP", "DSP type", "clock MHz"):
        table.add_column(col)
    for b in BOARDS:
        table.add_row(b.name, b.part, str(b.lut), str(b.ff), str(b.bram18), str(b.uram),
                      str(b.dsp), b.dsp_type, f"{b.clock_mhz:g}")
    console.print(table)


def _print_estimate(est: dict) -> None:
    from rich.table import Table

    table = Table(title=f"FINN estimate on {est['board']} ({est['part']}) at {est['clock_mhz']:g} MHz")
    for col in ("node", "impl", "PE", "SIMD", "LUT", "BRAM18", "URAM", "DSP", "cycles"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for r in est["layers"]:
        table.add_row(r["name"], r["impl_style"], str(r["pe"] or "-"), str(r["simd"] or "-"),
                      f"{r['lut']:.0f}", f"{r['bram18']:.0f}", f"{r['uram']:.0f}",
                      f"{r['dsp']:.0f}", str(r["cycles"]))
    console.print(table)
    for res, row in est["fit"]["resources"].items():
        flag = "" if row["fits"] else "  OVER"
        console.print(f"{res:>7}: {row['used']:.0f} / {row['available']} "
                      f"({100 * row['utilisation']:.1f} %){flag}")
    perf = est["performance"]
    console.print(f"throughput {perf['fps']:,.0f} frames/s, latency {perf['latency_us']:.2f} us, "
                  f"bottleneck {perf['bottleneck']}")
    for note in est["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="densiflow",
        description="Compress a PyTorch network by importance and deploy it through QONNX and "
                    "FINN, validated in a cycle-accurate RTL simulation.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe: train, compress, export, FINN build, simulate, report")
    r.add_argument("recipe", help="recipe YAML, e.g. build/digits.yaml")
    r.add_argument("--out", default="build/out", help="root of run folders (default build/out)")
    r.add_argument("--fresh", action="store_true", help="discard earlier results of this run")
    r.add_argument("--from", dest="from_step", metavar="STEP",
                   help="re-run from this step on (baseline, plan, qat, export, finn, simulate, report)")
    r.set_defaults(fn=cmd_run)

    e = sub.add_parser("estimate", help="FINN build + per-layer estimates of any QONNX file")
    e.add_argument("model", help="QONNX .onnx file")
    e.add_argument("--board", default="pynq-z1", help="pynq-z1, zcu104, kv260 or u250")
    e.add_argument("--target-fps", type=float, default=100_000, help="folding target (frames/s)")
    e.add_argument("--clock-mhz", type=float, default=None, help="default: the board's clock")
    e.add_argument("--fifo-depth", type=int, default=DEFAULT_FIFO_DEPTH,
                   help=f"words per FIFO between layers (default {DEFAULT_FIFO_DEPTH}; FINN's "
                        "shallow FIFOs are 2)")
    e.add_argument("--input-dtype", default=None,
                   help="integer type of the input if the file does not annotate it, e.g. UINT8")
    e.add_argument("--out", default="build/out", help="output root (default build/out)")
    e.set_defaults(fn=cmd_estimate)

    s = sub.add_parser("simulate", help="(re-)run the RTL simulation of a run's FINN build")
    s.add_argument("run", help="run folder, e.g. build/out/digits")
    s.add_argument("--frames", type=int, default=None, help="test frames (default: the recipe's)")
    s.add_argument("--backpressure", type=float, default=None,
                   help="probability that the output is not ready in a cycle, 0..1")
    s.set_defaults(fn=cmd_simulate)

    c = sub.add_parser("compare", help="compare finished runs: accuracy, Mb, performance density")
    c.add_argument("runs", nargs="+", help="run folders, e.g. build/out/digits build/out/digits_aqp")
    c.add_argument("--out", default="build/out/compare", help="folder for comparison.csv/.png")
    c.set_defaults(fn=cmd_compare)

    i = sub.add_parser("importance", help="layer/channel importance of a run; rank agreement")
    i.add_argument("run", help="run folder, e.g. build/out/digits")
    i.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="Kendall tau and Levenshtein distance between two measures: combined, "
                        "quant, hessian, prune, data_free (per layer) or act_l1, act_l1_val, "
                        "weight_l1 (per channel; act_l1_val is a second calibration batch)")
    i.set_defaults(fn=cmd_importance)

    b = sub.add_parser("boards", help="list the board catalogue")
    b.set_defaults(fn=cmd_boards)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("matplotlib", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")  # brevitas, at import
    try:
        args.fn(args)
    except (DensiflowError, HardwareError) as err:
        console.print(f"[bold red]error:[/] {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
