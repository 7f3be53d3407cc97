"""Ghost batch norm: batch norm whose statistics come from fixed-size slices of the batch.

With every normalization a ghost batch norm, a model's gradient for one ghost slice does not
depend on how many slices share the batch (Smith et al. 2018, section 5.1; Hoffer et al. 2017).
That is what lets a step of B examples run as micro-batches whose gradients are averaged: each
micro-batch is a whole number of ghost slices.
"""

from __future__ import annotations

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
    * Running statistics are updated once per forward call, with ``momentum`` as in
      ``nn.BatchNorm2d``, from the *unweighted mean over slices* of each slice's mean and of each
      slice's **unbiased** variance (the remainder slice counts as one slice like the others).
      With equal-size slices this is what averaging the running-stat updates of the slices,
      taken as separate batches, would give to first order.

    Eval mode (with running statistics) is exactly ``nn.BatchNorm2d``. Statistics are computed
    in float32 whatever the input dtype (bf16 under autocast), and the output has the input's
    dtype. Channels-last inputs stay channels-last without a copy.
    """

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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_size={self.ghost_size}"

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training and self.running_mean is not None:
            return self._eval_forward(input)
        return self._ghost_forward(input)

    def _eval_forward(self, x: Tensor) -> Tensor:
        assert self.running_mean is not None and self.running_var is not None
        # F.batch_norm does not accept every mix of a low-precision input with float32
        # parameters on every backend, so mixed dtypes go through float32.
        mixed = self.weight is not None and x.dtype != self.weight.dtype
        out = F.batch_norm(
            x.float() if mixed else x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            False,
            0.0,
            self.eps,
        )
        return out.to(x.dtype)

    def _ghost_forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        g = min(self.ghost_size, n)
        full = (n // g) * g
        with torch.autocast(device_type=x.device.type, enabled=False):
            if full == n:
                y, means, unbiased_vars = self._normalize_slices(x, g)
            else:
                # Two pieces: the full slices in one vectorized pass, the remainder as one more
                # slice, written into one buffer shaped like x. (torch.cat would not do: a
                # one-example remainder has an ambiguous layout and makes it drop channels-last.)
                y_full, m_full, v_full = self._normalize_slices(x[:full], g)
                y_rest, m_rest, v_rest = self._normalize_slices(x[full:], n - full)
                y = torch.empty_like(x, dtype=y_full.dtype)
                y[:full] = y_full
                y[full:] = y_rest
                means = torch.cat([m_full, m_rest])
                unbiased_vars = torch.cat([v_full, v_rest])
        self._update_running_stats(means, unbiased_vars)
        return y.to(x.dtype)

    def _normalize_slices(self, x: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
        """Normalize ``x`` (a multiple of ``g`` examples) per slice of ``g``.

        Returns the output (N, C, H, W) in at least float32 and, per slice, the mean and
        unbiased variance as (S, C) tensors detached from the graph.
        """
        n, c, h, w = x.shape
        # At least float32; float64 stays float64 so that exactness tests can be tight.
        dtype = torch.promote_types(x.dtype, torch.float32)
        # Splitting dim 0 is a view for contiguous and channels-last layouts alike, and the
        # elementwise ops below keep the input's layout, so the final view back is legal too.
        xs = x.to(dtype).view(n // g, g, c, h, w)
        var, mean = torch.var_mean(xs, dim=(1, 3, 4), correction=0, keepdim=True)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(dtype).view(1, 1, c, 1, 1)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.to(dtype).view(1, 1, c, 1, 1)
        y = torch.addcmul(shift, xs, scale).view(n, c, h, w)
        count = g * h * w
        with torch.no_grad():
            slice_means = mean.detach().view(-1, c)
            # A slice of one value has no unbiased variance; nn.BatchNorm2d refuses it in
            # training, and here it only contributes a zero rather than a NaN to the average.
            bessel = count / (count - 1) if count > 1 else 0.0
            slice_vars = var.detach().view(-1, c) * bessel
        return y, slice_means, slice_vars

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, unbiased_vars: Tensor) -> None:
        if not (self.training and self.track_running_stats):
            return
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        # momentum=None means a cumulative moving average, as in nn.BatchNorm2d.
        momentum = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
        self.running_mean.lerp_(means.mean(0).to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_vars.mean(0).to(self.running_var.dtype), factor)
