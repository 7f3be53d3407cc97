"""Realistic fake results folders, written through `harness.results.store.write_cell`, for
testing the report and check logic without training anything.

A fake cell's numbers are a function of (optimizer, schedule, seed) only: the same triple in
two experiments is one cell (one cell id, the second experiment's label in `aliases`), as the
suite expander makes it. Schedules come from the real `harness.core.schedule.realize`, so lr, batch
size, noise scale and update counts are the ones a run would log.

Curves follow the paper's picture: every realization of the base schedule shares one noise
scale per epoch, so its curves are the optimizer's base curve (a function of the multiplier
mu(epoch) and the seed) plus a little per-schedule noise. `FakeSchedule.copy_of` makes a
schedule's curves exactly another's, plus known offsets, so equivalence gaps can be asserted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.app.console import RunConsole
from harness.core.epoch_record import EpochRecord
from harness.core.naming import cell_label, config_id
from harness.core.schedule import BaseSchedule, Plan, realize
from harness.results.record import CurveRecord, RunRecord
from harness.results.store import write_cell

TRAIN_SIZE = 50_000
START = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)

OPTIMIZERS: dict[str, dict[str, Any]] = {
    # kind, lr, momentum used in the noise scale, and how far its curve sits below momentum's
    "sgd": {"kind": "sgd", "lr": 0.1, "momentum": 0.0, "acc_shift": -0.004},  # the paper's
    "sgd_effective_lr": {"kind": "sgd", "lr": 1.0, "momentum": 0.0, "acc_shift": -0.004},
    "momentum": {"kind": "momentum", "lr": 0.1, "momentum": 0.9, "acc_shift": 0.0},
    "nesterov": {"kind": "nesterov", "lr": 0.1, "momentum": 0.9, "acc_shift": 0.001},
    "adam": {"kind": "adam", "lr": 1e-3, "momentum": 0.0, "acc_shift": -0.03},
}


@dataclass(frozen=True)
class FakeSchedule:
    """One named realization of the base schedule, and how its fake curves are made."""

    realization: Literal["lr", "batch", "hybrid"] = "lr"
    batch_drops: int = 0
    lr_scale: float = 1.0  # raise the initial lr; B follows (B ∝ lr)
    momentum: float | None = None  # raise the momentum; B follows (B ∝ 1/(1-m))
    b_max: int | None = None
    copy_of: str | None = None  # curves exactly those of this schedule, plus the offsets
    acc_offset: float = 0.0  # added to test accuracy (fraction) at every epoch
    loss_offset: float = 0.0  # added to training loss at every epoch
    noise: float = 0.002  # std of this schedule's own per-epoch noise on accuracy


SCHEDULES: dict[str, FakeSchedule] = {
    "decaying_lr": FakeSchedule("lr"),
    "hybrid": FakeSchedule("hybrid", batch_drops=1),
    "increasing_batch": FakeSchedule("batch"),
    "increased_lr": FakeSchedule("batch", lr_scale=5.0, b_max=5120),
    "increased_momentum": FakeSchedule(
        "batch", lr_scale=5.0, momentum=0.98, b_max=5120, acc_offset=-0.01
    ),
}


@dataclass(frozen=True)
class FakeExperiment:
    name: str
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1)
    # "optimizer/schedule" -> (accuracy fraction, the paper's words for the update count[,
    # the source, default "Sec 5.2, Fig 5"; per-run accuracies are quoted in it, "(78.7% and
    # 77.8%)", as the suites do])
    paper: Mapping[str, tuple[float, str] | tuple[float, str, str]] = field(default_factory=dict)


CIFAR_LIKE: tuple[FakeExperiment, ...] = (
    FakeExperiment(
        "sec5.1",
        ("sgd", "momentum", "nesterov", "adam"),
        ("decaying_lr", "hybrid", "increasing_batch"),
        seeds=(0, 1, 2),
    ),
    FakeExperiment(
        "sec5.2",
        ("momentum",),
        ("decaying_lr", "increasing_batch", "increased_lr", "increased_momentum"),
        seeds=(0, 1, 2),
        paper={
            "momentum/decaying_lr": (0.943, "~80000"),
            "momentum/increasing_batch": (0.944, "~29000"),
            "momentum/increased_lr": (0.945, "under 6500"),
            "momentum/increased_momentum": (0.933, "under 2500"),
        },
    ),
)


def _stable_int(*parts: object) -> int:
    """A seed from names, stable across processes (unlike hash())."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class _Setup:
    epochs: int
    milestones: tuple[int, ...]
    factor: float
    batch_size: int
    train_size: int
    eval_every: int
    rng_seed: int
    schedules: tuple[tuple[str, FakeSchedule], ...]

    @property
    def base(self) -> BaseSchedule:
        return BaseSchedule(epochs=self.epochs, milestones=self.milestones, factor=self.factor)

    def schedule(self, name: str) -> FakeSchedule:
        return dict(self.schedules)[name]

    @cache  # noqa: B019 - a frozen, hashable value object; the cache must outlive it anyway
    def plan(self, optimizer: str, schedule: str) -> tuple[Plan, float, float]:
        opt, sched = OPTIMIZERS[optimizer], self.schedule(schedule)
        momentum = sched.momentum if sched.momentum is not None else opt["momentum"]
        lr = opt["lr"] * sched.lr_scale
        batch = self.batch_size * sched.lr_scale * (1 - opt["momentum"]) / (1 - momentum)
        batch = max(128, round(batch / 128) * 128)
        plan = realize(
            self.base,
            lr=lr,
            batch_size=batch,
            momentum=momentum,
            train_size=self.train_size,
            realization=sched.realization,
            batch_drops=sched.batch_drops,
            b_max=sched.b_max,
            ghost=128,
        )
        return plan, lr, momentum


