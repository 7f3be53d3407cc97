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

import contextlib
from collections.abc import Iterator

import torch

from harness.core.execution import Execution
from harness.data.device import DeviceData
from harness.data.source import DataSource, StepBatch
from harness.models.ghost_bn import accumulate_running_stats, precise_running_stats
from harness.train.losses import summed_correct, summed_loss
from harness.train.noise import NoiseMeter
from harness.train.replica import Replica
from harness.train.runtime import at_least_fp32, autocast


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
    *,
    meter: NoiseMeter | None = None,
    keep_grads: bool = False,
) -> torch.Tensor:
    """One optimizer update on the examples `indices`, as micro-batches of at most `micro`.

    Draws the step from `data.train_images` and runs `train_on`; the loop gets its steps from
    the data source instead (`epoch_batches`, which also shards them over processes): this
    entry point is for tests, benches and users' own loops, in one process.
    """
    images, labels = data.train_images(indices, generator)  # uint8: 3 KB per image
    step = StepBatch.split(images, labels, micro)
    return train_on(model, optimizer, data, step, precision, meter=meter, keep_grads=keep_grads)


def train_on(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DataSource,
    batch: StepBatch,
    precision: str,
    replica: Replica | None = None,
    meter: NoiseMeter | None = None,
    *,
    keep_grads: bool = False,
) -> torch.Tensor:
    """One optimizer update on `batch`, this process's share of a step, micro-batch by micro-batch.

    Each micro-batch's loss is its summed cross-entropy over the whole batch size, so the
    accumulated gradient is the mean over all B examples; batch-norm running statistics are
    updated once, after the last micro-batch, from all the step's ghost slices. With a
    `replica` (data parallelism, see harness.train.replica) this process's share of B / N
    examples is averaged with the others once, at its last micro-batch. Returns the (share
    of the) batch's mean loss, on the device. `meter`, when given, sees each micro-batch's
    accumulated gradient before the update (harness.train.noise).

    `keep_grads`: zero the ``.grad`` tensors in place instead of freeing them, so backward adds
    into them. The captured step (CUDA graph trees) needs it: a freed ``.grad`` would become
    the backward graph's output buffer itself, which the next micro-batch's replay overwrites
    (pytorch/pytorch#169545: accumulation silently wrong). 0 + g is g: no number changes.
    """
    device = data.device
    if keep_grads:
        _zero_grads_in_place(optimizer)
    else:
        optimizer.zero_grad(set_to_none=True)
    reduce = None if replica is None else replica.all_reduce
    # Every example weighs 1 / B: DDP averages the processes' gradients, so each process's
    # summed loss is scaled by N / B (uneven shares included; see harness.train.replica).
    world = 1 if replica is None else replica.world
    total = batch.step_size / world
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    with accumulate_running_stats(model, reduce):
        for i, (x_u8, y) in enumerate(batch.micro_batches):
            last = i + 1 == batch.count
            sync = contextlib.nullcontext() if replica is None else replica.no_sync(last)
            with sync:
                x = data.normalize(x_u8)
                with autocast(device, precision):
                    logits = model(x)
                loss = summed_loss(at_least_fp32(logits), y) / total
                loss.backward()
            loss_sum += loss.detach()
            if meter is not None:
                meter.after_backward(int(y.shape[0]), batch.size, batch.step_size)
    optimizer.step()
    return loss_sum


@torch.no_grad()
def _zero_grads_in_place(optimizer: torch.optim.Optimizer) -> None:
    """Every parameter's ``.grad`` a zeroed tensor of its own, allocated here (outside any CUDA
    graph's memory pool) the first time."""
    grads = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                grads.append(p.grad)
    if grads:
        torch._foreach_zero_(grads)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    data: DataSource,
    batch_size: int,
    precision: str,
    split: str = "test",
    replica: Replica | None = None,
    images: int | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy as a fraction) in eval mode, with running BN statistics.

    Per example as harness.train.losses says: for a language model the mean loss per token
    (nats) and next-token accuracy.

    `split` "test" is the test set; "train" the training set without augmentation (the
    training loss the paper plots, not the mean of augmented train-mode minibatch losses):
    its first `images` images (None: all), the same ones at every call.
    With a `replica`, each process evaluates every N-th batch and the sums are all-reduced.

    Under `torch.inference_mode`, not `no_grad`: no tensor made here needs autograd's
    version counters or view tracking, and none outlives the call but as a plain value (the
    audit's float64 losses, read by functional ops only). Same kernels, same numbers
    (tests/test_eval_mode.py). The batch size (`execution.eval_batch_size`) stays the
    caller's: a smaller one would need smaller transient activations but sum the loss in
    another order, and may pick other convolution kernels, so it is a suite's choice.
    """
    shard = None if replica is None else replica.shard()
    rank, world = (0, 1) if shard is None else (shard.rank, shard.world)
    model.eval()
    device = data.device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    batches = data.train_eval_batches if split == "train" else data.test_batches
    n = data.n_train if split == "train" else data.n_test
    if split == "train" and images is not None:
        n = min(n, images)
    for j, (x, y) in enumerate(
        batches(batch_size) if shard is None else batches(batch_size, shard)
    ):
        start = (rank + j * world) * batch_size  # this batch's first image
        if start >= n:
            break
        x, y = x[: n - start], y[: n - start]
        with autocast(device, precision):
            logits = model(x)
        loss += summed_loss(logits.float(), y).double()
        correct += summed_correct(logits, y)
    if replica is not None:
        replica.all_reduce([loss, correct])
    # The one host sync of an evaluation.
    return float(loss) / n, float(correct) / n


def precise_bn_stats(
    model: torch.nn.Module,
    data: DataSource,
    images: int,
    ghost: int,
    batch_size: int,
    precision: str,
    replica: Replica | None = None,
) -> None:
    """Recompute `model`'s batch-norm running statistics from the first `images` training
    images (all of them if fewer), unaugmented (`train_eval_batches`), in ghost slices of
    `ghost` (the last one smaller where `images` is not a multiple): each layer's statistics
    become the mean over the slices of each slice's mean and unbiased variance
    (harness.models.ghost_bn.precise_running_stats). Same images at every call, so the
    statistics are a function of the weights alone. The buffers are replaced, not restored:
    the evaluation that follows, and the checkpoint, hold them.

    `model` is the unwrapped module (not DDP's wrapper, which would broadcast buffers). With
    a `replica` each process forwards every world-th batch (its share, as evaluation does) and
    the moments and slice counts are all-reduced before the division, so every process ends
    with the same buffers. Forwards run in train mode under a forked RNG, so a dropout layer
    draws nothing from the training's streams.
    """
    chunk = max(ghost, batch_size // ghost * ghost)  # whole ghost slices per forward
    limit = min(images, data.n_train)
    shard = None if replica is None else replica.shard()
    rank, world = (0, 1) if shard is None else (shard.rank, shard.world)
    device = data.device

    def inputs() -> Iterator[torch.Tensor]:
        batches = data.train_eval_batches(chunk, shard)
        for j, (x, _) in enumerate(batches):
            start = (rank + j * world) * chunk
            if start >= limit:
                break
            yield x[: limit - start]

    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), autocast(device, precision):
        reduce = None if replica is None else replica.all_reduce
        precise_running_stats(model, inputs(), reduce)
