"""Train one job: follow its plan exactly, measure honestly, checkpoint every epoch.

`train_cell` owns only the order of events (build, resume, per epoch: enter the phase, train,
evaluate, record, checkpoint); everything else is a named function below, in `epoch` (one
epoch's steps, the warm-up) or in `step`. An epoch's record is
`harness.core.epoch_record.EpochRecord`: the loop fills its fields, the audit (`Applied`) and
the noise meter (`NoiseReading`) their parts.
Not split: `train_cell`'s named steps share one `_Run` and read best beside it; one epoch's
steps are `epoch`'s already, and the step itself is `step`'s.

Reproducibility contract: three random streams derive from the job's seed. Initialization
uses one seed; each epoch's data order and augmentation use seeds that are pure functions of
(seed, epoch). So jobs with the same seed start from the same weights and visit examples in
the same order whatever their schedule, and a resumed run draws exactly what an uninterrupted
run would have drawn: from an epoch boundary, or mid-epoch from the step after the last one a
signal let finish (harness.train.preempt: the checkpoint then holds the augmentation
generator's state and the epoch's accumulators).

Timing contract: device work is asynchronous, so clocks are read only after a synchronize, and
only at epoch boundaries (never inside the step). Training, evaluation, warm-up and the rest
(checkpointing, bookkeeping) are separate totals.

Time-boxed runs: given a `deadline`, the cell trains at least one epoch, then stops at the last
epoch boundary before the deadline (judged from the last epoch's time), with status "paused"
and its checkpoint written; run again, it resumes there, on this machine or another. Given a
`stop` vote (signals), it stops after any step, with a mid-epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core.epoch_record import Decided, EpochRecord
from harness.core.execution import Execution
from harness.core.metrics import cell_metrics
from harness.core.schedule import Phase, Plan
from harness.data.source import DataSource
from harness.models.registry import build_model
from harness.train.audit import Audit
from harness.train.checkpoint import (
    Progress,
    ProgressMismatch,
    load_checkpoint,
    save_checkpoint,
)
from harness.train.decisions import DecisionHook, decision_hook
from harness.train.epoch import stream_seed, train_epoch, warm_up
from harness.train.noise import NoiseMeter
from harness.train.optim import build_optimizer, set_hyperparameters
from harness.train.preempt import Interrupted, PartialEpoch
from harness.train.probe import StepProbe
from harness.train.replica import Replica
from harness.train.runtime import peak_memory, synchronize
from harness.train.spec import TrainJob
from harness.train.step import evaluate, precise_bn_stats


@dataclass(frozen=True)
class CellResult:
    progress: Progress
    peak_memory_bytes: int

    @property
    def final(self) -> dict[str, float]:
        """The cell's metrics, by name (harness.core.metrics)."""
        return cell_metrics(self.progress.curves)


EpochCallback = Callable[[TrainJob, EpochRecord], None]


def build(job: TrainJob, device: torch.device, execution: Execution) -> torch.nn.Module:
    """The job's model with its seeded initial weights (drawn on the CPU: same on any device)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(job.seed, "init"))
        model = build_model(
            job.model.name,
            dict(job.model.params),
            num_classes=job.num_classes,
            ghost_size=job.ghost_batch_size,
            factory=job.model.factory,
        )
    if job.precision == "fp64":
        model = model.double()
    model = model.to(device)
    if execution.channels_last:
        # Module.to accepts memory_format at run time; its type stubs do not say so.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def _resume(
    checkpoint: Path,
    job: TrainJob,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> Progress:
    """The progress to start from: the checkpoint's, or a fresh one (none, or one whose
    progress the plan cannot have produced: its error then says so, for the cell's row)."""
    try:
        return load_checkpoint(
            checkpoint, job.cell_id, model, optimizer, device, lambda p: _plan_of(job, p)
        ) or (Progress())
    except ProgressMismatch as exc:
        return Progress(error=f"trained from scratch: checkpoint {exc}")


def _plan_of(job: TrainJob, progress: Progress) -> Plan:
    """The plan a checkpoint's progress was trained under: a decided realization's follows
    from its decisions, which its hook checks (harness.train.decisions)."""
    hook = decision_hook(job)
    if hook is not None:
        hook.check(job, progress)
    return job.plan_for(progress.decisions)


def _same(value: float) -> float:
    return value


@contextlib.contextmanager
def _oom_fails_cell(job: TrainJob, progress: Progress) -> Iterator[None]:
    """An out-of-memory error ends the cell as `failed`, naming the cure; the suite goes on."""
    try:
        yield
    except torch.OutOfMemoryError:
        progress.status = "failed"
        progress.error = (
            f"cell {job.cell_id} ({job.label}) ran out of device memory; lower "
            "execution.max_micro_batch in the suite or pass --max-micro-batch (a multiple "
            f"of the ghost batch size {job.ghost_batch_size})"
        )


