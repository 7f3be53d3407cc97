"""A plan in PyTorch Lightning: one callback that makes a `Trainer` take the plan's steps.

`PlanCallback(plan, seed=...)` owns the plan's `PlanBatchSampler` (`callback.sampler`, for the
train `DataLoader(dataset, batch_sampler=callback.sampler)`), and from the trainer it:

- gives the sampler its rank and world size at `setup` (DDP included) and its epoch at each
  `on_train_epoch_start` (Lightning's own `set_epoch` call never reaches a batch sampler);
- sets the plan's lr (and SGD's momentum) before every optimizer step, counting the steps;
- tells Lightning each epoch's length (its loop otherwise keeps the first epoch's `len()` for
  every epoch, which cuts an epoch that has more batches and skips end-of-epoch validation of
  one that has fewer);
- saves the optimizer steps taken, and the sampler's position at that step, in Lightning's
  checkpoint (`state_dict`), so `fit(ckpt_path=...)` resumes at the next planned step, from a
  mid-epoch checkpoint or an end-of-epoch one, with any `num_workers`;
- refuses, in one line naming the `Trainer` argument, what would break the plan
  (`use_distributed_sampler=True` under DDP, `max_epochs` other than `plan.epochs`, gradient
  accumulation, `limit_train_batches`, `reload_dataloaders_every_n_epochs`, a second
  optimizer or an lr scheduler), and raises
  (RuntimeError) at an epoch's end, or training's, if Lightning ran other steps than planned.

`trainer.estimated_stepping_batches` is Lightning's `len(first epoch's loader) x max_epochs`,
capped by `max_steps`: not the plan's count, since the plan's epochs differ in length (for an
increasing batch it is too high). The callback warns at `on_train_start` when it differs;
size anything step-based by `callback.updates` (= `plan.updates`). `max_steps=plan.updates`
makes the estimate exact when no epoch has more batches than the first, but do not pass
`max_steps` to a run resumed from an end-of-epoch checkpoint: Lightning 2.6 then ends the
saved epoch twice and skips the plan's last epoch (the callback raises when it does).

Lightning is an optional extra (`pip install -e '.[lightning]'` in a clone); `import harness` never
imports this module, `harness.lightning` does on first use.
"""

from __future__ import annotations

import math
from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities import rank_zero_warn
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "harness.lightning needs PyTorch Lightning 2.x: "
        "pip install -e '.[lightning]' in the harness clone"
    ) from exc

from torch.optim import Optimizer

from harness.core.schedule import Plan
from harness.data.sampler import PlanBatchSampler
from harness.train.plan_lr import set_hyperparameters_at

__all__ = ["PlanCallback"]


