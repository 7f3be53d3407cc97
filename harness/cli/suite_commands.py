"""`harness plan`, `harness run`, `harness status`: the commands that take a suite to train.

Only the options live here (their help text is the commands' documentation); each command
imports the app module that does its work when it runs, so `harness plan` never loads torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import DataOption, OnlyOption, ResultsOption, SetOption, SuiteArg


def plan(
    suite: SuiteArg,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    only: OnlyOption = None,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Per cell: images, steps and device-seconds from the `harness bench` rows of "
            "a device (step time per batch size), and the total for --per-device K workers.",
            rich_help_panel="Estimate",
        ),
    ] = False,
    bench: Annotated[
        Path | None,
        typer.Option(
            help="Folder of bench rows (default: runs/bench, your own `harness bench` rows, if "
            "it holds any, else the project's results/bench).",
            rich_help_panel="Estimate",
        ),
    ] = None,
    device_name: Annotated[
        str | None,
        typer.Option(
            help="The device whose rows to use (part of its name, e.g. H200).",
            rich_help_panel="Estimate",
        ),
    ] = None,
    per_device: Annotated[
        int, typer.Option(help="Workers sharing the device.", rich_help_panel="Estimate")
    ] = 1,
) -> None:
    """Every cell's schedule (lr, batch, momentum, noise scale per phase) and update count."""
    from harness.app import plan as plan_module
    from harness.config.suite import load_suite, select_some

    loaded = load_suite(suite, overrides=overrides or ())
    cells = select_some(loaded, only)
    if estimate:
        from harness.app.estimate import print_estimate

        print_estimate(cells, bench, device_name, per_device)
        return
    if as_json:
        print(json.dumps(plan_module.plan_json(loaded, cells), indent=2))
    else:
        plan_module.print_plan(loaded, cells)


def run(
    suite: SuiteArg,
    overrides: SetOption = None,
    results: ResultsOption = None,
    only: OnlyOption = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: cuda if available).")
    ] = None,
    data: DataOption = None,
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
    per_device: Annotated[
        int | None,
        typer.Option(
            help="K workers on each device of --devices/--workers (several cells on one GPU at "
            "once, each capped at 1/K of its memory): for launch-bound, small-batch cells.",
            rich_help_panel="Scale out",
        ),
    ] = None,
    order: Annotated[
        str,
        typer.Option(
            help="Which cells are claimed first: suite (as listed), most-updates (the long "
            "cells first: shortest wall clock for K workers) or fewest-updates.",
        ),
    ] = "suite",
    memory_fraction: Annotated[
        float | None,
        typer.Option(
            help="CUDA: cap this process at this share of the GPU's memory (0-1]; "
            "--per-device sets it for each worker.",
            rich_help_panel="Scale out",
        ),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            help="Stream each cell's curves while it trains to tensorboard (RESULTS/logs/tb/), "
            "wandb (offline, RESULTS/logs/wandb/) or mlflow (RESULTS/logs/mlruns/, or "
            "$MLFLOW_TRACKING_URI); repeatable; adds to the suite's tracking.track. Each is "
            "an extra: pip install 'batchsize-harness[tensorboard]'.",
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
    from harness.app.launch import run_command

    code = run_command(
        suite,
        overrides,
        results,
        only,
        device=device,
        data=data,
        force=force,
        max_micro_batch=max_micro_batch,
        compile_model=compile_model,
        stop_after=stop_after,
        devices=devices,
        workers=workers,
        executor=executor,
        cluster_flags={
            "partition": partition,
            "time_min": time_min,
            "gpus_per_job": gpus_per_job,
            "array_parallelism": array_parallelism,
        },
        wait=wait,
        order=order,
        per_device=per_device,
        memory_fraction=memory_fraction,
        track=tuple(track or ()),
    )
    if code:
        raise typer.Exit(code)


def status(
    suite: SuiteArg,
    overrides: SetOption = None,
    results: ResultsOption = None,
    only: OnlyOption = None,
) -> None:
    """Each cell of SUITE: pending, queued, running, paused, done, diverged or failed."""
    from harness.app.status import print_status

    print_status(suite, overrides or (), results, only)
