"""`harness run`: one process trains a suite, or the suite is scaled out to workers or a cluster.

What the command does once its options are parsed: the line on rows of other recipes in the
results folder, then either `app.runner.run_suite` here (under torchrun, rank 0 alone speaks)
or `app.fanout` / `app.cluster`, and the exit status of the whole (0 done, 1 a cell failed,
3 paused with checkpoints kept).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from harness.app import cluster, fanout
from harness.app.recipe_notice import stale_recipes_line
from harness.app.runner import check_stop_after, order_cells, run_suite
from harness.app.runopts import RunOptions
from harness.app.tracking import TrackedConsole, suite_trackers
from harness.config.suite import Suite, load_suite
from harness.errors import EXIT_PAUSED, UserError, printable
from harness.results.paths import default_folder
from harness.train.preempt import ignore_stop_signals
from harness.train.replica import launch_env, launched_by_torchrun, shutdown


def run_command(
    suite: Path,
    overrides: list[str] | None,
    results: Path | None,
    only: str | None,
    *,
    device: str | None,
    data: Path | None,
    force: bool,
    max_micro_batch: int | None,
    compile_model: bool | None,
    stop_after: float | None,
    devices: str | None,
    workers: int | None,
    executor: str | None,
    cluster_flags: dict[str, int | str | None],
    wait: bool,
    order: str = "suite",
    per_device: int | None = None,
    memory_fraction: float | None = None,
    track: tuple[str, ...] = (),
) -> int:
    """`harness run`: the exit status. `track`: --track's trackers (app.tracking)."""
    fanout.as_worker()  # a `--workers` parent's worker pauses if the parent dies
    check_stop_after(stop_after)  # here too: a fan-out's workers would each refuse it
    order_cells((), order)  # a bad --order, before anything starts
    loaded = load_suite(suite, overrides=overrides or ())
    trackers = suite_trackers(loaded, track)  # a missing extra: one line, before any work
    folder = results or default_folder(loaded.name)
    if launch_env().rank == 0:
        line = stale_recipes_line(loaded, folder)
        if line:
            print(printable(line), file=sys.stderr)  # names from the folder's rows
    fanning = executor is not None or devices is not None or workers is not None
    if per_device is not None and not fanning:
        raise UserError("--per-device K: give --devices (or --workers) to put K workers on each")
    if fanning:
        if memory_fraction is not None:
            raise UserError(
                "--memory-fraction with --devices/--workers: each worker sharing a GPU gets "
                "1/K of it (--per-device K); drop --memory-fraction"
            )
        return scale_out(
            loaded,
            tuple(overrides or ()),
            folder,
            executor=executor,
            devices=devices,
            workers=workers,
            cluster_flags=cluster_flags,
            options=RunOptions(
                suite=suite,
                results=folder,
                overrides=tuple(overrides or ()),
                only=only,
                data=data,
                max_micro_batch=max_micro_batch,
                compile_model=compile_model,
                stop_after=stop_after,
                order=order,
                track=tuple(track),
            ),
            per_device=per_device,
            only=only,
            wait=wait,
            device=device,
            force=force,
        )
    console = None
    if trackers and launch_env().rank == 0:  # under torchrun, rank 0 alone writes
        project = loaded.spec.tracking.project or loaded.name
        console = TrackedConsole(trackers, project, folder)
    try:
        summary = run_suite(
            loaded,
            results=folder,
            only=only,
            device=device,
            data=data,
            force=force,
            max_micro_batch=max_micro_batch,
            compile_model=compile_model,
            stop_after=stop_after,
            keep_signals=True,  # a signal after the last cell must not kill the exit
            order=order,
            memory_fraction=memory_fraction,
            console=console,
        )
    finally:
        if console is not None:
            console.close()  # a paused cell's tracker runs, left resumable
        shutdown()
    ignore_stop_signals()  # recorded in the summary already; none may kill the exit now
    if launch_env().rank == 0:  # under torchrun, rank 0 speaks for the job
        print(f"{loaded.name}: {summary.line()}", file=sys.stderr)
        if summary.signal is None and not summary.paused and (summary.ran or summary.skipped):
            print(f"next: {shlex.join(['harness', 'report', str(folder)])}", file=sys.stderr)
    if summary.failed:
        return 1
    if summary.signal is not None:
        return EXIT_PAUSED  # checkpointed: a rerun resumes
    return 0


def scale_out(
    loaded: Suite,
    overrides: tuple[str, ...],
    results: Path,
    *,
    executor: str | None,
    devices: str | None,
    workers: int | None,
    cluster_flags: dict[str, int | str | None],
    options: RunOptions,
    only: str | None,
    wait: bool,
    device: str | None,
    force: bool,
    per_device: int | None = None,
) -> int:
    """--executor, --devices, --workers: the exit status of the whole suite."""
    if launched_by_torchrun():
        raise UserError("--executor/--devices/--workers: not under torchrun; run them directly")
    if force:
        raise UserError(
            "--force with --executor/--devices/--workers: workers would retrain each other's "
            f"cells; delete the cells' rows ({results}/runs/<cell>.parquet) instead"
        )
    if device is not None:
        raise UserError("--device with --devices/--workers/--executor: name devices in --devices")
    if executor is not None:
        if devices is not None or workers is not None or per_device is not None:
            raise UserError(
                "--executor with --devices/--workers/--per-device: give one way to scale out"
            )
        settings = cluster.cluster_settings(loaded, cluster_flags)
        return cluster.submit(
            loaded,
            overrides,
            executor_kind=executor,
            settings=settings,
            results=results,
            only=only,
            options=options,
            wait=wait,
        )
    names = fanout.worker_devices(devices, workers, per_device)
    return fanout.run_workers(loaded, options.to_argv(), names, results, only)