@cache
def _curves(setup: _Setup, optimizer: str, schedule: str, seed: int) -> tuple[np.ndarray, ...]:
    """(test_acc, train_loss, test_loss) per epoch; test metrics NaN on non-eval epochs."""
    sched = setup.schedule(schedule)
    if sched.copy_of is not None:
        acc, loss, test_loss = _curves(setup, optimizer, sched.copy_of, seed)
        acc, loss = acc + sched.acc_offset, loss + sched.loss_offset
        return acc, loss, test_loss
    epoch = np.arange(setup.epochs)
    mu = np.array([setup.base.multiplier(int(e)) for e in epoch])
    shift = OPTIMIZERS[optimizer]["acc_shift"]
    # The optimizer/seed base curve is shared by every schedule: the paper's claim, made true.
    base_rng = np.random.default_rng(_stable_int(setup.rng_seed, optimizer, seed))
    warm = 1.0 - np.exp(-(epoch + 1) / 3.0)
    acc = (0.945 + shift - 0.1 * np.sqrt(mu)) * warm + base_rng.normal(0, 0.003, epoch.size)
    loss = 0.04 + 0.6 * np.sqrt(mu) + 1.6 * np.exp(-(epoch + 1) / 3.0)
    loss = loss * np.exp(base_rng.normal(0, 0.02, epoch.size))
    own_rng = np.random.default_rng(_stable_int(setup.rng_seed, optimizer, schedule, seed))
    acc = acc + own_rng.normal(0, sched.noise, epoch.size) + sched.acc_offset
    loss = loss * np.exp(own_rng.normal(0, sched.noise, epoch.size)) + sched.loss_offset
    acc = np.clip(acc, 0.1, 0.999)
    test_loss = 0.2 + 2.0 * (1 - acc) + own_rng.normal(0, 0.01, epoch.size)
    evaluated = ((epoch + 1) % setup.eval_every == 0) | (epoch + 1 == setup.epochs)
    return acc, loss, np.where(evaluated, test_loss, np.nan)


