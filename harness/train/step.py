"""One optimizer update and one evaluation pass: the code that runs on the device.

Contract of a step: a batch of B examples may run as micro-batches (each a whole number of
ghost batches) whose gradients add up to the gradient of the mean loss over all B examples;
with ghost batch norm that is the big batch's update exactly. The update count is the number
of optimizer steps, never of micro-batches.

Sync contract: nothing between the first micro-batch and the optimizer update reads a device
value on the host (no ``.item()``, ``float(t)``, ``bool(t)``, one-argument ``nonzero``/
``where``); the loss stays a device tensor that the caller reads once per epoch. A host sync
inside the step would stall the device queue every step (tests/test_train.py counts them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.data.device import DeviceData
from harness.models.ghost_bn import accumulate_running_stats
from harness.train.noise import NoiseMeter
from harness.train.runtime import at_least_fp32, autocast
from harness.train.spec import Execution


def micro_batch_size(batch: int, execution: Execution, ghost: int) -> int:
    """The largest micro-batch allowed: not above max_micro_batch, a multiple of the ghost size.

    A cap, not the size a step uses: see `step_micro_batch`.
    """
    limit = execution.max_micro_batch
    if limit is None or limit >= batch:
        return batch
    return max(ghost, limit // ghost * ghost)


def step_micro_batch(batch: int, execution: Execution, ghost: int) -> int:
    """The micro-batch size a step of `batch` examples runs with: the batch split evenly.

    Rule: a step of S = batch / ghost ghost slices runs as k equal micro-batches, k the
    smallest divisor of S with batch / k <= `micro_batch_size` (so k >= ceil(batch / cap)).
    Every micro-batch then has one shape (one compiled graph per phase, no remainder shape
    compiling inside a timed epoch). k can exceed ceil(batch / cap) when S has few divisors
    (S = 7 slices under a cap of 3 slices: k = 7, micro-batches of one slice), never the cap.
    A batch that is not a whole number of ghost slices is not split.

    With `execution.noise_scale` a step is never one micro-batch when it has two ghost slices
    or more (k >= 2): the noise meter needs a second batch size (harness.train.noise).
    """
    cap = micro_batch_size(batch, execution, ghost)
    split = execution.noise_scale and batch % ghost == 0 and batch >= 2 * ghost
    if (cap >= batch and not split) or batch % ghost:
        return batch
    slices = batch // ghost
    k = max(-(-batch // cap), 2 if split else 1)
    while slices % k:
        k += 1
    return batch // k


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    indices: torch.Tensor,
    micro: int,
    generator: torch.Generator,
    precision: str,
    meter: NoiseMeter | None = None,
) -> torch.Tensor:
    """One optimizer update on the examples `indices`, as micro-batches of at most `micro`.

    Each micro-batch's loss is its summed cross-entropy over the whole batch size, so the
    accumulated gradient is the mean over all B examples; batch-norm running statistics are
    updated once, after the last micro-batch, from all the step's ghost slices. A data-parallel
    rank would take its slice of `indices` here. `meter`, when given, sees each micro-batch's
    accumulated gradient before the update (harness.train.noise). Returns the batch's mean
    loss, on the device.
    """
    device = indices.device
    optimizer.zero_grad(set_to_none=True)
    total = indices.numel()
    loss_sum = torch.zeros((), device=device)
    images, labels = data.train_images(indices, generator)  # uint8: 3 KB per image
    with accumulate_running_stats(model):
        for x_u8, y in zip(images.split(micro), labels.split(micro)):
            x = data.normalize(x_u8)
            with autocast(device, precision):
                logits = model(x)
            loss = F.cross_entropy(at_least_fp32(logits), y, reduction="sum") / total
            loss.backward()
            loss_sum += loss.detach()
            if meter is not None:
                meter.after_backward(y.numel(), total)
    optimizer.step()
    return loss_sum


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: DeviceData,
    batch_size: int,
    precision: str,
    split: str = "test",
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy as a fraction) in eval mode, with running BN statistics.

    `split` "test" is the test set; "train" the whole training set without augmentation (the
    training loss the paper plots, not the mean of augmented train-mode minibatch losses).
    """
    model.eval()
    device = data.device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    batches = data.train_eval_batches if split == "train" else data.test_batches
    for x, y in batches(batch_size):
        with autocast(device, precision):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
    n = data.n_train if split == "train" else data.n_test
    # The one host sync of an evaluation.
    return float(loss) / n, int(correct) / n
