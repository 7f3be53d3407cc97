"""`harness run SUITE --executor slurm|local`: one cluster task per unfinished cell, via submitit.

Every unfinished cell becomes one task of a job array (submitit's ``executor.batch()``; at most
``array_parallelism`` running at once). A task runs the ordinary single-cell path,
``harness run SUITE --only CELL``, in its own process: the same locks, checkpoints, rows and
failure handling as a run on a workstation. A task with ``gpus_per_job > 1`` runs that command
under ``torchrun --nproc_per_node=G`` (data parallelism, harness.train.replica).

Preemption and time limits: the task is a ``submitit.helpers.Checkpointable``; when Slurm
signals it (preemption, or ``slurm_signal_delay_s`` before the limit), submitit requeues the
same task. Slurm signals every process of the task: submitit's own catches SIGUSR2 (its
``--signal=USR2@90``) and ignores SIGTERM; the ``harness run`` it started catches both
(harness.train.preempt), finishes the step in progress, writes a mid-epoch checkpoint and exits
3; the requeued task resumes the cell at that step.

``--executor local`` uses submitit's LocalExecutor (subprocesses on this machine): what the
tests run, and a way to try a cluster setup without a cluster; it runs at most one task per
CPU (and ``array_parallelism``), each a lane of cells one after another with its share of
the threads, logs in ``<results>/slurm/logs/``. Where the tasks are goes to
``<results>/slurm/jobs.json`` (cell id → task id and log paths), which `harness status`
reads.

submitit pickles the task (a small frozen object: the run's options for its cell, paths,
overrides, cell id) into ``<results>/slurm/`` and the task process unpickles it: that folder is this
harness's own output, written by the user's own submission; never point it at files from
elsewhere. Results come back as Parquet rows, never through submitit's pickled results.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.app import status as status_module
from harness.app.console import RunConsole
from harness.app.runopts import RunOptions
from harness.config.schema import ClusterSpec
from harness.config.suite import Suite, select_some
from harness.errors import UserError
from harness.fsio import atomic_path
from harness.results import paths
from harness.results.paths import default_folder


@dataclass(frozen=True)
class CellTask:
    """One cell as a cluster task: `harness run SUITE --only CELL` in the task's process, with
    every option of the submitting `harness run` (`RunOptions.to_argv`)."""

    run: RunOptions  # for this cell: absolute paths, `only` the cell id
    gpus: int | None  # None: the task's machine decides (CUDA if it has one)

    @property
    def cell_id(self) -> str:
        return str(self.run.only)

    def command(self) -> list[str]:
        args = ["run", *self.run.to_argv()]
        if self.gpus is not None:
            args += ["--device", "cuda" if self.gpus > 0 else "cpu"]
        if self.gpus is not None and self.gpus > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            return [*launcher, f"--nproc_per_node={self.gpus}", "-m", "harness", *args]
        return [sys.executable, "-m", "harness", *args]

    def __call__(self) -> int:
        """Exit status of the cell's run: 0 trained (or already finished), 1 failed, 3 paused
        by a signal (checkpointed mid-epoch; the requeued task resumes it)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(self.command(), env=env)
        try:
            return proc.wait()
        except BaseException:
            # submitit's preemption handler requeues and exits from inside this wait; the run
            # got Slurm's signal too and is writing its checkpoint: let it finish (Slurm's
            # KillWait bounds the wait), never kill it mid-write as subprocess.run would.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit when Slurm preempts the task or its time is nearly up: requeue
        the same task, which resumes the cell from the checkpoint its run writes on the same
        signal (mid-epoch, after the step in progress)."""
        return _require_submitit().helpers.DelayedSubmission(self, *args, **kwargs)

    __submitit_checkpoint__ = checkpoint  # the name newer submitit releases look for


@dataclass(frozen=True)
class LocalLane:
    """Several cells one after another in one local task: `--executor local` runs at most
    one lane per CPU, each with its share of the threads (every cell at once on 2 cores ran
    4x slower than a plain run)."""

    tasks: tuple[CellTask, ...]
    threads: int

    def __call__(self) -> int:
        """1 if any of its cells failed (each later cell still runs), else 0."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        codes = [subprocess.run(t.command(), env=env, check=False).returncode for t in self.tasks]
        return max(codes, default=0)


