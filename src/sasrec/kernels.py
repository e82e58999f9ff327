"""Faster CPU versions of the model's two random operations, for training: ``SASRec(kernels=CPUKernels(rng))``.

:class:`CPUKernels` has the interface of :class:`sasrec.model.TorchKernels`, the plain computation, and gives
the same values and gradients for the same dropout masks (tests/test_model.py compares them). The masks come
from a NumPy generator, which makes training bit-reproducible and resumable (the generator's state is saved
with the checkpoint). On another device than the CPU it computes exactly what ``TorchKernels`` computes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from sasrec.model import TorchKernels


class CPUKernels(TorchKernels):
    """Dropout masks from ``rng`` and a hand-written attention-with-dropout kernel.

    On CPU, ``torch.bernoulli_`` is slow (it was 35% of the reference's step time); a mask made from
    NumPy's PCG64 random bytes costs about a fifth as much. The keep threshold is a multiple of 1/65536
    and the scale uses the exact keep probability, so dropout stays unbiased.

    Args:
        rng: the generator every mask is drawn from, in the order the model applies dropout. The caller owns
            it (saves and restores its state, reseeds it per rank); this object only draws from it.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def mask(self, shape: tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
        """A boolean keep-mask of ``shape`` (each value kept with probability about ``1 - p``) and the scale of
        kept values, ``1 / (exact keep probability)``."""
        threshold = round(p * 65536)
        keep = np.frombuffer(self.rng.bytes(2 * math.prod(shape)), dtype=np.uint16) >= threshold
        return torch.from_numpy(keep).view(shape), 65536 / (65536 - threshold)

    def dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if x.device.type != "cpu":  # NumPy masks are CPU tensors; copying them to a GPU costs more than they save
            return super().dropout(x, p)
        keep, scale = self.mask(x.shape, p)
        return x * keep.to(x.dtype).mul_(scale)  # one float mask: one multiply forward and backward

    def causal_attention_with_dropout(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float
    ) -> torch.Tensor:
        if q.device.type != "cpu":
            return super().causal_attention_with_dropout(q, k, v, p)
        keep, scale = self.mask((*q.shape[:-1], k.shape[-2]), p)  # (B, h, T, T)
        if q.dtype == torch.bfloat16:
            # Under --precision bf16, in float32: the (B, h, T, T) passes dominate this kernel, and bfloat16
            # adds a conversion to each; it measured 10% faster per step this way (ML-1M ce; docs/speed.md).
            q, k, v = q.float(), k.float(), v.float()
        return CausalAttentionWithDropout.apply(q, k, v, keep, scale)


class CausalAttentionWithDropout(torch.autograd.Function):
    """``dropout(softmax(causal(q k^T / sqrt(dh)))) v`` for a given keep-mask, with a hand-written backward.

    Autograd of the spelled-out expression (:func:`sasrec.model.causal_attention`) walks the ``(B, h, T, T)``
    tensors about twice as often as needed (separate scale, mask-fill, dropout and their backward passes, each
    allocating); this version scales the small ``q`` instead of the scores, works in place and keeps the
    attention weights for backward (30% less time per block at ML-1M's T = 200).

    Shapes: q, k, v ``(B, h, T, dh)``, keep ``(B, h, T, T)`` bool, scale the kept weights' factor ->
    ``(B, h, T, dh)``.

    Mixed precision: the products run in the dtype of ``q``, ``k``, ``v`` (bfloat16 under ``--precision bf16``,
    where the projections that make them are autocast); the scores' softmax and its backward run in at least
    float32. In float32 every cast below is a no-op.
    """

    @staticmethod
    def forward(
        ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, scale: float
    ) -> torch.Tensor:
        T = q.shape[-2]
        acc = torch.promote_types(q.dtype, torch.float32)  # softmax precision: float32, or float64 in tests
        scores = ((q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)).to(acc)  # (B, h, T, T)
        scores.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1), -math.inf)
        weights = torch.softmax(scores, dim=-1)
        del scores
        dropped = (weights * keep).to(v.dtype)
        ctx.save_for_backward(q, k, v, keep, weights, dropped)
        ctx.scale = scale
        return (dropped @ v).mul_(scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        q, k, v, keep, weights, dropped = ctx.saved_tensors
        grad = (grad * ctx.scale).to(v.dtype)
        grad_v = dropped.transpose(-2, -1) @ grad
        # softmax backward, in place: ds = w * (dw - sum(dw * w)), with dw = (grad v^T) * keep
        ds = (grad @ v.transpose(-2, -1)).to(weights.dtype).mul_(keep).mul_(weights)
        ds.addcmul_(weights, ds.sum(-1, keepdim=True), value=-1.0).mul_(1.0 / math.sqrt(q.shape[-1]))
        ds = ds.to(q.dtype)
        return ds @ k, ds.transpose(-2, -1) @ q, grad_v, None, None