def train_cell(
    job: TrainJob,
    data: DataSource,
    execution: Execution,
    checkpoint: Path,
    on_epoch: EpochCallback | None = None,
    deadline: float | None = None,
    probe: StepProbe | None = None,
    replica: Replica | None = None,
    stop: Callable[[], bool] | None = None,
) -> CellResult:
    """Train `job` to the end of its plan (or until its loss diverges), resuming if possible.

    `stop` (harness.train.preempt.StopVote, asked after every step and at every epoch
    boundary): when it says so, the cell ends "paused" after the step in progress, with a
    mid-epoch checkpoint; the next call continues that epoch exactly.

    `deadline` (a `time.monotonic()` value): after at least one epoch, stop with status
    "paused" at the last epoch boundary expected to come before it (see the module docstring).
    `replica`: this process's place in a data-parallel job (harness.train.replica); every
    process returns the same result, rank 0 alone writes the checkpoint and calls `on_epoch`,
    and clocks are read after a barrier, so times are the whole job's.

    Raises `CheckpointError` for a checkpoint it cannot resume from; any other error but
    running out of memory propagates to the caller, which decides what a failure means.
    """
    hook = decision_hook(job)
    if hook is not None and hook.needs_noise_scale and not execution.noise_scale:
        # An adaptive batch is decided from B_simple: the meter is on (steps split in two).
        execution = dataclasses.replace(execution, noise_scale=True)
    run = _start(job, data, execution, checkpoint, probe, replica)
    progress = run.progress
    partial = None if progress.partial is None else PartialEpoch.from_dict(progress.partial)
    progress.partial = None
    with _oom_fails_cell(job, progress):
        if execution.compile or run.device.type == "cuda":
            batches = [p.batch_size for p in run.plan.phases]  # an adaptive job's so far
            progress.warmup_time_s += warm_up(
                run.model, run.optimizer, run.data, job, execution, replica, batches
            )
        for epoch in range(progress.epoch, job.plan.epochs):
            resume, partial = partial, None
            if resume is None and hook is not None:
                _follow_decision(run, hook, epoch)
            phase = _enter_epoch(run, epoch, resume)
            try:
                train_loss, steps, train_s = _train_timed(run, epoch, phase, resume, stop)
            except Interrupted as stopped:
                _checkpoint_mid_epoch(run, stopped.partial)
                progress.status = "paused"
                break
            record = _record_epoch(run, epoch, phase, train_loss, steps, train_s)
            if not math.isfinite(train_loss):
                progress.status = "diverged"
                progress.error = f"training loss is {train_loss} in epoch {epoch + 1}"
                break
            checkpoint_s = _checkpoint_epoch(run)
            if on_epoch is not None and run.main:
                on_epoch(job, record)
            epoch_s = train_s + record.eval_time_s + checkpoint_s
            if epoch + 1 < job.plan.epochs and _pause_here(deadline, epoch_s, replica, stop):
                progress.status = "paused"
                break
    run.clock.add_to(progress)
    return CellResult(progress, _job_peak_memory(run.device, replica))


@dataclass
class _Run:
    """One segment of a cell being trained: what `train_cell`'s steps share."""

    job: TrainJob
    data: DataSource  # the audited source (harness.train.audit)
    execution: Execution
    checkpoint: Path
    replica: Replica | None
    plan: Plan  # what training follows: the job's, or an adaptive job's after its decisions
    base_model: torch.nn.Module  # what is checkpointed
    model: torch.nn.Module  # what the steps call: DDP's wrapper, compiled if asked
    optimizer: torch.optim.Optimizer
    progress: Progress
    audit: Audit
    meter: NoiseMeter | None
    clock: _WallClock

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def main(self) -> bool:
        return self.replica is None or self.replica.is_main

    def sync(self) -> None:
        """Before reading a clock: this device, then every process."""
        synchronize(self.device)
        if self.replica is not None:
            self.replica.barrier()


def _start(
    job: TrainJob,
    data: DataSource,
    execution: Execution,
    checkpoint: Path,
    probe: StepProbe | None,
    replica: Replica | None,
) -> _Run:
    """The wall clock started, the model and optimizer built and resumed, the audit (tier 0
    of the gate: what was applied) and the noise meter in place."""
    clock = _WallClock()
    device = data.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = execution.cudnn_benchmark
    base_model = build(job, device, execution)
    optimizer = build_optimizer(base_model.parameters(), job.optimizer, device)
    progress = _resume(checkpoint, job, base_model, optimizer, device)
    audit = Audit(job, data, base_model, optimizer, probe, replica)
    world = 1 if replica is None else replica.world
    meter = None
    if execution.noise_scale:
        pool = None if replica is None else replica.all_gather
        meter = NoiseMeter(base_model.parameters(), audit.data.n_train, world, pool)
    model = _parallel_and_compiled(base_model, execution, replica)
    if meter is not None and replica is not None and replica.ddp is not None:
        # Every process's last micro-batch is a sample too (read before the all-reduce).
        replica.ddp.register_comm_hook(None, meter.ddp_hook())  # type: ignore[operator]
    return _Run(
        job,
        audit.data,
        execution,
        checkpoint,
        replica,
        job.plan_for(progress.decisions),
        base_model,
        model,
        optimizer,
        progress,
        audit,
        meter,
        clock,
    )