def local_lanes(tasks: list[CellTask], parallelism: int, cpus: int) -> list[LocalLane]:
    """`tasks` dealt round-robin over min(parallelism, cpus, len(tasks)) lanes."""
    count = max(1, min(parallelism, cpus, len(tasks)))
    threads = max(1, cpus // count)
    return [LocalLane(tuple(tasks[i::count]), threads) for i in range(count)]


def _cpu_count() -> int:
    """The CPUs this process may use (affinity and cgroup cpusets), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _require_submitit() -> Any:
    """submitit, an optional extra (`pip install -e '.[slurm]'` in a clone), imported when used."""
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--executor needs submitit: pip install -e '.[slurm]' in the harness clone "
            "(or pip install submitit)"
        ) from None
    return submitit


def cluster_settings(suite: Suite, flags: dict[str, Any]) -> ClusterSpec:
    """The suite's `cluster:` block with the flags given on the command line on top."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:  # validated like the suite's block (model_copy(update=...) would not check bounds)
        return ClusterSpec.model_validate({**suite.spec.cluster.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "--" + str(error["loc"][0]).replace("_", "-")
        raise UserError(f"{name}: {error['msg']}") from None


def submit(
    suite: Suite,
    overrides: tuple[str, ...],
    *,
    executor_kind: str,
    settings: ClusterSpec,
    results: Path,
    only: str | None,
    options: RunOptions,
    wait: bool,
    poll_s: float = 2.0,
) -> int:
    """Submit every unfinished selected cell as one task of a job array; exit status.

    Without `wait`: 0 once submitted. With it: waits for every task, then 0 if every cell is
    done, 1 otherwise (`harness status` says which and where the logs are).
    """
    lib = _require_submitit()
    if executor_kind not in ("slurm", "local"):
        raise UserError(f"--executor {executor_kind}: use slurm or local")
    cells = select_some(suite, only)
    say = RunConsole()
    states = status_module.suite_status(cells, results)
    todo = [c for c, s in zip(cells, states) if s.state not in ("done", "diverged", "running")]
    if not todo:
        say.line(f"{suite.name}: nothing to submit ({status_module.summary_line(states)})")
        return 0
    # A model from the user's code is imported and built here, once, before anything is
    # queued: a bad one is this command's one-line error, not a failed row per task hours later.
    from harness.app.user_models import check_factories

    check_factories(suite, tuple(todo), say)
    folder = paths.slurm_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    # One flat log folder, no `%j` template: submitit's task processes make the template
    # folder literally (an empty `slurm/%j` was left behind) besides the filled-in ones.
    executor = lib.AutoExecutor(folder=paths.slurm_logs(results), cluster=executor_kind)
    params: dict[str, Any] = {
        "name": f"harness-{suite.name}",
        "timeout_min": settings.time_min,
        "tasks_per_node": 1,
        "nodes": 1,
        "cpus_per_task": settings.cpus_per_gpu * max(1, settings.gpus_per_job),
    }
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    if executor_kind == "slurm":
        params["gpus_per_node"] = settings.gpus_per_job
        params["slurm_array_parallelism"] = settings.array_parallelism
        for key in ("partition", "account", "qos"):
            if getattr(settings, key) is not None:
                params[f"slurm_{key}"] = getattr(settings, key)
        if settings.setup:
            params["slurm_setup"] = list(settings.setup)
    executor.update_parameters(**params)
    tasks = [
        CellTask(
            run=options.for_cell(cell.cell_id),
            gpus=settings.gpus_per_job if executor_kind == "slurm" else None,
        )
        for cell in todo
    ]
    submitted = []
    if executor_kind == "local":
        lanes = local_lanes(tasks, settings.array_parallelism, _cpu_count())
        lane_jobs = [executor.submit(lane) for lane in lanes]
        by_cell = {t.cell_id: job for lane, job in zip(lanes, lane_jobs) for t in lane.tasks}
        submitted = lane_jobs
        cell_jobs = [by_cell[c.cell_id] for c in todo]
    else:
        with executor.batch():
            for task in tasks:
                submitted.append(executor.submit(task))
        cell_jobs = submitted
    jobs = status_module.cluster_jobs(results)
    for cell, job in zip(todo, cell_jobs):
        jobs[cell.cell_id] = {
            "job_id": str(job.job_id),
            "executor": executor_kind,
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        }
    with atomic_path(paths.jobs_file(results), inside=results) as tmp:
        tmp.write_text(json.dumps(jobs, indent=2, sort_keys=True) + "\n")
    ids = ", ".join(str(j.job_id) for j in submitted)
    lanes_note = f" as {len(submitted)} task(s) at once" if executor_kind == "local" else ""
    say.line(f"{suite.name}: submitted {len(todo)} cell(s) to {executor_kind}{lanes_note}: {ids}")
    say.line(
        f"logs under {folder}; `{status_command(suite, overrides, results, only)}` shows each cell"
    )
    if not wait:
        return 0
    last = ""
    while not all(job.done() for job in submitted):
        line = status_module.summary_line(status_module.suite_status(cells, results))
        if line != last:
            say.line(f"{suite.name}: {line}")
            last = line
        time.sleep(poll_s)
    final = status_module.suite_status(cells, results)
    say.line(f"{suite.name}: {status_module.summary_line(final)}")
    for state in final:
        if state.state == "failed":
            say.line(f"fail  {state.cell_id} {state.label}: {state.detail}")
    return 0 if all(s.state in ("done", "diverged") for s in final) else 1


def status_command(
    suite: Suite, overrides: tuple[str, ...], results: Path, only: str | None = None
) -> str:
    """The `harness status` line that shows the cells just submitted (same suite, overrides,
    selection and results folder)."""
    args = ["harness", "status", str(suite.path)]
    for item in overrides:
        args += ["--set", item]
    if results != default_folder(suite.name):
        args += ["--results", str(results)]
    if only is not None:
        args += ["--only", only]
    return shlex.join(args)
