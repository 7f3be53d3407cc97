"""Preemption: SIGTERM, SIGUSR1 or SIGUSR2 ask a run to stop; training stops between two steps.

Slurm's ``scancel`` and preemption send SIGTERM (then SIGKILL after the cluster's KillWait,
30 s by default); submitit's ``--signal=USR2@90`` sends SIGUSR2 before the time limit; SIGUSR1
is the other signal people bind. A `StopSignals` block turns each of them into a flag instead
of the default death: the loop finishes the optimizer step in progress, writes a mid-epoch
checkpoint (`PartialEpoch`) and ends the cell as "paused"; the runner starts no further cell
and the process exits with `EXIT_PAUSED`. The next run resumes the epoch at the step after the
last one taken, with every accumulator as it was, so its rows equal an unbroken run's.

The handler only sets a flag (nothing else is safe inside a signal handler). A second signal
changes nothing: the checkpoint being written is finished either way.

Under torchrun each process may see the signal at a different step (torchrun forwards it to
its workers; Slurm signals every process of the step itself), so the decision is a vote:
after every step each process contributes its flag to one all-reduce (max) of a CPU integer,
over gloo, and all stop at the same step. That costs one small host-side collective per step
and no device sync; it is skipped in one process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from harness.errors import EXIT_PAUSED, STOP_SIGNALS
from harness.train.replica import Replica

__all__ = [
    "EXIT_PAUSED",
    "STOP_SIGNALS",
    "Interrupted",
    "PartialEpoch",
    "StopSignals",
    "StopVote",
    "orphaned",
    "watch_parent",
]


class StopSignals:
    """While the block runs, STOP_SIGNALS set `requested` instead of killing the process."""

    def __init__(self) -> None:
        self.signal: int | None = None  # the first one received

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is None:
            self.signal = signum

    @contextlib.contextmanager
    def installed(self, keep: bool = False) -> Iterator[StopSignals]:
        """The handlers while the block runs; after it, the previous ones again, unless `keep`:
        a process that ends after the block (the CLI's `harness run`) keeps recording, so that
        a signal landing while it prints its summary and exits leaves its exit status alone
        instead of killing it (the work is done; nothing is left to pause)."""
        # Python delivers signals to the main thread only; elsewhere (a test's thread, an
        # embedding application) the process keeps its own handlers.
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            if not keep:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "none"


def ignore_stop_signals() -> None:
    """The work is done: a stop signal from now on is ignored rather than recorded. At exit
    CPython puts its default action back for every signal with a Python handler, so a SIGTERM
    landing while the interpreter shuts down would kill a run that finished (exit -15, seen
    under load in tests/test_preempt.py); an ignored signal stays ignored."""
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


_orphaned = threading.Event()


def orphaned() -> None:
    """The process whose pipe carried this process's output is gone (a `--workers` parent
    killed): pause as on preemption instead of dying at the next line written.

    The output goes to /dev/null from now on (file descriptors 1 and 2, so that no later write
    fails with a broken pipe), and the process sends itself SIGTERM: `StopSignals` turns it
    into a pause after the step in progress (a mid-epoch checkpoint, the claim released) and
    no further cell starts. Before any cell (no handler yet) SIGTERM ends the process, which
    has nothing to checkpoint. Safe to call from any thread, and more than once."""
    if _orphaned.is_set():
        return
    _orphaned.set()
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    os.kill(os.getpid(), signal.SIGTERM)


def watch_parent(parent: int, every_s: float = 0.2) -> None:
    """Call `orphaned` once the process `parent` is no longer this one's parent (it died and
    this process was handed to init or a subreaper): a daemon thread polling `os.getppid`,
    which is portable and, unlike a parent-death signal, sees a parent that died before the
    watch began."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        orphaned()

    threading.Thread(target=watch, name="harness-parent-watch", daemon=True).start()


class StopVote:
    """Whether every process stops now: this process's flag, agreed across a replica's ranks.

    Every process must call `__call__` at the same points (after each step, at each epoch
    boundary): it is a collective under a replica.
    """

    def __init__(self, signals: StopSignals, replica: Replica | None = None) -> None:
        self.signals = signals
        self.stopped = False  # the vote said stop (in every process alike)
        self._group: Any = None
        if replica is not None:
            # A gloo group for the vote, so that it never waits on the device's queue (NCCL
            # would); with the CPU backend it is the default group itself.
            gloo = dist.get_backend() == "gloo"
            self._group = dist.group.WORLD if gloo else dist.new_group(backend="gloo")

    def __call__(self) -> bool:
        flag = self.signals.requested
        if self._group is not None:
            t = torch.tensor([int(flag)], dtype=torch.int64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._group)
            flag = bool(t.item())
        self.stopped = self.stopped or flag
        return flag


@dataclass
class PartialEpoch:
    """An epoch stopped after `step` of its steps: what the rest of it needs to go on exactly.

    `loss_sum`: the steps' mean losses summed so far (the whole job's, as one process would
    have it, so a cell resumes with any number of processes); `augment_state`: the
    augmentation generator's state after the last step drawn, still written for older
    harnesses, which set their generator from it, but never read (it is a device type's own
    format; the resumed epoch re-derives the generator from its seed and step, see
    `harness.data.device.DeviceData.epoch_batches`); `audit` / `meter`: the tier-0
    checksums and the noise meter's sums so far (their `state()`); `train_s`: training
    seconds of the epoch so far.
    """

    epoch: int
    step: int
    loss_sum: float
    train_s: float = 0.0
    augment_state: torch.Tensor | None = None
    audit: dict[str, Any] = field(default_factory=dict)
    meter: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "loss_sum": self.loss_sum,
            "train_s": self.train_s,
            "augment_state": self.augment_state,
            "audit": self.audit,
            "meter": self.meter,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PartialEpoch:
        return cls(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            loss_sum=float(state["loss_sum"]),
            train_s=float(state.get("train_s", 0.0)),
            audit=dict(state.get("audit") or {}),
            meter=state.get("meter"),
        )


class Interrupted(Exception):
    """Raised by `train_epoch` when the vote says stop between two steps of an epoch."""

    def __init__(self, partial: PartialEpoch | None) -> None:
        super().__init__("stopped between two steps of an epoch")
        self.partial = partial
