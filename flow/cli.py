"""`densiflow` command line: run, search, estimate, simulate, synth, deploy, hil, agent, importance,
compare, boards."""
from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message="fast_hadamard_transform")  # brevitas, at import

from rich.console import Console  # noqa: E402
from rich.logging import RichHandler  # noqa: E402
from rich.text import Text  # noqa: E402

from flow.core.errors import DensiflowError, FileSystemError  # noqa: E402
from flow.core.io import os_error_line  # noqa: E402
from hw_models.errors import HardwareError  # noqa: E402
from hw_models.rules import DEFAULT_FIFO_DEPTH, MAX_FIFO_DEPTH, MIN_FIFO_DEPTH  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 140)  # logs and CI get whole tables


def cmd_run(args: argparse.Namespace) -> None:
    from flow.pipeline import run_recipe
    from flow.recipe.config import load_recipe
    from flow.report.summary import print_summary, read_summary

    recipe = load_recipe(args.recipe)
    run_recipe(recipe, _out_root(args), fresh=args.fresh, from_step=args.from_step)
    run_dir = Path(args.out) / recipe.name
    print_summary(read_summary(run_dir), console)
    console.print(f"artefacts: {run_dir}", markup=False)


def cmd_estimate(args: argparse.Namespace) -> None:
    from flow.finn import InputDtypeError, estimate_qonnx
    from flow.sim.synth import synth_cache
    from hw_models.cache import usable_cache_dir

    work = _out_root(args) / "estimate" / Path(args.model).stem
    if args.synth:  # before the FINN build, not after it
        usable_cache_dir(synth_cache(Path(args.out)), "DENSIFLOW_SYNTH_CACHE")
    try:
        build = estimate_qonnx(args.model, args.board, args.target_fps, work,
                               input_dtype=args.input_dtype, clock_mhz=args.clock_mhz,
                               fifo_depth=args.fifo_depth, folding_method=args.folding)
    except InputDtypeError as err:
        raise DensiflowError(err.message("--input-dtype")) from None
    _print_estimate(build)
    console.print(f"estimate.json and intermediate models: {work}", markup=False)
    if args.synth:
        _synthesise(build, work / "synth", synth_cache(Path(args.out)))


def _synthesise(build, out: Path, cache: Path) -> None:
    from flow.core.progress import progress_bar
    from flow.sim.synth import summary_line, synthesise_build

    with progress_bar("Yosys") as update:
        result = synthesise_build(build, out, cache,
                                  progress=lambda node, done, total: update(done, total, node))
    console.print((out / "synth_vs_finn.txt").read_text(), markup=False, highlight=False)
    console.print(summary_line(result), markup=False, highlight=False)
    console.print(f"per node: {out / 'synth_nodes.txt'}", markup=False)


def cmd_synth(args: argparse.Namespace) -> None:
    run = _open_run(args.run, "finn")
    with run.folder.lock():
        _synthesise(run.finn_build(), run.dir / "synthesis", run.synth_cache)


def _open_run(path: str, step: str):
    """A Run over an existing run folder whose `step` has finished (else a clear error)."""
    from flow.core.errors import ConfigError, RunFolderError
    from flow.recipe.config import load_recipe
    from flow.run.folder import RunFolder
    from flow.run.run import Run

    folder = RunFolder.open(Path(path))
    try:
        recipe = load_recipe(folder.path / "recipe.yaml")
    except ConfigError as err:
        raise RunFolderError(f"{folder.path}: its saved recipe.yaml is unreadable ({err}); run "
                             "densiflow run with your recipe file to rewrite it") from None
    if recipe.name != folder.path.name:
        raise RunFolderError(f"{folder.path}: the folder of run '{recipe.name}' was renamed; name "
                             f"it {recipe.name} again")
    run = Run(recipe, folder)
    run.record(step)  # finished?
    return run


def cmd_simulate(args: argparse.Namespace) -> None:
    from flow.sim.simulate_check import check_simulation
    from flow.sim.simulations import simulate_again

    run = _open_run(args.run, "finn")
    with run.folder.lock():
        check_simulation(run, args.frames, args.backpressure)  # before any simulation work
        out, result = simulate_again(run, args.frames, args.backpressure)
    for line in result:
        console.print(line, markup=False, highlight=False)
    console.print(f"saved: {out}", markup=False)


