"""The `harness` command line: plan, run, report, check, fingerprint, convert, bench, data.

Each command is a thin shell over one module. A `UserError` anywhere becomes one line on
stderr and exit status 2; torch and matplotlib are imported only by the commands that need them,
so `harness plan` answers at once. Over 400 lines because each command's options, with their
help text, are its documentation; the logic behind every command lives in harness.app or
harness.analysis, and this file holds none.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from harness.errors import UserError, show_user_error

if TYPE_CHECKING:
    from harness.config.suite import Suite

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Test 'Don't Decay the Learning Rate, Increase the Batch Size' on your hardware.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch datasets.")
app.add_typer(data_app, name="data")

SuiteArg = Annotated[Path, typer.Argument(help="A suite YAML file, e.g. suites/cifar.yaml.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a suite value by its dotted path, e.g. --set training.weight_decay=0 "
        "or --set 'experiments.0.seeds=[0,1,2]' (repeatable; VALUE is read as YAML).",
    ),
]

OnlyOption = Annotated[
    str | None, typer.Option(help="Only cells whose id or label matches (glob or substring).")
]
ResultsOption = Annotated[
    Path | None,
    typer.Option(
        help="The suite's results folder: runs/ and curves/ go in it (default: results/<suite>)."
    ),
]


@app.command()
def plan(
    suite: SuiteArg,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    only: OnlyOption = None,
) -> None:
    """Every cell's schedule (lr, batch, momentum, noise scale per phase) and update count."""
    from harness.app import plan as plan_module
    from harness.config.suite import load_suite, select_some

    loaded = load_suite(suite, overrides=overrides or ())
    cells = select_some(loaded, only)
    if as_json:
        print(json.dumps(plan_module.plan_json(loaded, cells), indent=2))
    else:
        plan_module.print_plan(loaded, cells)


@app.command()
def run(
    suite: SuiteArg,
    overrides: SetOption = None,
    results: ResultsOption = None,
    only: OnlyOption = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: cuda if available).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder holding cifar-10-batches-py (or $HARNESS_DATA).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run cells that already have rows.")] = False,
    max_micro_batch: Annotated[
        int | None,
        typer.Option(help="Largest micro-batch in images (overrides the suite's execution)."),
    ] = None,
    compile_model: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.")
    ] = None,
    stop_after: Annotated[
        float | None,
        typer.Option(
            help="Seconds: after at least one epoch, pause each cell at the last epoch boundary "
            "that fits (checkpoint kept; a rerun resumes) and start no cell after it.",
        ),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="One worker per device, sharing out the cells, e.g. cuda:0,cuda:1,cuda:2.",
            rich_help_panel="Scale out",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="K workers: the first K GPUs, or K CPU workers without CUDA.",
            rich_help_panel="Scale out",
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            help="slurm: one job-array task per unfinished cell (submitit); local: the same "
            "as subprocesses here. Settings from the suite's cluster: block or the flags below.",
            rich_help_panel="Scale out",
        ),
    ] = None,
    partition: Annotated[str | None, typer.Option(rich_help_panel="Scale out")] = None,
    time_min: Annotated[
        int | None,
        typer.Option(help="Minutes per task (requeued after).", rich_help_panel="Scale out"),
    ] = None,
    gpus_per_job: Annotated[
        int | None,
        typer.Option(help=">1: each cell under torchrun.", rich_help_panel="Scale out"),
    ] = None,
    array_parallelism: Annotated[
        int | None,
        typer.Option(help="Tasks running at once.", rich_help_panel="Scale out"),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(help="With --executor: wait for every task.", rich_help_panel="Scale out"),
    ] = False,
) -> None:
    """Train every cell of SUITE and write its rows to Parquet; skips finished cells.

    Under torchrun (`torchrun --nproc_per_node=N -m harness run SUITE --only CELL`) each cell
    is trained data-parallel by the N processes.
    """
    from harness.app.runner import check_stop_after, run_suite
    from harness.config.suite import load_suite

    check_stop_after(stop_after)  # here too: a fan-out's workers would each refuse it
    loaded = load_suite(suite, overrides=overrides or ())
    folder = results or Path("results") / loaded.name
    if int(os.environ.get("RANK", "0")) == 0:
        from harness.app.recipes import stale_recipes_line

        line = stale_recipes_line(loaded, folder)
        if line:
            print(line, file=sys.stderr)
    if executor is not None or devices is not None or workers is not None:
        code = _scale_out(
            loaded,
            tuple(overrides or ()),
            folder,
            executor=executor,
            devices=devices,
            workers=workers,
            cluster_flags={
                "partition": partition,
                "time_min": time_min,
                "gpus_per_job": gpus_per_job,
                "array_parallelism": array_parallelism,
            },
            worker_args=_worker_args(
                suite, overrides, folder, only, data, max_micro_batch, compile_model, stop_after
            ),
            only=only,
            data=data,
            wait=wait,
            device=device,
            force=force,
        )
        raise typer.Exit(code)
    try:
        summary = run_suite(
            loaded,
            results=results,
            only=only,
            device=device,
            data=data,
            force=force,
            max_micro_batch=max_micro_batch,
            compile_model=compile_model,
            stop_after=stop_after,
        )
    finally:
        from harness.train.replica import shutdown

        shutdown()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for the job
        print(f"{loaded.name}: {summary.line()}", file=sys.stderr)
    if summary.failed:
        raise typer.Exit(1)
    if summary.signal is not None:
        from harness.errors import EXIT_PAUSED

        raise typer.Exit(EXIT_PAUSED)  # checkpointed: a rerun resumes


