"""`harness run`: every cell of a suite, skipping finished ones, resuming killed ones.

A cell is finished when its run row exists with status ok or diverged. A cell's failure is
the cell's, never the suite's: any error inside a cell (out of memory, an unreadable
checkpoint, a bug) becomes a `failed` row with a one-line message, the suite goes on, and the
next run tries the cell again from its checkpoint. Errors that concern the whole run (a
results folder that cannot be written) are found before the data loads.

Several runners may share one results folder (a job array, or two GPUs of one host): each
claims a cell with a lock before training it and passes over cells another live runner
holds, so no cell is trained twice at once.

Under torchrun (data parallelism, harness.train.replica) the processes go through the cells
together: rank 0 alone scans, claims, prints and writes, and broadcasts each decision (train,
skip, busy) so that every process trains the same cell at the same time.

The loop leans on four neighbours: `device_policy` (which device, how much of it),
`data_loading` (the suite's data for a group of cells), `user_models` (a suite's own models
checked before training) and `cell_rows` (a cell's rows, a failure's row and log).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.app import jobs
from harness.app.cell_rows import NO_METRICS, failed_record, failure_line, write_rows
from harness.app.console import RunConsole
from harness.app.data_loading import data_groups, load_data
from harness.app.device_policy import check_memory_fraction, place_run
from harness.app.duration import long_suite_line
from harness.app.user_models import check_factories
from harness.config.suite import Cell, Suite, select_some
from harness.core.epoch_record import EpochRecord
from harness.core.execution import Execution
from harness.core.schedule import updates_per_epoch
from harness.data.source import DataSource
from harness.errors import UserError
from harness.fsio import check_folders, remove, shown
from harness.results import lock, paths, store
from harness.results.paths import default_folder
from harness.results.provenance import environment
from harness.train.checkpoint import Progress
from harness.train.loop import train_cell
from harness.train.preempt import StopSignals, StopVote
from harness.train.replica import Replica

FINISHED = ("ok", "diverged")  # statuses a re-run skips; a failed cell is tried again


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # claimed by another runner
    paused: list[str] = field(default_factory=list)  # --stop-after: checkpointed, not finished
    not_started: list[str] = field(default_factory=list)  # --stop-after: the time was up
    signal: str | None = None  # SIGTERM, SIGUSR1 or SIGUSR2 paused the run (preempt)

    def line(self) -> str:
        parts = [f"{len(self.ran)} trained", f"{len(self.skipped)} already finished"]
        if self.paused or self.not_started:
            why = "--stop-after" if self.signal is None else self.signal
            parts.append(
                f"{len(self.paused)} paused and {len(self.not_started)} not started "
                f"({why}; rerun to continue)"
            )
        if self.busy:
            parts.append(f"{len(self.busy)} busy in another runner")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (rerun to retry them)")
        return ", ".join(parts)


CELL_ORDERS = ("suite", "most-updates", "fewest-updates")


def order_cells(cells: tuple[Cell, ...], order: str) -> tuple[Cell, ...]:
    """The cells in the order a runner claims them (--order).

    "suite": as the suite lists them. "most-updates": the cells with the most optimizer steps
    first, the longest-processing-time rule: when K workers share the cells (--devices,
    --per-device), the long, launch-bound cells start at once instead of last, and the run's
    wall clock is the longest cell's, not the sum of a queue. "fewest-updates": the most
    finished cells per minute on one worker. Ties keep the suite's order.
    """
    if order not in CELL_ORDERS:
        raise UserError(f"--order {order}: choose one of {', '.join(CELL_ORDERS)}")
    if order == "suite":
        return cells
    sign = -1 if order == "most-updates" else 1
    return tuple(sorted(cells, key=lambda c: sign * c.plan.updates))


def check_stop_after(seconds: float | None) -> None:
    """--stop-after must be a finite, non-negative number of seconds (nan, inf, -1 refused)."""
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(
            f"--stop-after {seconds}: must be a finite number of seconds, 0 or more "
            "(e.g. --stop-after 3600 pauses each cell at the epoch boundary before an hour)"
        )


def _check_writable(results: Path) -> None:
    """Fail before any data loads if rows could not be written (a whole-run error), or if a
    subfolder the rows go to is a link (harness.fsio: nothing is written through one)."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=results, prefix=".harness-probe-"):
            pass
        check_folders(results, paths.SUBFOLDERS)
    except OSError as exc:
        raise UserError(
            f"{results}: the results folder is not writable ({exc.strerror or exc}); "
            "pass --results DIR with a folder you can write"
        ) from None