def cmd_search(args: argparse.Namespace) -> None:
    from rich.progress import Progress

    from flow.recipe.config import load_recipe
    from flow.search import run_search

    out = _out_root(args)
    recipe = load_recipe(args.recipe)
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(event) -> None:
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(event.stage, total=event.total or None)
            bar.update(tasks[event.stage], completed=event.done, total=event.total or None,
                       description=f"{event.stage} {event.note}".strip())

        outcome = run_search(recipe, out, args.workers, args.storage, progress)
    point = outcome.chosen_point
    console.print(f"chosen plan: {point.plan_file}\nrun it: densiflow run {point.recipe_file}\n"
                  f"report: {outcome.report}", markup=False)


def cmd_deploy(args: argparse.Namespace) -> None:
    from flow.pipeline import run_recipe
    from flow.report.summary import read_summary, summary_lines

    run = _open_run(args.run, "finn")
    run_recipe(run.recipe, run.dir.parent, from_step="deploy")
    summary = read_summary(run.dir)
    for line in summary_lines(summary)[-1:]:
        console.print(line, markup=False, highlight=False)


def cmd_agent(args: argparse.Namespace) -> None:
    from flow.hil.serve import serve_run
    from flow.hil.wiring import deployment_folder, token_file

    run = _open_run(args.run, "deploy")

    def announce(host: str, port: int) -> None:
        console.print(f"serving {run.dir.name}'s RTL simulation on {host}:{port}; stop with "
                      f"Ctrl-C. Validate from another terminal: densiflow hil {run.dir} "
                      f"--target {host}:{port}", markup=False, soft_wrap=True)

    serve_run(run.dir, deployment_folder(run), token_file(run), args.bind, args.port, announce)
    console.print("agent stopped", markup=False)


def cmd_hil(args: argparse.Namespace) -> None:
    from rich.progress import Progress

    from flow.hil.types import HilOptions
    from flow.hil.wiring import check_bit_exact, token_file, verify_hil
    from flow.report.summary import add_hil

    run = _open_run(args.run, "deploy")
    options = HilOptions(batch_size=args.batch_size, timeout_s=args.timeout, fresh=args.fresh)
    token = Path(args.token_file) if args.token_file else token_file(run)
    # shared: `densiflow agent` may serve the run meanwhile; deploy and run are kept out
    with run.folder.lock(shared=True), Progress(console=console, transient=True) as bar:
        task = bar.add_task("HIL batches", total=None)

        def progress(event) -> None:
            bar.update(task, completed=event.frames_done, total=event.frames_total)

        result = verify_hil(run, args.target, token, options, progress)
        add_hil(run.dir, result)
    check_bit_exact(result)
    console.print(result.summary_line(), markup=False)


def cmd_compare(args: argparse.Namespace) -> None:
    from flow.report.compare import mixed, print_comparison, rows_of, unique_runs, write_comparison

    out = _out_root(args)
    rows = [row for path in unique_runs(args.runs) for row in rows_of(path)]
    for note in mixed(rows):
        console.print(Text("warning: ", style="yellow") + Text(note))
    print_comparison(rows, console)
    paths = write_comparison(rows, out)
    console.print(f"table: {paths['csv']}  plot: {paths['png']}", markup=False)