def _worker_args(
    suite: Path,
    overrides: list[str] | None,
    results: Path,
    only: str | None,
    data: Path | None,
    max_micro_batch: int | None,
    compile_model: bool | None,
    stop_after: float | None,
) -> list[str]:
    """The `harness run` options a fan-out worker gets (all but --device and the fan-out's)."""
    args = [str(suite), "--results", str(results)]
    for item in overrides or ():
        args += ["--set", item]
    for flag, value in (
        ("--only", only),
        ("--data", data),
        ("--max-micro-batch", max_micro_batch),
        ("--stop-after", stop_after),
    ):
        if value is not None:
            args += [flag, str(value)]
    if compile_model is not None:
        args.append("--compile" if compile_model else "--no-compile")
    return args


def _scale_out(
    loaded: Suite,
    overrides: tuple[str, ...],
    results: Path,
    *,
    executor: str | None,
    devices: str | None,
    workers: int | None,
    cluster_flags: dict[str, int | str | None],
    worker_args: list[str],
    only: str | None,
    data: Path | None,
    wait: bool,
    device: str | None,
    force: bool,
) -> int:
    """--executor, --devices, --workers: the exit status of the whole suite."""
    from harness.app import cluster, fanout
    from harness.train.replica import launched_by_torchrun

    if launched_by_torchrun():
        raise UserError("--executor/--devices/--workers: not under torchrun; run them directly")
    if force:
        raise UserError(
            "--force with --executor/--devices/--workers: workers would retrain each other's "
            "cells; delete the cells' rows (results/<suite>/runs/<cell>.parquet) instead"
        )
    if device is not None:
        raise UserError("--device with --devices/--workers/--executor: name devices in --devices")
    if executor is not None:
        if devices is not None or workers is not None:
            raise UserError("--executor with --devices/--workers: give one way to scale out")
        settings = cluster.cluster_settings(loaded, cluster_flags)
        return cluster.submit(
            loaded,
            overrides,
            executor_kind=executor,
            settings=settings,
            results=results,
            only=only,
            data=data,
            wait=wait,
        )
    names = fanout.worker_devices(devices, workers)
    return fanout.run_workers(loaded, worker_args, names, results, only)