def _cell(
    setup: _Setup, suite: str, model: str, optimizer: str, schedule: str, seed: int
) -> tuple[str, dict[str, Any], list[CurveRecord]]:
    plan, lr, momentum = setup.plan(optimizer, schedule)
    sched = setup.schedule(schedule)
    config = {
        "dataset": {"name": "cifar10", "augment": True},
        "model": {"name": model},
        "optimizer": {"kind": OPTIMIZERS[optimizer]["kind"], "lr": lr, "momentum": momentum},
        "schedule": {
            "epochs": setup.epochs,
            "milestones": list(setup.milestones),
            "factor": setup.factor,
            "realization": sched.realization,
            "batch_drops": sched.batch_drops,
            "b_max": sched.b_max,
            "tag": schedule,  # fakes: a name in the id keeps copied schedules distinct cells
        },
        "seed": seed,
        "suite": suite,  # fakes: two fake suites' cells are other cells
    }
    cell_id = config_id(config)  # as the harness makes ids, so that read_rows accepts the row
    acc, loss, test_loss = _curves(setup, optimizer, schedule, seed)
    rng = np.random.default_rng(_stable_int(setup.rng_seed, cell_id, "timing"))
    curves = []
    for e in range(setup.epochs):
        phase = plan.phase_at(e)
        # Throughput grows with the batch size on a GPU, then saturates.
        ips = 9000.0 * phase.batch_size / (phase.batch_size + 256) * rng.uniform(0.97, 1.03)
        evaluated = not math.isnan(test_loss[e])
        curves.append(
            CurveRecord(
                suite,
                EpochRecord(
                    cell_id=cell_id,
                    epoch=e + 1,
                    updates=plan.updates_before(e + 1),
                    lr=phase.lr,
                    batch_size=phase.batch_size,
                    momentum=phase.momentum,
                    noise_scale=phase.noise_scale,
                    train_loss=float(loss[e]),
                    test_loss=float(test_loss[e]),
                    test_acc=float(acc[e]) if evaluated else math.nan,
                    epoch_time_s=setup.train_size / ips,
                    eval_time_s=0.8 if evaluated else 0.0,
                    images_per_s=ips,
                ),
            )
        )
    return cell_id, config, curves


def write_fake_results(
    root: Path,
    experiments: Sequence[FakeExperiment] = CIFAR_LIKE,
    schedules: Mapping[str, FakeSchedule] | None = None,
    *,
    suite: str = "cifar",
    model: str = "wrn16_4",
    dataset: str = "cifar10",
    epochs: int = 20,
    milestones: Sequence[int] = (6, 12, 16),
    factor: float = 5.0,
    batch_size: int = 128,
    eval_every: int = 1,
    rng_seed: int = 0,
    statuses: Mapping[str, str] | None = None,
    start: datetime = START,
) -> list[dict[str, Any]]:
    """Write one fake cell per distinct (optimizer, schedule, seed) under `root`.

    `statuses` maps a label "experiment/optimizer/schedule/seedN" to a non-ok status.
    Returns the run rows written (`RunRecord` fields as dicts, `aliases` filled), in writing
    order.
    """
    setup = _Setup(
        epochs=epochs,
        milestones=tuple(milestones),
        factor=factor,
        batch_size=batch_size,
        train_size=TRAIN_SIZE,
        eval_every=eval_every,
        rng_seed=rng_seed,
        schedules=tuple((schedules or SCHEDULES).items()),
    )
    statuses = statuses or {}
    rows: dict[str, RunRecord] = {}
    curves_of: dict[str, list[CurveRecord]] = {}
    for exp in experiments:
        for optimizer in exp.optimizers:
            for schedule in exp.schedules:
                for seed in exp.seeds:
                    label = cell_label(exp.name, optimizer, schedule, seed)
                    cell_id, config, curves = _cell(setup, suite, model, optimizer, schedule, seed)
                    paper = exp.paper.get(f"{optimizer}/{schedule}")
                    if cell_id in rows:
                        row = replace(rows[cell_id], aliases=[*rows[cell_id].aliases, label])
                        if paper and row.paper_test_acc is None:
                            row = replace(
                                row,
                                paper_test_acc=paper[0],
                                paper_updates=paper[1],
                                paper_source=_source(paper),
                            )
                        rows[cell_id] = row
                        continue
                    rows[cell_id] = _run_row(
                        setup,
                        suite,
                        exp.name,
                        model,
                        dataset,
                        optimizer,
                        schedule,
                        seed,
                        cell_id,
                        config,
                        curves,
                        paper,
                        statuses.get(label, "ok"),
                        start + timedelta(minutes=7 * len(rows)),
                    )
                    curves_of[cell_id] = curves
    # One file per cell, as the runner writes them: the store reads nothing else (a row file
    # holds the rows of the cell it is named for).
    for cell_id, row in rows.items():
        write_cell(root, row, curves_of[cell_id])
    return [asdict(row) for row in rows.values()]