def cmd_importance(args: argparse.Namespace) -> None:
    from rich.table import Table

    from flow.importance import compare_measures
    from flow.importance.inspect import measure_scores, run_importance, same_kind, save_comparison

    run = _open_run(args.run, "baseline")
    with run.folder.lock():
        layer, channels = run_importance(run)
        console.print(layer.table())
        if not args.compare:
            return
        names = tuple(args.compare)
        a, b = (measure_scores(layer, channels, n) for n in names)
        same_kind(a, b, names)
        result = compare_measures(a, b)
        saved = save_comparison(run.dir, names, result)
    table = Table(title=f"rank agreement: {names[0]} vs {names[1]}")
    for col in ("scope", "n", "Kendall tau", "Levenshtein"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    scopes = ([("layers", result["layers"])] if result["layers"] else []) + list(
        result["per_layer"].items())
    for scope, r in scopes:
        table.add_row(scope, str(r["n"]), f"{r['tau']:.3f}", str(r["lev"]))
    console.print(table)
    console.print(f"saved: {saved}", markup=False)


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


def _print_estimate(build) -> None:
    from rich.table import Table

    table = Table(title=f"{build.source.label} on {build.board} ({build.part}) at "
                        f"{build.clock_mhz:g} MHz")
    for col in ("node", "impl", "PE", "SIMD", "LUT", "BRAM18", "URAM", "DSP", "cycles"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for r in build.layers:
        res = r.resources
        table.add_row(r.name, r.impl_style, str(r.pe or "-"), str(r.simd or "-"),
                      f"{res.lut:.0f}", f"{res.bram18:.0f}", f"{res.uram:.0f}", f"{res.dsp:.0f}",
                      str(r.cycles))
    console.print(table)
    for row in build.fit.rows:
        flag = "" if row.fits else "  OVER"
        console.print(f"{row.resource:>7}: {row.used:.0f} / {row.available} "
                      f"({100 * row.utilisation:.1f} %){flag}", markup=False)
    perf = build.performance
    console.print(f"throughput {perf.fps:,.0f} frames/s, latency {perf.latency_us:.2f} us, "
                  f"bottleneck {perf.bottleneck}", markup=False)
    for note in build.notes:
        console.print(Text("note: ", style="yellow") + Text(note))


# ----------------------------------------------------------------------------- arguments


def _checked(text: str, cast: type, ok: Callable[[Any], bool], allowed: str) -> Any:
    """`text` as `cast`, where `ok` accepts it; else an argparse error saying what is allowed."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give {allowed}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    return _checked(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    return _checked(text, int, lambda v: v >= 1, "an integer >= 1")


def probability(text: str) -> float:
    """A number in [0, 1) (argparse type)."""
    return _checked(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def fifo_depth(text: str) -> int:
    """A FIFO depth in words (argparse type)."""
    return _checked(text, int, lambda v: MIN_FIFO_DEPTH <= v <= MAX_FIFO_DEPTH,
                    f"{MIN_FIFO_DEPTH}..{MAX_FIFO_DEPTH} words")


def _add_run(sub) -> None:
    from flow.run.table import STEP_NAMES

    r = sub.add_parser("run", help="run a recipe: train, compress, export, FINN build, simulate, "
                                   "deploy, report (resumable)")
    r.add_argument("recipe", help="recipe YAML, e.g. build/digits.yaml")
    r.add_argument("--out", default="build/out", help="root of run folders (default build/out)")
    r.add_argument("--fresh", action="store_true",
                   help="redo every step (earlier results are replaced as new ones finish)")
    r.add_argument("--from", dest="from_step", metavar="STEP", choices=STEP_NAMES,
                   help=f"redo from this step on ({', '.join(STEP_NAMES)})")
    r.set_defaults(fn=cmd_run)


def _add_estimate(sub) -> None:
    e = sub.add_parser("estimate", help="FINN build + per-layer estimates of any QONNX file")
    e.add_argument("model", help="QONNX .onnx file")
    e.add_argument("--board", default="pynq-z1", help="pynq-z1, zcu104, kv260 or u250")
    e.add_argument("--target-fps", type=positive_float, default=100_000,
                   help="folding target (frames/s)")
    e.add_argument("--clock-mhz", type=positive_float, default=None,
                   help="default: the board's clock")
    e.add_argument("--fifo-depth", type=fifo_depth, default=DEFAULT_FIFO_DEPTH,
                   help=f"words per FIFO between layers (default {DEFAULT_FIFO_DEPTH}; FINN's "
                        "shallow FIFOs are 2)")
    e.add_argument("--folding", choices=("optimiser", "finn"), default="optimiser",
                   help="densiflow's folding optimiser (default) or FINN's SetFolding")
    e.add_argument("--synth", action="store_true",
                   help="also synthesise the generated RTL with Yosys (per node, cached)")
    e.add_argument("--input-dtype", default=None,
                   help="integer type of the input if the file does not annotate it, e.g. UINT8")
    e.add_argument("--out", default="build/out", help="output root (default build/out)")
    e.set_defaults(fn=cmd_estimate)


def _add_run_commands(sub) -> None:
    """Commands that work on a finished run folder."""
    s = sub.add_parser("simulate", help="simulate a run's FINN build again (other frames or "
                                        "backpressure) into RUN/simulations/")
    s.add_argument("run", help="run folder, e.g. build/out/digits")
    s.add_argument("--frames", type=positive_int, default=None,
                   help="test frames (default: the whole test split)")
    s.add_argument("--backpressure", type=probability, default=0.0,
                   help="probability that the output is not ready in a cycle, 0..1 (default 0)")
    s.set_defaults(fn=cmd_simulate)

    y = sub.add_parser("synth", help="Yosys synthesis of a run's FINN build, per node, next to "
                                     "FINN's estimate (into RUN/synthesis/)")
    y.add_argument("run", help="run folder, e.g. build/out/digits")
    y.set_defaults(fn=cmd_synth)

    d = sub.add_parser("deploy", help="make the run's deployment folder again (e.g. on a machine "
                                      "with Vivado, to build the bitstream)")
    d.add_argument("run", help="run folder, e.g. build/out/digits")
    d.set_defaults(fn=cmd_deploy)

    a = sub.add_parser("agent", help="serve the run's RTL simulation to `densiflow hil` "
                                     "(the board agent with its rtlsim backend, in the foreground)")
    a.add_argument("run", help="run folder, e.g. build/out/digits")
    a.add_argument("--port", type=positive_int, default=7531, help="TCP port (default 7531)")
    a.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    a.set_defaults(fn=cmd_agent)

    h = sub.add_parser("hil", help="hardware-in-the-loop validation of the whole test split "
                                   "against a board agent")
    h.add_argument("run", help="run folder, e.g. build/out/digits")
    h.add_argument("--target", required=True, help="HOST:PORT of the agent")
    h.add_argument("--token-file", default=None, help="shared token (default RUN/hil/token)")
    h.add_argument("--batch-size", type=positive_int, default=None,
                   help="frames per request (default: the agent's maximum)")
    h.add_argument("--timeout", type=positive_float, default=120.0,
                   help="seconds to wait for any answer (default 120)")
    h.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    h.set_defaults(fn=cmd_hil)

    i = sub.add_parser("importance", help="layer/channel importance of a run; rank agreement")
    i.add_argument("run", help="run folder, e.g. build/out/digits")
    i.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="Kendall tau and Levenshtein distance between two measures: combined, "
                        "quant, hessian, prune, data_free (per layer) or act_l1, act_l1_val, "
                        "weight_l1 (per channel; act_l1_val is a second calibration batch)")
    i.set_defaults(fn=cmd_importance)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="densiflow",
        description="Compress a PyTorch network by importance and deploy it through QONNX and "
                    "FINN, validated in a cycle-accurate RTL simulation.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    q = sub.add_parser("search", help="the hardware-aware co-design search of a recipe whose "
                                      "method is `search` (resumable)")
    q.add_argument("recipe", help="recipe YAML, e.g. build/digits_search.yaml")
    q.add_argument("--out", default="build/out", help="output root; the search lands in "
                                                     "OUT/search/NAME (default build/out)")
    q.add_argument("--workers", type=positive_int, default=1, help="trial processes (default 1)")
    q.add_argument("--storage", default=None,
                   help="shared Optuna storage for many machines: postgresql://user@host/db, "
                        "postgresql+psycopg://... or sqlite:///FILE, connected before anything "
                        "trains (default: a journal file in the search folder)")
    q.set_defaults(fn=cmd_search)
    _add_estimate(sub)
    _add_run_commands(sub)
    c = sub.add_parser("compare", help="compare finished runs: accuracy, Mbit, performance "
                                       "density, resources")
    c.add_argument("runs", nargs="+", help="run folders (e.g. build/out/digits) or search folders "
                                           "(build/out/search/NAME)")
    c.add_argument("--out", default="build/out/compare", help="folder for comparison.csv/.png")
    c.set_defaults(fn=cmd_compare)
    b = sub.add_parser("boards", help="list the board catalogue")
    b.set_defaults(fn=cmd_boards)
    return p


class _OwnMessages(logging.Filter):
    """The terminal shows densiflow's own log records; FINN's and QONNX's go to step logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith(("flow", "hw_models", "__main__"))


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, markup=False)
    handler.addFilter(_OwnMessages())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    for noisy in ("matplotlib", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _out_root(args: argparse.Namespace) -> Path:
    """--out, refused (one line) where it lies inside a run folder."""
    from flow.run.folder import check_output_root

    check_output_root(Path(args.out))
    return Path(args.out)


def _error(message: str, status: int) -> int:
    """Print one error line; the exit status."""
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    return status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging(args.verbose)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up as Ctrl-C does
    try:
        args.fn(args)
    except FileSystemError as err:  # the machine refused: full disk, read-only, permissions
        return _error(str(err), 1)
    except (DensiflowError, HardwareError) as err:
        return _error(str(err), 2)
    except OSError as err:  # last resort: a refusal deep inside a tool (FINN, Verilator, ...)
        return _error(os_error_line(err), 1)
    except KeyboardInterrupt:
        console.print(Text("interrupted; run the same command again to resume", style="yellow"))
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