@app.command()
def status(
    suite: SuiteArg,
    overrides: SetOption = None,
    results: ResultsOption = None,
    only: OnlyOption = None,
) -> None:
    """Each cell of SUITE: pending, queued, running, paused, done, diverged or failed."""
    from tabulate import tabulate

    from harness.app.status import suite_status, summary_line
    from harness.config.suite import load_suite, select_some

    loaded = load_suite(suite, overrides=overrides or ())
    cells = select_some(loaded, only)
    folder = results or Path("results") / loaded.name
    if not folder.is_dir():
        print(
            f"note: {folder}: no such results folder yet, so every cell is pending; "
            f"`harness run {suite} --results {folder}` writes it",
            file=sys.stderr,
        )
    states = suite_status(cells, folder)
    rows = [(s.cell_id, s.label, s.state, s.detail) for s in states]
    print(tabulate(rows, headers=["cell", "label", "state", "detail"], tablefmt="simple"))
    print(f"{loaded.name}: {summary_line(states)}")


FormatOption = Annotated[
    str, typer.Option("--format", help="markdown, github, latex, html or csv.")
]


@app.command()
def report(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Results folders (each what `run --results` wrote) or folders holding them "
            "(default: results/, every suite folder under it), or a suite YAML file: only the "
            "cells it defines now, from results/<suite name> unless folders are given too.",
        ),
    ] = None,
    overrides: SetOption = None,
    fmt: FormatOption = "markdown",
    out: Annotated[
        Path | None, typer.Option(help="Write the report to this file instead of stdout.")
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option(help="Write PNG figures here (default with --out: figures/ beside it)."),
    ] = None,
) -> None:
    """Tables beside the paper's accuracies and update counts, the equivalence table, figures.

    Seeds pool only within one recipe (the resolved configuration less the seed); rows of
    several recipes under one label are shown apart, with a warning. `harness report SUITE`
    shows only the cells the suite file defines now.
    """
    from harness.analysis.render import check_format
    from harness.analysis.report import build_report
    from harness.fsio import atomic_path, containing
    from harness.results.store import report_folders, suite_folders

    check_format(fmt)
    given = list(dirs or [])
    suites = [p for p in given if p.suffix in (".yaml", ".yml")]
    for path in suites:
        if not path.is_file():
            raise UserError(f"{path}: no such suite file; pass a suite YAML or a results folder")
    folders = [p for p in given if p not in suites]
    cells: set[str] | None = None
    if suites:
        from harness.config.suite import load_suite

        loaded = [load_suite(p, overrides=overrides or ()) for p in suites]
        cells = {c.cell_id for s in loaded for c in s.cells}
        folders = folders or [Path("results") / s.name for s in loaded]
    elif overrides:
        raise UserError(
            "--set: needs a suite file to apply to, e.g. harness report SUITE --set ..."
        )
    folders = report_folders(folders) if folders else suite_folders(Path("results"))
    if not folders:
        raise UserError(
            f"no results folders under {Path('results').resolve()}; `harness run SUITE` writes "
            "results/<suite>/, or pass a folder, e.g. `harness report results/smoke`"
        )
    if figures is None and out is not None and fmt != "csv":
        figures = out.parent / "figures"
    text = build_report(
        folders,
        fmt,
        figures_dir=figures,
        links_relative_to=out.parent if out else None,
        cells=cells,
        scope=", ".join(str(p) for p in suites) or None,
    )
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, inside=containing(out, folders)) as tmp:  # no link in a results folder
        tmp.write_text(text)
    print(f"wrote {out}" + (f" and figures in {figures}" if figures else ""), file=sys.stderr)