def _run_row(
    setup: _Setup,
    suite: str,
    experiment: str,
    model: str,
    dataset: str,
    optimizer: str,
    schedule: str,
    seed: int,
    cell_id: str,
    config: dict[str, Any],
    curves: list[CurveRecord],
    paper: tuple[float, str] | tuple[float, str, str] | None,
    status: str,
    started: datetime,
) -> RunRecord:
    plan, _, _ = setup.plan(optimizer, schedule)
    last = curves[-1].measured
    accs = [c.measured.test_acc for c in curves if not math.isnan(c.measured.test_acc)]
    train_time = sum(c.measured.epoch_time_s for c in curves)
    eval_time = sum(c.measured.eval_time_s for c in curves)
    wall = train_time + eval_time + 12.0
    commit = hashlib.sha1(str(setup.rng_seed).encode()).hexdigest()
    return RunRecord(
        suite=suite,
        experiment=experiment,
        aliases=[],
        cell_id=cell_id,
        model=model,
        dataset=dataset,
        train_size=setup.train_size,
        optimizer=optimizer,
        optimizer_kind=OPTIMIZERS[optimizer]["kind"],
        schedule=schedule,
        realization=setup.schedule(schedule).realization,
        milestones=list(setup.milestones),
        seed=seed,
        status=status,
        error=None if status == "ok" else "loss is NaN at epoch 3",
        epochs=setup.epochs,
        planned_epochs=setup.epochs,
        updates=plan.updates,
        planned_updates=plan.updates,
        final_test_acc=accs[-1],
        best_test_acc=max(accs),
        final_test_loss=last.test_loss,
        final_train_loss=last.train_loss,
        wall_clock_s=wall,
        train_time_s=train_time,
        eval_time_s=eval_time,
        overhead_time_s=wall - train_time - eval_time,
        warmup_time_s=4.0,
        images_per_s=setup.train_size * setup.epochs / train_time,
        updates_per_s=plan.updates / train_time,
        peak_memory_bytes=12_000_000_000,
        device="cuda",
        device_name="NVIDIA H100 80GB HBM3",
        world_size=1,
        devices="cuda:0",
        data_source="official",
        precision="bf16",
        hostname="gpu-node-1",
        python_version="3.11.9",
        torch_version="2.11.0+cu128",
        harness_version="0.1.0",
        git_commit=commit,
        git_dirty=False,
        config=json.dumps(config, sort_keys=True),
        plan=json.dumps([p.as_dict() for p in plan.phases]),
        paper_test_acc=paper[0] if paper else None,
        paper_updates=paper[1] if paper else None,
        paper_source=_source(paper) if paper else None,
        started_at=started,
        finished_at=started + timedelta(seconds=wall),
    )


def _source(paper: tuple[float, str] | tuple[float, str, str]) -> str:
    return paper[2] if len(paper) == 3 else "Sec 5.2, Fig 5"


_HOLDER = """
import sys, time
from pathlib import Path
from harness.results.lock import claim
with claim(Path(sys.argv[1]), sys.argv[2]) as mine:
    print("held" if mine else "busy", flush=True)
    time.sleep(600)  # holds the claim until other_runner_holding kills it (never waited out)
"""


@contextlib.contextmanager
def other_runner_holding(results: Path, cell_id: str) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the claim of `cell_id` until the block ends (then killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(results), cell_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


class FailingConsole(RunConsole):
    """A run's console that raises what `fault(job, record)` returns (None: nothing) when an
    epoch ends: a fault inside a cell's training, injected through `run_suite(console=...)`,
    after that epoch's checkpoint is written."""

    def __init__(self, fault: Callable[[Any, EpochRecord], BaseException | None]) -> None:
        super().__init__()
        self.fault = fault

    def epoch(self, job: Any, row: EpochRecord) -> None:
        error = self.fault(job, row)
        if error is not None:
            raise error
        super().epoch(job, row)