def _finished(results: Path, say: RunConsole) -> set[str]:
    """Cells with a finished run row. A damaged run file is moved aside (never deleted), so
    its cell counts as not finished and trains again."""
    if not results.is_dir():
        return set()
    check_folders(results, paths.SUBFOLDERS)  # a linked runs/: nothing in it is moved aside
    runs, skipped = store.scan_runs(results)
    for path, reason in skipped:
        aside = store.quarantine(path)
        say.line(
            f"warning: {shown(path)}: unreadable ({reason}); moved to {shown(aside.name)}, "
            "will retrain"
        )
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"].isin(FINISHED), "cell_id"])


def run_suite(
    suite: Suite,
    *,
    results: Path | None = None,
    only: str | None = None,
    device: str | None = None,
    data: Path | None = None,
    force: bool = False,
    max_micro_batch: int | None = None,
    compile_model: bool | None = None,
    stop_after: float | None = None,
    console: RunConsole | None = None,
    keep_signals: bool = False,
    order: str = "suite",
    memory_fraction: float | None = None,
) -> RunSummary:
    """Train the selected cells of `suite` into `results` (default `results.paths.default_folder`).

    `stop_after` (seconds from now): each cell pauses at the last epoch boundary that fits
    (after at least one epoch); no cell but the first starts once the time is up. A paused
    cell writes no rows: its checkpoint holds its finished epochs; the next run resumes it.
    `console`: what the run says, and hears after every epoch (default: a `RunConsole` on
    stderr, quiet on data-parallel ranks but 0). `keep_signals`: the process ends after this
    call (the CLI), so SIGTERM/SIGUSR1/SIGUSR2 stay caught after the cells are done.
    `order`: which cell is claimed first (`order_cells`). `memory_fraction`: a cap on this
    process's share of the GPU's memory (`check_memory_fraction`).
    """
    check_stop_after(stop_after)
    deadline = None if stop_after is None else time.monotonic() + stop_after
    results = results or default_folder(suite.name)
    cells = order_cells(select_some(suite, only), order)
    execution = jobs.execution(suite.spec.execution, cells, max_micro_batch, compile_model)
    torch_device, replica = place_run(device, suite, cells)  # before anything is read
    check_memory_fraction(memory_fraction, torch_device)
    main = replica is None or replica.is_main
    say = RunConsole(quiet=not main) if console is None else console
    done = set() if force or not main else _finished(results, say)
    summary = RunSummary()
    for cell in cells:
        if cell.cell_id in done:
            say.line(f"skip  {cell.cell_id} {cell.label}: finished (rerun with --force)")
    if replica is None and all(c.cell_id in done for c in cells):
        summary.skipped = [c.cell_id for c in cells]
        return summary
    models = check_factories(suite, cells, say if main else None)
    if main:
        _check_writable(results)
    env = {**environment(torch_device), "models": models}
    env.update(world_size=1, devices=str(torch_device))
    if replica is not None:
        env.update(world_size=replica.world, devices=replica.devices())
    todo = [c for c in cells if c.cell_id not in done]
    say.plan_suite(todo)
    if main:  # days of training ahead: one line before the first cell, then on
        long_line = long_suite_line(todo, torch_device, str(env["device_name"]))
        if long_line:
            say.line(long_line)
    with StopSignals().installed(keep=keep_signals) as signals:
        vote = StopVote(signals, replica)
        for group in data_groups(suite, cells):
            if replica is None and all(c.cell_id in done for c in group):
                continue  # nothing of this crop size to train: its images are not read
            dataset, source = load_data(suite, data, torch_device, execution.channels_last, group)
            _run_cells(
                group,
                results,
                dataset,
                execution,
                {**env, "data_source": source},
                force,
                say,
                summary,
                deadline,
                replica,
                done,
                vote,
            )
    if (signals.requested or vote.stopped) and (summary.paused or summary.not_started):
        summary.signal = signals.name if signals.requested else "a signal to another process"
    return summary