@app.command()
def check(
    suite: SuiteArg,
    baseline: Annotated[
        Path, typer.Option(help="Results folder holding the baseline rows, e.g. results/smoke.")
    ],
    results: Annotated[
        Path | None,
        typer.Option(
            help="Where to run the suite; finished rows there are reused "
            "(default: a fresh temporary folder)."
        ),
    ] = None,
    only: OnlyOption = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, mps.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder holding cifar-10-batches-py (or $HARNESS_DATA).")
    ] = None,
    overrides: SetOption = None,
    fmt: FormatOption = "github",
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Tier 2: run every experiment with these seeds (e.g. 0,1,2) and compare each "
            "schedule's mean with the baseline's, within the suite's check.seeds rule."
        ),
    ] = None,
) -> None:
    """CI gate: run SUITE and compare every cell with the baseline (exit 0 ok, 1 regressed).

    Tier 0 (what training applied: exact) and the per-cell tolerances always; tier 2 (means
    over seeds) with --seeds. Tier 1 is `harness fingerprint`. See docs/gate.md.
    """
    import tempfile

    import pandas as pd

    from harness.analysis.check import (
        compare,
        compare_applied,
        compare_seed_means,
        environment_warnings,
        labels_of,
        merge,
    )
    from harness.analysis.render import check_format
    from harness.app.runner import run_suite
    from harness.config.suite import load_suite, select_some
    from harness.results.store import read_curves, read_runs

    check_format(fmt)  # before training, not after
    overrides = list(overrides or ())
    if seeds is not None:
        overrides += _seed_overrides(suite, seeds, overrides)
    loaded = load_suite(suite, overrides=overrides)
    cells = select_some(loaded, only)  # the one --only rule, before the baseline is read
    if not baseline.is_dir():
        raise UserError(
            f"--baseline {baseline}: no such results folder; make one with "
            f"`harness run {suite} --results {baseline}`"
        )
    base_runs = read_runs(baseline)
    if base_runs.empty:
        raise UserError(
            f"--baseline {baseline}: holds no runs (no {baseline / 'runs'}/*.parquet); "
            f"make them with `harness run {suite} --results {baseline}`"
        )
    if results is not None and results.resolve() == baseline.resolve():
        raise UserError(
            "--results: must differ from --baseline, or the check compares a folder with itself"
        )
    ids = {c.cell_id for c in cells}
    with tempfile.TemporaryDirectory(prefix="harness-check-") as scratch:
        folder = results if results is not None else Path(scratch)
        run_suite(loaded, results=folder, only=only, device=device, data=data)
        current = read_runs(folder)
        current_curves = read_curves(folder)
    current = current[current["cell_id"].isin(ids)]
    if only is not None or seeds is not None:
        # The selected cells' rows, and rows of other recipes under their labels: those are
        # named as a changed recipe, not dropped unseen.
        names = {
            (c.experiment, c.optimizer_name, c.schedule_name, c.model_name, c.seed) for c in cells
        }
        keys = base_runs[["experiment", "optimizer", "schedule", "model", "seed"]]
        named = pd.Series(
            [tuple(k) in names for k in keys.itertuples(index=False)], index=keys.index
        )
        base_runs = base_runs[base_runs["cell_id"].isin(ids) | named]
    rule = loaded.spec.check
    labels = labels_of(current)
    regenerate = f"harness run {suite} --results {baseline} --force"
    tiers = [
        compare_applied(read_curves(baseline), current_curves, labels, regenerate),
        compare(base_runs, current, tolerances=rule.model_dump(exclude={"seeds"})),
    ]
    if seeds is not None:
        if rule.seeds is None:
            raise UserError(f"{suite}: --seeds needs a check.seeds block (k and std per schedule)")
        tiers.append(compare_seed_means(base_runs, current, rule.seeds.k, rule.seeds.std))
    for line in environment_warnings(base_runs, current):
        print(line)
    outcome = merge(tiers)
    print(outcome.table(fmt), end="")
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def fingerprint(
    update: Annotated[
        bool, typer.Option(help="Rewrite the fingerprint file(s) instead of checking them.")
    ] = False,
    dataset: Annotated[
        str, typer.Option(help="cifar10 (real data, what CI checks), synthetic, or all.")
    ] = "cifar10",
    file: Annotated[
        Path | None,
        typer.Option(help="Fingerprint JSON (default: results/fingerprint/<dataset>.json)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder holding cifar-10-batches-py (or $HARNESS_DATA).")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads for the run (the numbers must not depend on it).")
    ] = 1,
) -> None:
    """Tier 1 gate: train a tiny float64 cell and compare every step with a committed file.

    Exit 0 if it matches, 1 if anything moved (each difference one line, naming tier 0 or 1).
    An intended recipe change: `harness fingerprint --update --dataset all`; see docs/gate.md.
    """
    from harness.app import fingerprint as fp

    names = list(fp.DATASETS) if dataset == "all" else [dataset]
    if file is not None and len(names) > 1:
        raise UserError("--file: names one file; pass --dataset cifar10 or synthetic with it")
    failed = False
    for name in names:
        path = file or fp.default_file(name)
        expected = None if update else fp.read_fingerprint(path)
        actual = fp.run_fingerprint(name, data_root=data, threads=threads)
        if expected is None:
            fp.write_fingerprint(path, actual)
            print(f"wrote {path}; commit it with the change that moved it")
            continue
        verdict = fp.compare_fingerprint(expected, actual)
        for line in verdict.failures:
            print(f"FAILED: {path}: {line}")
        steps = len(actual["steps"]["loss"])
        print(f"{path}: {'ok' if verdict.ok else 'MOVED'} ({steps} steps compared)")
        failed |= not verdict.ok
    if failed:
        print(f"if the change is intended, regenerate with `{fp.UPDATE}` and commit the files")
        raise typer.Exit(1)


