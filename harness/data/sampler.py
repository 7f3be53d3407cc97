"""A plan in a plain PyTorch loop: a resumable batch sampler (its scheduler: harness.train.plan_lr).

`PlanBatchSampler` hands a `DataLoader` the batches of a realized `Plan` (batch sizes change
at epoch boundaries exactly as planned; each epoch is a fresh permutation that depends only on
(seed, epoch), so the data order is the same whatever the schedule, as controlled comparisons
require: docs/ARCHITECTURE.md, "Random streams"). It is a pure function of a position in the
plan, so resuming is restoring a position, and it agrees by construction with
`harness.at_step`, as `harness.PlanLR` does for the lr.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from types import FrameType

import torch
from torch.utils.data import Sampler

from harness.core.query import at_step
from harness.core.schedule import Plan, updates_per_epoch

__all__ = ["PlanBatchSampler", "epoch_permutation"]


def epoch_permutation(seed: int, epoch: int, train_size: int) -> torch.Tensor:
    """The order of the `train_size` examples in `epoch`: a pure function of (seed, epoch).

    The generator's seed is a hash of both, so neighbouring seeds or epochs do not give
    correlated streams, and no global RNG state is read or changed.
    """
    digest = hashlib.sha256(f"harness.sampler:{seed}:{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randperm(train_size, generator=generator)


class PlanBatchSampler(Sampler[list[int]]):
    """Batches of example indices in `range(plan.train_size)` that follow `plan`.

    Use it as `DataLoader(dataset, batch_sampler=sampler)`. Each `iter()` yields the rest of
    the current epoch, one list of indices per optimizer step, and then moves on to the next
    epoch, so `for epoch in range(plan.epochs): for batch in loader: ...` walks the whole plan.
    `set_epoch(e)` (as with `DistributedSampler`) jumps to the start of epoch `e`, unless the
    sampler is already in epoch `e`, where it keeps its place (a resumed run stays mid-epoch).

    Epoch e has `updates_per_epoch(N, B_e, plan.drop_last)` batches of B_e examples; with
    `drop_last=False` the last one holds the remainder, otherwise the remainder is not used
    that epoch.

    Data parallel: with `world_size` W every rank builds the sampler with the same plan and
    seed and its own `rank`; each global batch of B examples is cut into W contiguous slices of
    B/W and rank r gets slice r, so the ranks together see exactly the global batch. A global
    batch (the partial last one included) that W does not divide raises ValueError here,
    because unequal slices would weight the ranks' gradients unequally. So does an epoch
    with no batch at all (B > N with drop_last), where the plan itself is wrong.

    Resuming: the state to save is the position of the next optimizer step, so save
    `state_dict(steps_done=n)` with the optimizer steps `n` actually taken (`PlanLR.steps_done`),
    and `load_state_dict()` it on any rank and any world size. Without `steps_done` the state is
    the next batch to hand out, which is the next step only when the DataLoader has no workers:
    with `num_workers > 0` the workers fetch batches ahead of training, so there a
    `state_dict()` without `steps_done` raises instead of saving a position steps ahead.

    `len()` is the number of batches of the epoch the latest `iter()` walks (until
    `set_epoch`, `seek` or `load_state_dict` moves on), counted whole even when a resumed
    iteration yields only its rest, as Lightning and other loops that resume mid-epoch expect.
    """

    def __init__(self, plan: Plan, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        for phase in plan.phases:
            if phase.updates == 0:
                raise ValueError(
                    f"epochs {phase.start_epoch}-{phase.end_epoch} have no batch: B = "
                    f"{phase.batch_size} is more than the {plan.train_size} examples allow; "
                    "lower b_max (or realize with drop_last=False)"
                )
        self.plan = plan
        self.seed = seed
        self.epoch = 0
        self.batch = 0  # batches of `epoch` already handed out
        self._order: tuple[int, torch.Tensor] | None = None
        self._iterating: int | None = None  # the epoch an unfinished iter() walks
        self._workers = 0  # worker processes of the DataLoader that iterated us last
        self.set_rank(rank, world_size)

    def set_rank(self, rank: int, world_size: int) -> None:
        """Give this sampler rank `rank`'s share of every global batch of `world_size` ranks
        (the constructor's `rank=`/`world_size=`; for launchers that know them only later)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world {world_size}")
        plan = self.plan
        for phase in plan.phases:
            sizes = {phase.batch_size}
            remainder = plan.train_size % phase.batch_size
            if not plan.drop_last and remainder:
                sizes.add(remainder)
            for size in sorted(sizes):
                if size % world_size:
                    raise ValueError(
                        f"a global batch of {size} examples (epochs {phase.start_epoch}-"
                        f"{phase.end_epoch}) does not split into {world_size} equal rank "
                        f"batches; use a world size that divides every batch size"
                        + ("" if plan.drop_last else ", or drop_last=True")
                    )
        self.rank = rank
        self.world_size = world_size

    def batches_in_epoch(self, epoch: int) -> int:
        """Optimizer steps (batches) in `epoch`: floor(N/B), or ceil(N/B) without drop_last."""
        batch_size = self.plan.phase_at(epoch).batch_size
        return updates_per_epoch(self.plan.train_size, batch_size, self.plan.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of `epoch`; a no-op when already in it (see the class docstring)."""
        if not 0 <= epoch <= self.plan.epochs:
            raise ValueError(f"epoch {epoch} is outside the plan's {self.plan.epochs} epochs")
        if epoch != self.epoch:
            self.epoch, self.batch = epoch, 0
        if self._iterating != epoch:
            self._iterating = None

    def seek(self, step: int) -> None:
        """Go to global optimizer step `step` (0-based): its batch is the next one handed out."""
        self.epoch, self.batch = self._position(step)
        self._iterating = None

    def _position(self, step: int) -> tuple[int, int]:
        """(epoch, batch in epoch) of global optimizer step `step`; the plan's end at its end."""
        if step == self.plan.updates:
            return self.plan.epochs, 0
        where = at_step(self.plan, step)
        return where.epoch, where.step_in_epoch

    def handed_out(self) -> int:
        """Global optimizer steps whose batches this sampler has handed out (its position)."""
        if self.epoch >= self.plan.epochs:
            return self.plan.updates
        return self.plan.updates_before(self.epoch) + self.batch

    def __len__(self) -> int:
        """Batches in the epoch the latest `iter()` walks (whole, however far it got, and
        even when DataLoader workers have drawn all of it already) until `set_epoch`, `seek`
        or `load_state_dict` moves on; before any `iter()`, in the current epoch."""
        epoch = self.epoch if self._iterating is None else self._iterating
        if epoch >= self.plan.epochs:
            return 0
        return self.batches_in_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's index lists for the rest of the current epoch, one per optimizer step."""
        self._workers = _loader_workers(sys._getframe(1))
        self._iterating = self.epoch
        return self._rest_of_epoch()

    def _rest_of_epoch(self) -> Iterator[list[int]]:
        epoch = self.epoch
        if epoch >= self.plan.epochs:
            return
        order = self._permutation(epoch)
        batch_size = self.plan.phase_at(epoch).batch_size
        count = self.batches_in_epoch(epoch)
        while self.epoch == epoch and self.batch < count:
            k = self.batch
            start = k * batch_size
            global_batch = order[start : min(start + batch_size, self.plan.train_size)]
            share = len(global_batch) // self.world_size
            mine = global_batch[self.rank * share : (self.rank + 1) * share]
            # The position moves before the yield, so a state_dict() taken while this batch
            # trains already points at the next one; finishing an epoch enters the next.
            if k + 1 == count:
                self.epoch, self.batch = epoch + 1, 0
            else:
                self.batch = k + 1
            yield mine.tolist()

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_permutation(self.seed, epoch, self.plan.train_size))
        return self._order[1]

    def state_dict(self, steps_done: int | None = None) -> dict[str, int]:
        """The position to resume from and what it is valid for; plain ints, safe to torch.save.

        `steps_done`: the optimizer steps taken so far (`PlanLR.steps_done`); the state is then
        the position of the next step, however far the DataLoader fetched ahead. Without it, the
        state is the next batch to hand out, refused (ValueError) when the DataLoader that
        iterated this sampler has workers, since they fetch ahead of training.
        """
        handed_out = self.handed_out()
        if steps_done is None:
            if self._workers:
                raise ValueError(
                    f"sampler state: the DataLoader has {self._workers} workers, which fetch "
                    "batches ahead of training, so the batches handed out are not the steps "
                    "taken; save state_dict(steps_done=N) with the optimizer steps taken "
                    "(PlanLR.steps_done)"
                )
            step = handed_out
        elif not 0 <= steps_done <= handed_out:
            raise ValueError(
                f"sampler state: steps_done={steps_done}, but the sampler has handed out "
                f"{handed_out} batches; pass the optimizer steps taken (PlanLR.steps_done)"
            )
        else:
            step = steps_done
        epoch, batch = self._position(step)
        return {
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "seed": self.seed,
            "train_size": self.plan.train_size,
            "updates": self.plan.updates,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state`; ValueError if it was saved for another seed or plan."""
        for key, mine in (
            ("seed", self.seed),
            ("train_size", self.plan.train_size),
            ("updates", self.plan.updates),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"sampler state has {key} {state[key]}, this sampler {mine}: "
                    "resume with the seed and plan the state was saved with"
                )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._iterating = None


def _loader_workers(frame: FrameType | None) -> int:
    """Worker processes of the torch DataLoader iterator whose frame called `iter()` on the
    sampler (its `__init__` or `_reset`), or 0: the guard that refuses a position saved ahead
    of training. Best effort: a loader other than torch's counts as having none."""
    caller = frame.f_locals.get("self") if frame is not None else None
    base = getattr(torch.utils.data.dataloader, "_BaseDataLoaderIter", None)
    if base is None or not isinstance(caller, base):
        return 0
    return int(getattr(caller, "_num_workers", 0) or 0)