def _ticking(vote: StopVote | None, say: RunConsole) -> Callable[[], bool] | None:
    """The stop vote, asked after every step, telling a live console of the step first; the
    vote itself where nothing is drawn (a log: no per-step cost)."""
    if vote is None or not say.live:
        return vote

    def stop() -> bool:
        say.tick()
        return bool(vote())

    return stop


def _run_cells(
    cells: tuple[Cell, ...],
    results: Path,
    dataset: DataSource,
    execution: Execution,
    env: dict[str, Any],
    force: bool,
    say: RunConsole,
    summary: RunSummary,
    deadline: float | None,
    replica: Replica | None,
    done: set[str],
    vote: StopVote,
) -> None:
    main = replica is None or replica.is_main
    started = False
    for cell in cells:
        with contextlib.ExitStack() as held:
            # Rank 0 decides (and holds the claim while every process trains); all follow it.
            refused = None
            decision = 0
            if main:
                try:
                    decision = _turn_of(cell, results, done, force, started, deadline, held, vote)
                except (UserError, OSError) as exc:  # a planted link, a folder named .lock
                    refused, decision = " ".join(str(exc).split()), _REFUSED
            if replica is not None:
                decision = replica.broadcast_int(decision)
            if decision == _REFUSED:
                # The cell's failure, not the suite's: its row says why, the others go on.
                if main:
                    _record_failure(cell, results, env, say, summary, refused or "refused")
                else:
                    summary.failed.append(cell.cell_id)
            elif decision == _SKIP:
                summary.skipped.append(cell.cell_id)
            elif decision == _LATE:
                summary.not_started.append(cell.cell_id)
            elif decision == _BUSY:
                summary.busy.append(cell.cell_id)
                who = lock.holder(results, cell.cell_id) or "another runner"
                say.line(f"busy  {cell.cell_id} {cell.label}: {who} is training it")
            else:
                started = True
                _run_cell(
                    cell,
                    results,
                    dataset,
                    execution,
                    env,
                    force,
                    say,
                    summary,
                    deadline,
                    replica,
                    vote,
                )


_TRAIN, _SKIP, _LATE, _BUSY, _REFUSED = 1, 2, 3, 4, 5


def _record_failure(
    cell: Cell, results: Path, env: dict[str, Any], say: RunConsole, summary: RunSummary, why: str
) -> None:
    """A cell that could not even be claimed (its lock file is a link, a folder, a device):
    a failed run row saying why, as for any failed cell."""
    write_rows(cell, results, failed_record(cell, env, why), [])
    summary.failed.append(cell.cell_id)
    say.line(f"fail  {cell.cell_id} {cell.label}: {why}")


def _turn_of(
    cell: Cell,
    results: Path,
    done: set[str],
    force: bool,
    started: bool,
    deadline: float | None,
    held: contextlib.ExitStack,
    vote: StopVote | None = None,
) -> int:
    """Whether this runner trains `cell` now; on _TRAIN its claim is held by `held`."""
    if cell.cell_id in done:
        return _SKIP
    if vote is not None and (vote.stopped or vote.signals.requested):
        return _LATE  # a signal asked the run to stop: no cell starts after it
    # The first cell always starts (and trains at least one epoch): a run makes progress.
    if started and deadline is not None and time.monotonic() >= deadline:
        return _LATE
    # Concurrent runners on one folder (a job array, say) each take the cells nobody holds.
    if not held.enter_context(lock.claim(results, cell.cell_id)):
        return _BUSY
    # The claim is held: any temporary file of this cell is a dead writer's (see the function).
    for path in store.stale_temporaries(results, cell.cell_id):
        remove(path, inside=results)
    if not force and store.cell_status(results, cell.cell_id) in FINISHED:
        return _SKIP  # finished by another runner meanwhile
    return _TRAIN