class PlanCallback(pl.Callback):
    """Train `plan` in a Lightning `Trainer`: exactly `plan.updates` optimizer steps, each of
    the planned batch size, lr and momentum, resumed or not, in one process or under DDP.

    Use `DataLoader(dataset, batch_sampler=callback.sampler, ...)` as the train loader,
    `Trainer(max_epochs=plan.epochs, callbacks=[callback], use_distributed_sampler=False)`
    (the last only matters under DDP, where each rank takes its slice of every global batch),
    and no lr scheduler: the callback sets the lr itself. See docs/own-loop.md.
    """

    def __init__(self, plan: Plan, *, seed: int = 0) -> None:
        self.plan = plan
        self.seed = seed
        self.sampler = PlanBatchSampler(plan, seed=seed)
        self.steps_done = 0  # optimizer steps taken, resumed ones included
        self.epochs_ended = 0  # epochs whose end this run (or the one resumed) has seen

    @property
    def updates(self) -> int:
        """The plan's optimizer steps: what to size step-based schedules and logs by."""
        return self.plan.updates

    # --- before training -----------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_trainer(trainer)
        self.sampler.set_rank(trainer.global_rank, trainer.world_size)

    def _check_trainer(self, trainer: pl.Trainer) -> None:
        connector = getattr(trainer, "_accelerator_connector", None)
        distributed = getattr(connector, "is_distributed", trainer.world_size > 1)
        if distributed and getattr(connector, "use_distributed_sampler", True):
            _refuse(
                "pass Trainer(use_distributed_sampler=False): the plan's sampler gives each "
                "rank its slice of every global batch itself, and Lightning cannot wrap it"
            )
        if trainer.max_epochs != self.plan.epochs:
            _refuse(
                f"Trainer(max_epochs={trainer.max_epochs}), but the plan has "
                f"{self.plan.epochs} epochs; pass max_epochs=plan.epochs (stop early with "
                "max_steps)"
            )
        if trainer.accumulate_grad_batches != 1:
            _refuse(
                f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}): each "
                "batch of the plan is one optimizer step; split a batch too big for memory "
                "inside training_step (harness.micro_batches) and leave it at 1"
            )
        reload = getattr(trainer, "reload_dataloaders_every_n_epochs", 0)
        if reload:
            _refuse(
                f"Trainer(reload_dataloaders_every_n_epochs="
                f"{reload}): Lightning then opens the train "
                "loader twice an epoch and drops what the first opening's workers fetched; "
                "leave it 0 (the sampler changes the batch size itself)"
            )
        limit = trainer.limit_train_batches
        if limit is not None and (isinstance(limit, int) or limit != 1.0):
            _refuse(
                f"Trainer(limit_train_batches={limit}) would drop planned "
                "steps; realize a smaller plan instead (fewer epochs or train_size)"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            count = len(trainer.optimizers)
            _refuse(f"the plan drives one optimizer; configure_optimizers gave {count}")
        if trainer.lr_scheduler_configs:
            _refuse(
                "configure_optimizers returned an lr scheduler; remove it: the callback sets "
                "the plan's lr (and SGD momentum) before every optimizer step"
            )
        loader = trainer.train_dataloader
        if getattr(loader, "batch_sampler", None) is not self.sampler:
            _refuse(
                "the train DataLoader does not draw from this callback's sampler; build it as "
                "DataLoader(dataset, batch_sampler=callback.sampler, ...)"
            )
        if trainer.global_step != self.steps_done:
            _refuse(
                f"the trainer resumes at optimizer step {trainer.global_step} but the "
                f"callback's state is at step {self.steps_done}: resume from a checkpoint "
                "written with this PlanCallback"
            )
        self._hyperparams(trainer.optimizers[0])
        estimated = trainer.estimated_stepping_batches
        if estimated != self.plan.updates:
            rank_zero_warn(
                f"PlanCallback: trainer.estimated_stepping_batches is {estimated}, but the plan "
                f"takes {self.plan.updates} optimizer steps; size schedules by callback.updates"
            )

    # --- during training -----------------------------------------------------------------

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.sampler.set_epoch(epoch)
        if epoch >= self.plan.epochs:
            return
        # Lightning reads len() of the loader once, at the first epoch; this epoch's own
        # length keeps it from cutting the epoch short or missing its end.
        n = self.sampler.batches_in_epoch(epoch)
        fit_loop = trainer.fit_loop
        fit_loop.max_batches = n
        combined = getattr(fit_loop, "_combined_loader", None)
        if combined is not None:
            combined.limits = [n] * len(combined.flattened)
        interval = trainer.val_check_interval
        check = trainer.val_check_batch
        if isinstance(interval, float) and check is not None and not math.isinf(check):
            trainer.val_check_batch = max(1, int(n * interval))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        self._hyperparams(optimizer)
        self.steps_done += 1

    def _hyperparams(self, optimizer: Any) -> None:
        # A LightningOptimizer wraps the torch one (whose type says whether it is SGD).
        set_hyperparameters_at(
            getattr(optimizer, "optimizer", optimizer), self.plan, self.steps_done
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch < self.epochs_ended:
            raise RuntimeError(
                f"PlanCallback: Lightning ended epoch {epoch} again after resuming from its "
                "end-of-epoch checkpoint (it does so with Trainer(max_steps=...) set) and would "
                "skip the plan's last epoch; resume with max_steps=-1"
            )
        want = self.plan.updates_before(min(epoch + 1, self.plan.epochs))
        if self.steps_done != want and not (_stopped(trainer) and self.steps_done < want):
            raise RuntimeError(
                f"PlanCallback: epoch {epoch} ended at optimizer step {self.steps_done}, the "
                f"plan's at step {want}: Lightning did not take the sampler's batches as planned"
            )
        self.epochs_ended = epoch + 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps_done < self.plan.updates and not _stopped(trainer):
            raise RuntimeError(
                f"PlanCallback: training ended at optimizer step {self.steps_done} of the "
                f"plan's {self.plan.updates}, with no max_steps or stop asking for it"
            )

    # --- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The steps taken and the sampler's position at the next one (plain numbers)."""
        return {
            "steps_done": self.steps_done,
            "epochs_ended": self.epochs_ended,
            "sampler": self.sampler.state_dict(steps_done=self.steps_done),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at the saved step; ValueError if saved for another plan or seed."""
        self.sampler.load_state_dict(state_dict["sampler"])
        self.steps_done = int(state_dict["steps_done"])
        self.epochs_ended = int(state_dict["epochs_ended"])


def _stopped(trainer: pl.Trainer) -> bool:
    """Whether the user asked training to stop early: `max_steps` reached, or `should_stop`."""
    return bool(trainer.should_stop) or 0 <= trainer.max_steps <= trainer.global_step


def _refuse(message: str) -> None:
    raise ValueError(f"PlanCallback: {message}")
