"""The gradient noise scale B_simple, measured while training, from gradients the step has.

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training", Appendix A): with the
squared norm of a minibatch gradient at two batch sizes b < B, the unbiased estimates of the
true gradient's squared norm |G|^2 and of the per-example covariance's trace tr(Sigma) are

    S_est    = (|G_b|^2 - |G_B|^2) / (c_b - c_B)
    |G|^2_est = |G_B|^2 - c_B * S_est

with c_b = 1/b for examples drawn with replacement (the paper's formulas). The harness draws
a step's examples *without* replacement from N (a permutation per epoch), so the variance of a
b-example mean is tr(Sigma)/b * (N - b)/(N - 1): c_b = (N/b - 1)/(N - 1) here (the same
N/B - 1 as in the paper's noise scale g). For B << N the two agree; at B = N/5 the with-
replacement formula would understate |G|^2 by about S/N, i.e. B_simple/N relative. Sigma is the
population covariance of the N per-example gradients. B_simple = tr(Sigma) / |G|^2 is the
batch size around which the returns of a larger batch start to diminish (the critical batch
size B_crit is about B_simple when the Hessian is well conditioned).

Where the two batch sizes come from: a step of B examples runs as micro-batches of b, each
backward adding (b/B) g_b to ``.grad``. After the first micro-batch ``.grad`` is that
increment; after micro-batch i the increment is ``.grad`` minus a copy kept from micro-batch
i - 1 (one buffer the size of the parameters; `torch._foreach_*` ops, a handful of kernels per
micro-batch). After the last micro-batch ``.grad`` is G_B itself, read before the optimizer
update. Every micro-batch of the step is a small-batch sample, so a step of k micro-batches
gives k samples of |G_b|^2 and one of |G_B|^2. Ghost batch norm makes a micro-batch's gradient
exactly the gradient of its own examples' loss (its statistics come from its own ghost slices).

The gradients are of the data loss only: the optimizer applies weight decay, so ``.grad``
holds no L2 term (which has no noise anyway). With momentum or Adam the estimate is still of
the raw gradient's noise, not of the update's.

A step that runs as one micro-batch has no small gradient: with the meter on, `step_micro_
batch` splits such a step into the fewest equal micro-batches of whole ghost slices (two,
where the slice count is even). With ghost batch norm and once-per-step running statistics
that changes nothing but the order of float summation (as `max_micro_batch` does); its cost
is the cost of running smaller micro-batches, measured by scripts/noise_overhead.py. A step
of a single ghost slice cannot be split: its epoch's estimates are NaN.

Epoch averages: the per-step squared norms are summed on the device, keyed by (b, B), and read
once per epoch (one host sync, after the loss's). Each key's mean |G_b|^2 and |G_B|^2 give
its S and |G|^2; they are averaged over the keys weighted by their small-batch samples, and
B_simple is the ratio of the averages, never an average of per-step ratios (each step's
estimates are unbiased, their ratio is not). Where the averaged |G|^2 is not positive (noise
swamps the gradient) B_simple is NaN; the two components are kept for re-aggregation.

Data parallelism. With DDP and ``no_sync`` on all but the last micro-batch, a process's
micro-batch increments before the last are its own examples' gradients, and after the last
backward ``.grad`` is the all-reduced step gradient over all W processes. The last
micro-batch's own increment is read by `comm_hook` (registered on the DDP module), which sees
each gradient bucket as this process computed it, before the all-reduce: the bucket minus the
copy kept from the micro-batch before. So under a `Replica` every micro-batch of every
process is a small-batch sample (b, B), a process's share of one micro-batch included, and
the reduced ``.grad`` is the big one (B, the whole step). At the epoch's end the processes'
sums are pooled (`pool`, an all-gather), so every process reads the same estimate from the
samples one process would have taken, whose micro-batches cover the same examples (up to
float summation order). `step_micro_batch` splits a share of two ghost slices or more in two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from harness.core.epoch_record import NoiseReading

__all__ = ["NoiseMeter", "noise_estimates"]


def _variance_factor(batch: float, train_size: int | None) -> float:
    """Var(mean of `batch` examples) / tr(Sigma): without replacement from N, or with it."""
    if train_size is None:
        return 1.0 / batch
    if train_size <= 1:
        raise ValueError(f"train_size {train_size}: need at least two examples")
    return (train_size / batch - 1.0) / (train_size - 1.0)


def noise_estimates(
    small_sq: float, small_batch: float, big_sq: float, big_batch: float, train_size: int | None
) -> tuple[float, float]:
    """(tr(Sigma), |G|^2) from mean squared gradient norms at batch sizes small < big.

    `train_size` N: the batches are drawn without replacement from N examples (the harness);
    None: with replacement (McCandlish et al.'s formulas as printed).
    """
    if not 0 < small_batch < big_batch:
        raise ValueError(f"need 0 < small batch < big batch, got {small_batch}, {big_batch}")
    c_small = _variance_factor(small_batch, train_size)
    c_big = _variance_factor(big_batch, train_size)
    trace = (small_sq - big_sq) / (c_small - c_big)
    return trace, big_sq - c_big * trace


def _squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squares of every element, on the device, without a host sync."""
    return torch.stack(torch._foreach_norm(tensors)).square().sum()


class NoiseMeter:
    """Accumulates small- and big-batch squared gradient norms; one result per epoch.

    Call `after_backward(examples, step_examples)` after every micro-batch's backward, before
    the optimizer update (train_step does); `end_epoch()` reads the sums once and resets them.
    Nothing here reads a device value on the host except `end_epoch`.
    """

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        train_size: int | None,
        world: int = 1,
        pool: Callable[[object], list[object]] | None = None,
    ) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.train_size = train_size
        self.world = world  # processes of a data-parallel job (see the module docstring)
        self.pool = pool  # every process's epoch sums, gathered (Replica.all_gather)
        self._previous: list[torch.Tensor] | None = None
        self._index: dict[int, int] = {}  # id(parameter) -> its place in _previous
        self._hooked: torch.Tensor | None = None  # |last increment|^2, from comm_hook
        self._seen = 0  # examples of the current step whose backward has run
        self._small: dict[tuple[int, int], torch.Tensor] = {}  # (b, B) -> sum |G_b|^2
        self._small_n: dict[tuple[int, int], int] = {}
        self._big: dict[int, torch.Tensor] = {}  # B -> sum |G_B|^2
        self._big_n: dict[int, int] = {}

    def _accumulate(self, table: dict, counts: dict, key: object, value: torch.Tensor) -> None:
        value = value.to(torch.float32 if value.device.type == "mps" else torch.float64)
        if key in table:
            table[key] += value
        else:
            table[key] = value.clone()
        counts[key] = counts.get(key, 0) + 1

    def add_small(self, squared_norm: torch.Tensor, batch: int, step_batch: int) -> None:
        """One sample of |G_b|^2, the mean gradient of `batch` examples of a `step_batch` step."""
        self._accumulate(self._small, self._small_n, (batch, step_batch), squared_norm)

    def add_big(self, squared_norm: torch.Tensor, step_batch: int) -> None:
        """One sample of |G_B|^2, the whole step's mean gradient."""
        self._accumulate(self._big, self._big_n, step_batch, squared_norm)

    def after_backward(
        self, examples: int, step_examples: int, step_batch: int | None = None
    ) -> None:
        """The backward of a micro-batch of `examples` (of this process's `step_examples`) ran.

        ``.grad`` holds the sum of the step's micro-batch increments so far, each
        (b·W/B) g_b with B = `step_batch` the whole step over W processes (B = `step_examples`
        in one process).
        """
        step_batch = step_examples if step_batch is None else step_batch
        hooked, self._hooked = self._hooked, None
        if examples >= step_batch:
            return  # a step of one micro-batch: no second batch size to compare with
        grads = [p.grad for p in self.parameters if p.grad is not None]
        first = self._seen == 0
        self._seen += examples
        last = self._seen >= step_examples
        scale = (step_batch / (self.world * examples)) ** 2  # |increment|^2 -> |g_b|^2
        big = step_batch  # the whole step, over every process
        if last and self.world > 1:
            # .grad holds the other processes' gradients too: the increment is comm_hook's.
            if hooked is not None:
                self.add_small(hooked * scale, examples, big)
        elif first:
            self.add_small(_squared_norm(grads) * scale, examples, big)
        else:
            assert self._previous is not None
            torch._foreach_sub_(self._previous, grads)  # minus this micro-batch's increment
            self.add_small(_squared_norm(self._previous) * scale, examples, big)
        if last:
            self.add_big(_squared_norm(grads), big)
            self._seen = 0
        elif self._previous is None or len(self._previous) != len(grads):
            self._previous = [g.detach().clone() for g in grads]
            with_grad = [p for p in self.parameters if p.grad is not None]
            self._index = {id(p): i for i, p in enumerate(with_grad)}
        else:
            torch._foreach_copy_(self._previous, grads)

    def ddp_hook(self) -> Callable[[object, Any], torch.futures.Future[torch.Tensor]]:
        """`comm_hook` as DistributedDataParallel.register_comm_hook takes it: that check
        refuses annotations that are not its own types (and here they are strings)."""
        return lambda state, bucket: self.comm_hook(state, bucket)

    def comm_hook(self, state: object, bucket: Any) -> torch.futures.Future[torch.Tensor]:
        """DDP's communication hook: the squared norm of this process's last micro-batch
        increment, bucket by bucket, read before DDP's own all-reduce (which it then runs).
        DDP calls it only on a step's last backward (the others run under ``no_sync``)."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        grads = bucket.gradients()
        if self._seen and self._previous is not None:
            before = [self._index.get(id(p)) for p in bucket.parameters()]
            grads = [g if i is None else g - self._previous[i] for g, i in zip(grads, before)]
        squared = _squared_norm(grads)
        self._hooked = squared if self._hooked is None else self._hooked + squared
        return allreduce_hook(state, bucket)  # type: ignore[arg-type]

    def state(self) -> dict[str, list[list[Any]]]:
        """The epoch's sums so far, between two steps (a mid-epoch checkpoint): plain lists,
        since a checkpoint's dict keys are strings or ints, not tuples. With a `pool` they are
        every process's, pooled (a collective: every process calls it), so that the one
        process that restores them (`restore`, rank 0) carries the whole job's samples."""
        if self.pool is None:
            return {
                "small": [[b, B, self._small[b, B], self._small_n[b, B]] for b, B in self._small],
                "big": [[big, self._big[big], self._big_n[big]] for big in self._big],
            }
        small, big = self._sums()
        device = self.parameters[0].device if self.parameters else torch.device("cpu")
        dtype = torch.float32 if device.type == "mps" else torch.float64

        def tensor(value: float) -> torch.Tensor:
            return torch.tensor(value, dtype=dtype, device=device)

        return {
            "small": [[b, B, tensor(t), n] for (b, B), (t, n) in small.items()],
            "big": [[key, tensor(t), n] for key, (t, n) in big.items()],
        }

    def restore(self, state: dict[str, list[list[Any]]]) -> None:
        self._small = {(int(b), int(big)): t.clone() for b, big, t, _ in state["small"]}
        self._small_n = {(int(b), int(big)): int(n) for b, big, _, n in state["small"]}
        self._big = {int(big): t.clone() for big, t, _ in state["big"]}
        self._big_n = {int(big): int(n) for big, _, n in state["big"]}
        self._seen = 0

    def end_epoch(self) -> NoiseReading:
        """The epoch's reading (the record's part); NaN where nothing was measured."""
        small_sums, big_sums = self._sums()
        keys = [k for k in small_sums if k[1] in big_sums]
        result = NoiseReading(math.nan, math.nan, math.nan, None)
        if keys:
            traces, grads, weights = [], [], []
            for small, big in keys:
                total, count = small_sums[small, big]
                small_sq = total / count
                big_sq = big_sums[big][0] / big_sums[big][1]
                trace, grad_sq = noise_estimates(small_sq, small, big_sq, big, self.train_size)
                traces.append(trace)
                grads.append(grad_sq)
                weights.append(count)
            total = sum(weights)
            trace = sum(w * t for w, t in zip(weights, traces)) / total
            grad_sq = sum(w * g for w, g in zip(weights, grads)) / total
            result = NoiseReading(
                noise_b_simple=trace / grad_sq if grad_sq > 0 else math.nan,
                noise_trace=trace,
                noise_grad_sq=grad_sq,
                noise_small_batch=max(keys, key=lambda k: small_sums[k][1])[0],
            )
        self._small.clear()
        self._small_n.clear()
        self._big.clear()
        self._big_n.clear()
        self._seen = 0
        return result

    def _sums(
        self,
    ) -> tuple[dict[tuple[int, int], tuple[float, int]], dict[int, tuple[float, int]]]:
        """The epoch's (sum, count) per key, as host numbers, pooled over the processes when
        there is a `pool`: the one host sync of the meter (and its one collective)."""
        small_keys, big_keys = list(self._small), list(self._big)
        values: list[float] = []
        if small_keys or big_keys:
            tensors = [self._small[k] for k in small_keys] + [self._big[k] for k in big_keys]
            values = torch.stack(tensors).tolist()
        small = {k: (values[i], self._small_n[k]) for i, k in enumerate(small_keys)}
        big = {k: (values[len(small_keys) + i], self._big_n[k]) for i, k in enumerate(big_keys)}
        if self.pool is None:
            return small, big
        pooled: tuple[dict[Any, tuple[float, int]], dict[Any, tuple[float, int]]] = ({}, {})
        gathered: list[Any] = self.pool((small, big))
        for process in gathered:  # (small, big) of each process
            for table, part in zip(pooled, process, strict=True):
                for key, (total, count) in part.items():
                    was = table.get(key, (0.0, 0))
                    table[key] = (was[0] + total, was[1] + count)
        return pooled