def _seed_overrides(suite: Path, seeds: str, overrides: list[str]) -> list[str]:
    """`--set experiments.N.seeds=[...]` for every experiment of the suite."""
    from harness.config.suite import load_suite

    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(
            f"--seeds {seeds}: expected integers separated by commas, e.g. 0,1,2"
        ) from None
    if not values:
        raise UserError(f"--seeds {seeds}: name at least one seed, e.g. 0,1,2")
    experiments = load_suite(suite, overrides=overrides).spec.experiments
    return [f"experiments.{i}.seeds={values}" for i in range(len(experiments))]


@app.command()
def convert(
    recipe: Annotated[
        Path | None, typer.Argument(help="A recipe YAML file (keys as the options, e.g. lr: 0.1).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of the recipe.")] = None,
    train_size: Annotated[int | None, typer.Option(help="Training examples per epoch (N).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="The recipe's batch size B.")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Initial lr per optimizer step (mean loss).")
    ] = None,
    momentum: Annotated[float | None, typer.Option(help="Momentum m (0 for plain SGD).")] = None,
    milestones: Annotated[
        str | None, typer.Option(help="Step schedule: epochs of the drops, e.g. 60,120,160.")
    ] = None,
    factor: Annotated[float | None, typer.Option(help="Step schedule: drop per milestone.")] = None,
    cosine: Annotated[
        bool | None, typer.Option("--cosine/--step", help="Cosine instead of step shape.")
    ] = None,
    warmup_epochs: Annotated[int | None, typer.Option(help="Linear warm-up epochs.")] = None,
    b_max: Annotated[int | None, typer.Option(help="Largest batch size allowed.")] = None,
    new_lr: Annotated[
        float | None, typer.Option(help="Raise the initial lr; B0 follows B ∝ lr.")
    ] = None,
    new_momentum: Annotated[
        float | None, typer.Option(help="Raise the momentum; B0 follows B ∝ 1/(1-m).")
    ] = None,
    batch_drops: Annotated[
        int | None, typer.Option(help="Hybrid: drops made by the batch (default 1).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write a suite YAML for `harness plan` / `run`.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="With --out: the suite's model (small_cnn, wrn = WRN-16-4, "
            "inception_resnet_v2, resnet50)."
        ),
    ] = None,
) -> None:
    """An lr recipe as decaying-lr, hybrid and increasing-batch schedules, side by side."""
    from harness.app.convert import (
        load_recipe_file,
        make_recipe,
        side_by_side,
        suite_name,
        suite_yaml,
        warnings_for,
    )
    from harness.fsio import atomic_path

    values = load_recipe_file(recipe) if recipe is not None else {}
    flags = {
        "epochs": epochs,
        "train_size": train_size,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "milestones": milestones,
        "factor": factor,
        "shape": None if cosine is None else ("cosine" if cosine else "step"),
        "warmup_epochs": warmup_epochs,
        "b_max": b_max,
        "new_lr": new_lr,
        "new_momentum": new_momentum,
        "batch_drops": batch_drops,
        "model": model,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    converted = make_recipe(values)
    text = suite_yaml(converted, suite_name(out)) if out is not None else None  # errors first
    sys.stdout.write(side_by_side(converted))
    for line in warnings_for(converted):
        print(f"warning: {line}", file=sys.stderr)
    if out is not None and text is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"wrote {out}; see it with `harness plan {out}`", file=sys.stderr)


@app.command()
def bench(
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, mps.")] = None,
    model: Annotated[str, typer.Option(help="wrn16_4 or small_cnn.")] = "wrn16_4",
    batch_sizes: Annotated[
        str, typer.Option(help="Images per optimizer step, comma-separated.")
    ] = "128,512,5120",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    compile_model: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile both models.")
    ] = False,
    steps: Annotated[int, typer.Option(help="Timed steps per repeat.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed repeats; the median is reported.")] = 3,
    out: Annotated[Path, typer.Option(help="Folder for the Parquet rows.")] = Path("results/bench"),
    data: Annotated[
        str, typer.Option(help="synthetic (no download) or cifar10 (real images).")
    ] = "cifar10",
    data_root: Annotated[
        Path | None, typer.Option(help="Folder holding cifar-10-batches-py (or $HARNESS_DATA).")
    ] = None,
    max_micro_batch: Annotated[
        int | None, typer.Option(help="Largest micro-batch of the harness step.")
    ] = None,
    ghost: Annotated[int, typer.Option(help="Ghost batch size.")] = 128,
    workers: Annotated[
        int | None, typer.Option(help="DataLoader workers of the reference (default: auto).")
    ] = None,
) -> None:
    """Images/s of the harness's training step beside a plain PyTorch loop (DataLoader,
    nn.BatchNorm2d, torch.optim.SGD) at each batch size; prints a table, writes Parquet."""
    from harness.app.bench import parse_batch_sizes, run_bench

    run_bench(
        device=device,
        model=model,
        batch_sizes=parse_batch_sizes(batch_sizes),
        precision=precision,
        compile_model=compile_model,
        steps=steps,
        repeats=repeats,
        out=out,
        data=data,
        data_root=data_root,
        max_micro_batch=max_micro_batch,
        ghost=ghost,
        workers=workers,
    )


@data_app.command("cifar10")
def data_cifar10(
    dest: Annotated[Path, typer.Argument(help="Folder to put cifar-10-batches-py in.")],
) -> None:
    """Download the official CIFAR-10 python tarball, check its md5 and unpack it."""
    from harness.data.download import download_cifar10

    folder = download_cifar10(dest)
    print(f"CIFAR-10 is in {folder}; pass --data {dest} or set HARNESS_DATA={dest}")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our own warnings (a damaged file skipped, say) as one line; others as Python shows them."""
    if category.__module__.startswith("harness"):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    warnings.showwarning = _show_warning
    try:
        app()
    except UserError as exc:
        show_user_error(exc)  # under torchrun, once (rank 0)
        sys.exit(2)
