"""Ghost batch norm: batch norm whose statistics come from fixed-size slices of the batch.

With every normalization a ghost batch norm, a model's gradient for one ghost slice does not
depend on how many slices share the batch (Smith et al. 2018, section 5.1; Hoffer et al. 2017).
That is what lets a step of B examples run as micro-batches whose gradients are averaged: each
micro-batch is a whole number of ghost slices.

Speed: on the CPU, each of the S ghost slices of a micro-batch is a contiguous block of the
input (dim 0 is outermost in NCHW and in channels-last storage), so each is normalized by one
native ``F.batch_norm`` call on a view and the S outputs are joined by one ``torch.cat`` (whose
backward is views; the input's gradient is joined by one cat too): S kernels and one copy each
way. Before (issue 46) the slices were laid side by side as extra channels, (S·g, C, H, W) →
(g, S·C, H, W), for one kernel, with a layout transpose in and out each way: 5.9 % of a
small_cnn step at B = 128 / ghost 32 and a `copy_` 12.7 % at B = 512 / ghost 128. That
one-kernel path is kept where the two are not known to agree bit for bit (CUDA, some
channels-last shapes: `_per_slice_is_exact`). With S = 1 both are exactly ``nn.BatchNorm2d``'s
kernel, with no copy.

Running statistics (used at evaluation) -- default: **once-per-step EMA**; precise BN is an
option (`training.bn_stats: precise`). Inside `accumulate_running_stats(model)` each forward
only *adds* its slices' moments to a per-layer sum; on leaving the block (the train step does so
after its last micro-batch) every layer updates its running averages once, from the mean over
all of the step's slices. So the running statistics are a function of the optimizer steps alone,
never of ``max_micro_batch`` (an execution setting), as docs/ARCHITECTURE.md's "Semantics every
layer shares" requires; and they cost nothing at evaluation. With a few steps an epoch (B =
16000 on CIFAR-10: 3) the average lags the weights. `precise_running_stats` (driven by
harness.train.step.precise_bn_stats before each evaluation, as pycls's precise BN) instead
*replaces* the running statistics by the mean over the ghost slices of a fixed set of
unaugmented training images (the first `bn_stats_images`) of each slice's mean and unbiased
variance: a function of the weights alone. It is not the default because the paper does not say
it recomputes statistics and it adds forward passes to every evaluation. Measured on
suites/smoke.yaml's largest-batch cell (increasing_batch, B up to 512, 9 steps in its last
epoch; 1000 test images): see the comment at its `training:` block.
Outside that block (a user's own loop, or these modules on their own) each training forward
updates the running statistics at once, as ``nn.BatchNorm2d`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that, in training, normalizes each slice of ``ghost_size`` examples alone.

    Training-mode contract, for an input of N examples:

    * The batch is cut along dim 0 into contiguous slices of ``ghost_size`` examples. If N is not
      a multiple of ``ghost_size`` the leftover examples form one extra, smaller slice; if
      ``N <= ghost_size`` the whole batch is one slice.
    * Each slice is normalized with its own mean and biased variance over (examples, H, W), so
      output and gradients equal those of ``nn.BatchNorm2d`` applied to that slice alone.
    * Running statistics are updated, with ``momentum`` as in ``nn.BatchNorm2d``, from the
      *unweighted mean over slices* of each slice's mean and of each slice's **unbiased**
      variance (a remainder slice counts as one slice like the others): once per forward call
      normally, once per block inside `accumulate_running_stats` (see the module docstring).

    Eval mode (with running statistics) is exactly ``nn.BatchNorm2d``. Statistics are computed
    in float32 whatever the input dtype (bf16 under autocast), and the output has the input's
    dtype. Channels-last inputs stay channels-last.
    """

    _sum_mean: Tensor
    _sum_var: Tensor
    _slices: Tensor

    def __init__(
        self,
        num_features: int,
        ghost_size: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )
        if ghost_size < 1:
            raise ValueError(f"ghost_size must be a positive integer, got {ghost_size}")
        self.ghost_size = ghost_size
        # Sums of the slices' moments since the last update, and how many slices they hold.
        # Not persistent: they are empty at every step boundary, so checkpoints never need them.
        for name, shape in (("_sum_mean", (num_features,)), ("_sum_var", (num_features,))):
            zeros = torch.zeros(shape, device=device, dtype=dtype)
            self.register_buffer(name, zeros, persistent=False)
        # Shape (1,), not a 0-d tensor: torch.compile (inductor, CPU, torch 2.13) drops an in-place
        # add to a 0-d float64 buffer, which made a compiled float64 cell's statistics wrong.
        self.register_buffer("_slices", torch.zeros(1, device=device, dtype=dtype), False)
        self.defer_running_stats = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_size={self.ghost_size}"

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training and self.running_mean is not None:
            return self._eval_forward(input)
        return self._ghost_forward(input)

    def _eval_forward(self, x: Tensor) -> Tensor:
        assert self.running_mean is not None and self.running_var is not None
        out = F.batch_norm(
            self._compute_input(x),
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            False,
            0.0,
            self.eps,
        )
        return out.to(x.dtype)

    def _compute_input(self, x: Tensor) -> Tensor:
        # At least float32 (float64 stays float64 so exactness tests can be tight). CUDA's
        # kernel takes a bf16 input with float32 parameters and statistics directly; other
        # backends do not accept every such mix, so there the input goes through float32.
        dtype = torch.promote_types(x.dtype, torch.float32)
        if x.dtype == dtype or (x.device.type == "cuda" and x.dtype == torch.bfloat16):
            return x
        return x.to(dtype)

    def _ghost_forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            xc = self._compute_input(x)
            if _per_slice_is_exact(xc, self.ghost_size):
                y, means, unbiased_vars = self._per_slice(xc)
            else:
                y, means, unbiased_vars = self._one_kernel(xc)
        if self.training and self.track_running_stats:
            self._accumulate(means, unbiased_vars)
            if not self.defer_running_stats:
                self.commit_running_stats()
        return y.to(x.dtype)

    def _per_slice(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalize ``x`` per ghost slice, one kernel per slice (the module docstring).

        Returns the output (N, C, H, W) in x's dtype and layout and, per slice, the mean and
        unbiased variance as (S, C) float tensors detached from the graph.
        """
        n, c = x.shape[:2]
        slices = x.split(self.ghost_size)  # views: contiguous blocks of x in either layout
        s = len(slices)
        full = s if n % self.ghost_size == 0 else s - 1  # slices of ghost_size examples
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        # With momentum 1 and zero-filled running buffers, batch_norm leaves in them exactly
        # each channel's batch mean and *unbiased* variance: the slice's moments, for free.
        # Each slice writes its own row.
        mean = torch.zeros(s, c, device=x.device, dtype=stat_dtype)
        var = torch.zeros(s, c, device=x.device, dtype=stat_dtype)
        if s == 1:
            y = F.batch_norm(x, mean[0], var[0], self.weight, self.bias, True, 1.0, self.eps)
            return y, mean, var
        # The full slices take one weight (bias) row each, from one `repeat` (whose backward
        # sums their gradients over the (S, C) view), and a remainder the weight itself: the
        # gradients are summed in the one-kernel version's order, so to its bits.
        weights = _rows(self.weight, full)
        biases = _rows(self.bias, full)
        outs = [
            F.batch_norm(xk, mean[k], var[k], weights[k], biases[k], True, 1.0, self.eps)
            for k, xk in enumerate(slices[:full])
        ]
        if full < s:
            last = slices[-1]
            outs.append(
                F.batch_norm(last, mean[-1], var[-1], self.weight, self.bias, True, 1.0, self.eps)
            )
        y = torch.cat(outs)
        if _is_channels_last(x) and not y.is_contiguous(memory_format=torch.channels_last):
            # One-example slices have an ambiguous layout, and cat may then pick NCHW.
            y = y.contiguous(memory_format=torch.channels_last)
        return y, mean, var

    def _one_kernel(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`_per_slice`'s result from the full slices laid side by side as channels, (S·g, C,
        H, W) → (g, S·C, H, W), in one kernel, and a remainder in another, written into one
        buffer shaped like x: a layout copy in and out each way (see `_per_slice_is_exact`)."""
        n = x.shape[0]
        g = min(self.ghost_size, n)
        full = (n // g) * g
        if full == n:
            return self._side_by_side(x, g)
        # torch.cat would not do: a one-example remainder has an ambiguous layout and makes
        # it drop channels-last.
        y_full, m_full, v_full = self._side_by_side(x[:full], g)
        y_rest, m_rest, v_rest = self._side_by_side(x[full:], n - full)
        y = torch.empty_like(x, dtype=y_full.dtype)
        y[:full] = y_full
        y[full:] = y_rest
        return y, torch.cat([m_full, m_rest]), torch.cat([v_full, v_rest])

    def _side_by_side(self, x: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
        """Normalize ``x`` (a multiple of ``g`` examples) per slice of ``g``, in one kernel."""
        n, c = x.shape[:2]
        s = n // g
        channels_last = s > 1 and _is_channels_last(x)
        xg = _slices_as_channels(x, s, channels_last)
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        mean = torch.zeros(s * c, device=x.device, dtype=stat_dtype)
        var = torch.zeros(s * c, device=x.device, dtype=stat_dtype)
        weight = self.weight if self.weight is None or s == 1 else self.weight.repeat(s)
        bias = self.bias if self.bias is None or s == 1 else self.bias.repeat(s)
        yg = F.batch_norm(xg, mean, var, weight, bias, True, 1.0, self.eps)
        y = _channels_as_slices(yg, s, channels_last)
        return y, mean.view(s, c), var.view(s, c)

    @torch.no_grad()
    def _accumulate(self, means: Tensor, unbiased_vars: Tensor) -> None:
        self._sum_mean.add_(means.sum(0).to(self._sum_mean.dtype))
        self._sum_var.add_(unbiased_vars.sum(0).to(self._sum_var.dtype))
        self._slices.add_(means.shape[0])

    @torch.no_grad()
    def commit_running_stats(self) -> None:
        """Move the running averages one step towards the mean of the slices seen since the
        last commit, and forget those slices. Runs on the device: no host sync."""
        if self.running_mean is None or self.running_var is None:
            return
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        count = self._slices.clamp(min=1)
        # momentum=None means a cumulative moving average, as in nn.BatchNorm2d; its factor is
        # a device tensor so that reading it is not a sync.
        factor: float | Tensor = (
            1.0 / self.num_batches_tracked.to(self.running_mean.dtype)
            if self.momentum is None
            else self.momentum
        )
        self.running_mean.lerp_((self._sum_mean / count).to(self.running_mean.dtype), factor)
        self.running_var.lerp_((self._sum_var / count).to(self.running_var.dtype), factor)
        self.discard_pending_stats()

    @torch.no_grad()
    def discard_pending_stats(self) -> None:
        self._sum_mean.zero_()
        self._sum_var.zero_()
        self._slices.zero_()


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _per_slice_is_exact(x: Tensor, ghost: int) -> bool:
    """Whether `_per_slice` is known to give `_one_kernel`'s bits (outputs, moments, every
    gradient), so it may replace it: on the CPU, NCHW always; channels-last only with whole
    slices and rows of channels that fill 64-byte vectors (C = 16k in float32, 8k in float64).

    Otherwise the one-kernel path stays until a decision (issue 46): on CUDA nobody has
    compared the two yet (cuDNN kernels; and there a launch per slice may cost more than the
    copies); in channels-last, the input's gradient moved by 1-2 ulp with C = 3, 4, 5, 12 in
    float32 (vectorized tails), and with a remainder slice every gradient of the layer moved
    (autograd hands the old assembly's kernels an NCHW output gradient): up to 3.6e-7 in the
    input's and 6.9e-5 in the weight's on a 72-example float32 test.
    tests/test_ghost_bn_copies.py checks the cases taken here bit for bit.
    """
    if x.device.type != "cpu":
        return False
    if not _is_channels_last(x) or x.shape[0] <= ghost:
        return True
    return x.shape[0] % ghost == 0 and (x.shape[1] * x.element_size()) % 64 == 0


def _rows(t: Tensor | None, s: int) -> Sequence[Tensor | None]:
    """`t` (C,) as S rows (views of one repeated tensor; `t` itself when S = 1), or S Nones."""
    if t is None or s == 1:
        return [t] * s
    return t.repeat(s).view(s, -1).unbind(0)


def _slices_as_channels(x: Tensor, s: int, channels_last: bool) -> Tensor:
    """(S·g, C, H, W) → (g, S·C, H, W): slice k's channel j becomes channel k·C + j.

    One copy (none when S = 1); a channels-last input gives a channels-last result.
    """
    n, c, h, w = x.shape
    if s == 1:
        return x
    g = n // s
    if channels_last:
        # Storage [S][g][H][W][C] → [g][H][W][S][C], read back as channels-last (g, S·C, H, W).
        xs = x.permute(0, 2, 3, 1).reshape(s, g, h, w, c)
        return xs.permute(1, 2, 3, 0, 4).reshape(g, h, w, s * c).permute(0, 3, 1, 2)
    return x.view(s, g, c, h, w).transpose(0, 1).reshape(g, s * c, h, w)


def _channels_as_slices(y: Tensor, s: int, channels_last: bool) -> Tensor:
    """The inverse of `_slices_as_channels`, in the layout the input had."""
    if s == 1:
        return y
    g, sc, h, w = y.shape
    c = sc // s
    if channels_last:
        ys = y.permute(0, 2, 3, 1).reshape(g, h, w, s, c)
        return ys.permute(3, 0, 1, 2, 4).reshape(s * g, h, w, c).permute(0, 3, 1, 2)
    return y.view(g, s, c, h, w).transpose(0, 1).reshape(s * g, c, h, w)


def ghost_batch_norms(model: nn.Module) -> list[GhostBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, GhostBatchNorm2d)]


@contextlib.contextmanager
def accumulate_running_stats(
    model: nn.Module, reduce: Callable[[Sequence[Tensor]], None] | None = None
) -> Iterator[None]:
    """Within the block, forwards only collect their ghost slices' moments; on leaving it,
    every ghost batch norm of `model` updates its running statistics once, from all of them.

    The block is one optimizer step: so the running statistics do not depend on how the step
    was cut into micro-batches. If the block raises, the collected moments are dropped.
    ``reduce`` (data parallelism) sums the collected moments and slice counts in place across
    processes before the update, so every process moves to the mean over all the step's slices.
    """
    layers = ghost_batch_norms(model)
    for layer in layers:
        layer.defer_running_stats = True
    try:
        yield
    except BaseException:
        for layer in layers:
            layer.discard_pending_stats()
        raise
    else:
        training = [m for m in layers if m.training and m.running_mean is not None]
        if reduce is not None:
            reduce([t for m in training for t in (m._sum_mean, m._sum_var, m._slices)])
        commit_running_stats(training)
        for layer in layers:
            if not layer.training:
                layer.discard_pending_stats()
    finally:
        for layer in layers:
            layer.defer_running_stats = False


@torch.no_grad()
def commit_running_stats(layers: list[GhostBatchNorm2d]) -> None:
    """`GhostBatchNorm2d.commit_running_stats` for many layers at once: a handful of
    multi-tensor (foreach) kernels per group of layers sharing momentum, device and dtype,
    instead of about ten small kernels per layer."""
    groups: dict[tuple[object, ...], list[GhostBatchNorm2d]] = {}
    for layer in layers:
        if layer.momentum is None:  # a cumulative average: its factor differs per layer
            layer.commit_running_stats()
            continue
        assert layer.running_mean is not None
        key = (layer.momentum, layer.running_mean.device, layer.running_mean.dtype)
        groups.setdefault(key, []).append(layer)
    for (momentum, _, _), group in groups.items():
        assert isinstance(momentum, float)
        tracked = [m.num_batches_tracked for m in group]
        torch._foreach_add_(tracked, 1)  # type: ignore[arg-type]
        counts = torch._foreach_clamp_min([m._slices for m in group], 1)
        means = torch._foreach_div([m._sum_mean for m in group], counts)
        variances = torch._foreach_div([m._sum_var for m in group], counts)
        torch._foreach_lerp_([m.running_mean for m in group], means, momentum)  # type: ignore[misc]
        torch._foreach_lerp_([m.running_var for m in group], variances, momentum)  # type: ignore[misc]
        torch._foreach_zero_([m._sum_mean for m in group] + [m._sum_var for m in group])
        torch._foreach_zero_([m._slices for m in group])


@torch.no_grad()
def precise_running_stats(
    model: nn.Module,
    inputs: Iterable[Tensor],
    reduce: Callable[[Sequence[Tensor]], None] | None = None,
) -> None:
    """Replace every ghost batch norm's running statistics by the mean over the ghost slices of
    `inputs` (precise BN): a forward of each input in train mode, each layer collecting its
    slices' means and unbiased variances (the moments the once-per-step average moves
    towards, of the slices training normalizes with), then running_mean and running_var set
    to their unweighted means over all slices. The old values are not kept and
    `num_batches_tracked` is left as it was; `model` returns to the mode it was in.

    Each input is cut into slices as in training (a multiple of the ghost size gives whole
    slices; see `GhostBatchNorm2d`), so the result does not depend on how the images were
    batched. ``reduce`` (data parallelism) sums the moments and slice counts across processes
    before the division, so each process may pass its share and all end with the same buffers.
    """
    layers = [m for m in ghost_batch_norms(model) if m.running_mean is not None]
    was_training = model.training
    for layer in layers:
        layer.discard_pending_stats()
        layer.defer_running_stats = True
    model.train()
    try:
        for x in inputs:
            model(x)
        if reduce is not None:
            reduce([t for m in layers for t in (m._sum_mean, m._sum_var, m._slices)])
        for layer in layers:
            assert layer.running_mean is not None and layer.running_var is not None
            count = layer._slices.clamp(min=1)
            layer.running_mean.copy_(layer._sum_mean / count)
            layer.running_var.copy_(layer._sum_var / count)
    finally:
        for layer in layers:
            layer.discard_pending_stats()
            layer.defer_running_stats = False
        model.train(was_training)