def _follow_decision(run: _Run, hook: DecisionHook, epoch: int) -> None:
    """At a decided realization's decision epoch: its hook's decision (harness.train.decisions)
    recorded, and the plan it gives followed."""
    progress = run.progress
    previous = run.plan.phase_at(epoch - 1).batch_size if epoch else run.plan.phases[0].batch_size
    agree = run.replica.broadcast_float if run.replica is not None else _same
    decision = hook.decide(run.job, progress, epoch, previous, agree)
    if decision is None:
        return
    progress.decisions.append(decision)
    run.plan = run.job.plan_for(progress.decisions)
    if decision.batch_size != previous and (run.execution.compile or run.device.type == "cuda"):
        # A new step shape: compiled (or autotuned) here, untimed, not in the epoch's clock.
        progress.warmup_time_s += warm_up(
            run.model,
            run.optimizer,
            run.data,
            run.job,
            run.execution,
            run.replica,
            batches=(decision.batch_size,),
            evaluation=False,
        )


def _enter_epoch(run: _Run, epoch: int, resume: PartialEpoch | None) -> Phase:
    """The plan's phase set on the optimizer; the audit's and meter's counters started (or
    restored from a mid-epoch checkpoint)."""
    phase = run.plan.phase_at(epoch)
    set_hyperparameters(run.optimizer, phase.lr, phase.momentum)
    run.audit.begin_epoch(None if resume is None else resume.audit)
    # The saved sums are every process's, pooled (NoiseMeter.state): one process holds them.
    if run.meter is not None and resume is not None and resume.meter is not None and run.main:
        run.meter.restore(resume.meter)
    return phase


def _train_timed(
    run: _Run,
    epoch: int,
    phase: Phase,
    resume: PartialEpoch | None,
    stop: Callable[[], bool] | None,
) -> tuple[float, int, float]:
    """(mean training loss, steps, seconds) of the epoch, timed between synchronizations;
    an `Interrupted` epoch carries its seconds so far (rank 0's) on its way out."""
    before = 0.0 if resume is None else resume.train_s
    run.sync()
    start = time.perf_counter()
    try:
        train_loss, steps = train_epoch(
            run.model,
            run.optimizer,
            run.data,
            run.job,
            epoch,
            phase,
            run.execution,
            run.replica,
            meter=run.meter,
            stop=stop,
            resume=resume,
        )
    except Interrupted as stopped:
        run.sync()
        if stopped.partial is not None and run.main:
            stopped.partial.train_s = time.perf_counter() - start
            stopped.partial.train_s += before
        raise
    run.sync()
    return train_loss, steps, time.perf_counter() - start + before


def _checkpoint_mid_epoch(run: _Run, partial: PartialEpoch | None) -> None:
    """Rank 0 saves the unfinished epoch with the audit's and meter's counters (nothing when
    the source cannot start mid-epoch: the last epoch's checkpoint stands)."""
    if partial is None:
        return
    meter = None if run.meter is None else run.meter.state()  # pooled: every process calls it
    if not run.main:
        return
    partial.audit = run.audit.state()
    partial.meter = meter
    run.clock.add_to(run.progress)
    run.progress.partial = partial.as_dict()
    save_checkpoint(run.checkpoint, run.job.cell_id, run.base_model, run.optimizer, run.progress)