def _run_cell(
    cell: Cell,
    results: Path,
    dataset: DataSource,
    execution: Execution,
    env: dict[str, Any],
    force: bool,
    say: RunConsole,
    summary: RunSummary,
    deadline: float | None = None,
    replica: Replica | None = None,
    vote: StopVote | None = None,
) -> None:
    main = replica is None or replica.is_main
    checkpoint = paths.checkpoint_path(results, cell.cell_id)
    if force and main:
        remove(checkpoint, inside=results)
    if replica is not None:
        replica.barrier()  # every process sees the checkpoint (or its absence) alike
    say.start(cell, resumed=checkpoint.exists())
    curves: list[EpochRecord] = []
    try:
        result = train_cell(
            jobs.train_job(cell),
            dataset,
            execution,
            checkpoint,
            on_epoch=say.epoch,
            deadline=deadline,
            replica=replica,
            stop=_ticking(vote, say),
        )
        progress, final, peak = result.progress, result.final, result.peak_memory_bytes
        curves = progress.curves
    except Exception as exc:  # a cell's failure is the cell's: recorded, and the suite goes on
        progress = Progress(status="failed", error=failure_line(cell, exc, results))
        final = dict.fromkeys(NO_METRICS, math.nan)
        peak = 0
    finally:
        say.stop()
    if not main:  # rank 0 writes; the others keep the outcome for their summary
        bucket = {"paused": summary.paused, "failed": summary.failed}
        bucket.get(progress.status, summary.ran).append(cell.cell_id)
        return
    if progress.status == "paused":
        summary.paused.append(cell.cell_id)
        why = "--stop-after"
        if vote is not None and vote.stopped:
            why = vote.signals.name if vote.signals.requested else "a signal"
        say.line(
            f"pause {cell.cell_id} {cell.label}: epoch {_where(progress, cell)} "
            f"checkpointed in {checkpoint} ({why}); rerun to resume"
        )
        return
    record = jobs.run_record(cell, progress, final, peak, env)
    record = write_rows(cell, results, record, jobs.curve_records(cell, curves))
    say.finished(cell, record)  # the rows are written: a tracker's summary (app.tracking)
    if record.status == "failed" and progress.status != "failed":
        progress.status, progress.error = "failed", record.error
    if progress.status == "failed":
        # The row says why; the checkpoint stays, and the next run resumes the cell.
        summary.failed.append(cell.cell_id)
        say.line(f"fail  {cell.cell_id} {cell.label}: {progress.error}")
        return
    remove(checkpoint, inside=results)
    summary.ran.append(cell.cell_id)
    say.line(_summary_line(cell, record.as_row()))
    if progress.error:  # an ok row's note: a checkpoint that did not fit the plan
        say.line(f"note  {cell.cell_id} {cell.label}: {progress.error}")


def _where(progress: Progress, cell: Cell) -> str:
    """How far a paused cell got: "2/3", or "2/3 + step 5 of 12" mid-epoch."""
    done = f"{progress.epoch}/{cell.plan.epochs}"
    if progress.partial is None:
        return done
    plan = cell.plan_after(progress.decisions)
    batch = plan.phase_at(progress.epoch).batch_size
    steps = updates_per_epoch(plan.train_size, batch, plan.drop_last)
    return f"{done} + step {progress.partial['step']} of {steps}"


def _summary_line(cell: Cell, row: dict[str, Any]) -> str:
    return (
        f"{row['status']:<5} {cell.cell_id} {cell.label}: "
        f"test acc {row['final_test_acc']:.4f}, train loss {row['final_train_loss']:.4f}, "
        f"{row['updates']} updates (plan {row['planned_updates']}), "
        f"{row['wall_clock_s']:.1f} s, {row['images_per_s']:.0f} img/s"
    )
