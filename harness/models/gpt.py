"""A small decoder-only transformer (GPT) for the sequence kinds (harness.core.sequences).

nanoGPT's shape (Radford et al. 2019 as Karpathy's nanoGPT writes it): a learned token and
position embedding, `n_layer` pre-LN blocks (x + attn(LN(x)), then x + MLP(LN(x)), the MLP
4·n_embd wide with GELU), a final LayerNorm and a linear head tied to the token embedding.
Attention is causal, through `F.scaled_dot_product_attention(is_causal=True)` (a fused kernel
where the device has one). No dropout and no batch norm: each sequence's output depends on
that sequence alone, so micro-batching a step changes only the order of float sums
(tests/test_lm.py checks a float64 step is the same at micro-batches 1, 2 and 4), and the
ghost size the harness passes is ignored. Weights start as nanoGPT's: normal(0, 0.02), the
residual projections scaled by 1/sqrt(2·n_layer), biases and LayerNorms at 0 and 1.

Input: token ids (B, T) int64 with T <= block_size; output: logits (B, T, vocab).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UserError


class _Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class _Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = _Attention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class GPT(nn.Module):
    """See the module docstring; `num_classes` is the vocabulary (the dataset's)."""

    def __init__(
        self,
        n_layer: int,
        n_head: int,
        n_embd: int,
        block_size: int,
        num_classes: int = 256,
        ghost_size: int = 0,  # no batch norm: nothing to ghost
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise UserError(f"model.n_head: n_embd {n_embd} is not a multiple of it ({n_head})")
        self.block_size = block_size
        self.tok = nn.Embedding(num_classes, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(_Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, num_classes, bias=False)
        self.head.weight = self.tok.weight  # tied: one (vocab, n_embd) matrix
        residual = 0.02 / math.sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, residual if name.endswith("proj.weight") else 0.02)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"a sequence of {t} tokens exceeds block_size {self.block_size}")
        positions = torch.arange(t, device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