def _record_epoch(
    run: _Run, epoch: int, phase: Phase, train_loss: float, steps: int, train_s: float
) -> EpochRecord:
    """The finished epoch counted, evaluated when due (not after a diverged loss), and its
    record (the loop's measures, the audit's `Applied`, the meter's `NoiseReading`) kept."""
    job, progress = run.job, run.progress
    progress.updates += steps
    progress.images += min(steps * phase.batch_size, run.data.n_train)
    progress.train_time_s += train_s
    due = epoch + 1 == job.plan.epochs or (epoch + 1) % job.eval_every == 0
    evals = _evaluate(run) if math.isfinite(train_loss) and due else None
    progress.eval_time_s += 0.0 if evals is None else evals.seconds
    record = EpochRecord(
        cell_id=job.cell_id,
        epoch=epoch + 1,
        updates=progress.updates,
        lr=phase.lr,
        batch_size=phase.batch_size,
        momentum=phase.momentum,
        noise_scale=phase.noise_scale,
        train_loss=train_loss,
        test_loss=math.nan if evals is None else evals.test_loss,
        test_acc=math.nan if evals is None else evals.test_acc,
        epoch_time_s=train_s,
        eval_time_s=0.0 if evals is None else evals.seconds,
        images_per_s=steps * phase.batch_size / train_s if train_s > 0 else math.nan,
        applied=run.audit.end_epoch(),
        train_eval_loss=math.nan if evals is None else evals.train_eval_loss,
        train_eval_images=_train_eval_images(run) if evals is not None else None,
        noise=None if run.meter is None else run.meter.end_epoch(),
        decided=next(
            (Decided(d.b_simple, d.batch_size) for d in progress.decisions if d.epoch == epoch),
            None,
        ),
    )
    progress.curves.append(record)
    progress.epoch = epoch + 1
    return record


def _train_eval_images(run: _Run) -> int | None:
    """How many training images the epoch's training loss was measured on, if it was."""
    if not run.execution.eval_train_loss:
        return None
    limit = run.execution.train_loss_images
    return run.data.n_train if limit is None else min(limit, run.data.n_train)


def _checkpoint_epoch(run: _Run) -> float:
    """The wall clock brought up to date and rank 0's checkpoint written; its seconds."""
    run.clock.add_to(run.progress)
    start = time.monotonic()
    if run.main:
        save_checkpoint(
            run.checkpoint, run.job.cell_id, run.base_model, run.optimizer, run.progress
        )
    return time.monotonic() - start


class _WallClock:
    """The wall clock of this segment of a cell, added to its progress as it goes."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def add_to(self, progress: Progress) -> None:
        now = time.perf_counter()
        progress.wall_clock_s += now - self.start
        self.start = now


def _parallel_and_compiled(
    model: torch.nn.Module, execution: Execution, replica: Replica | None
) -> torch.nn.Module:
    """The module the steps call: DDP's wrapper under a replica, compiled if asked."""
    wrapped = model if replica is None else replica.wrap(model)
    if execution.compile:
        # One graph per micro-batch shape; a plan has at most a few of them. With
        # "reduce-overhead" each is also recorded as CUDA graphs in the warm-up (warm_up).
        wrapped = torch.compile(  # type: ignore[assignment]
            wrapped, dynamic=False, mode=execution.compile_mode
        )
    return wrapped


@dataclass(frozen=True)
class _Evaluation:
    test_loss: float
    test_acc: float
    train_eval_loss: float  # NaN unless execution.eval_train_loss
    seconds: float


def _evaluate(run: _Run) -> _Evaluation:
    """The epoch's evaluation, timed (the test set; the training set too if asked), after
    the batch-norm statistics are recomputed if the job asks for precise ones (they then stay
    in the model: the checkpoint holds them)."""
    job = run.job
    size, precision = run.execution.eval_batch_size, job.precision
    start = time.perf_counter()
    if job.bn_stats == "precise":
        ghost, images = job.ghost_batch_size, job.bn_stats_images
        precise_bn_stats(run.base_model, run.data, images, ghost, size, precision, run.replica)
    test_loss, test_acc = evaluate(run.model, run.data, size, precision, replica=run.replica)
    train_eval_loss = math.nan
    if run.execution.eval_train_loss:
        subset = run.execution.train_loss_images
        train_eval_loss, _ = evaluate(
            run.model, run.data, size, precision, "train", run.replica, subset
        )
    run.sync()
    return _Evaluation(test_loss, test_acc, train_eval_loss, time.perf_counter() - start)


def _pause_here(
    deadline: float | None,
    epoch_s: float,
    replica: Replica | None,
    stop: Callable[[], bool] | None,
) -> bool:
    """Whether to pause at this epoch boundary (not the last one).

    The next epoch is assumed to take as long as this one (`epoch_s`: training, evaluation and
    checkpoint); one that would end past the deadline is not started. The checkpoint just
    written says "ok": the pause belongs to this run, not to the cell. Rank 0's clock decides
    for every process; a signal during evaluation or the checkpoint pauses here too.
    """
    pause = deadline is not None and time.monotonic() + epoch_s > deadline
    if replica is not None:
        pause = bool(replica.broadcast_int(int(pause)))
    if stop is not None and stop():
        pause = True
    return pause


def _job_peak_memory(device: torch.device, replica: Replica | None) -> int:
    """The peak device memory of this process, or of the largest process of the job."""
    peak = peak_memory(device)
    if replica is not None:
        peak_t = torch.tensor([peak], dtype=torch.int64, device=device)
        replica.all_reduce([peak_t], op="max")
        peak = int(peak_t.item())
    return peak
