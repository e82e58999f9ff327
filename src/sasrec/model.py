"""The SASRec network (Kang & McAuley, ICDM 2018), following the authors' TensorFlow code (kang205/SASRec).

Layout: sequences are **right-padded** (real items first, item id 0 after them). Each real item gets the
position index it would have in the reference's left-padded window of length ``maxlen`` (the most recent
item is always at position ``maxlen - 1``), so the model computes exactly what the reference computes at
real positions, while a plain causal mask also hides every padding key (padding only ever comes *after* real
items). That makes batches trimmable to their longest sequence and lets PyTorch's fused causal attention
kernel run without an explicit mask.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# MKL's strict conditional numerical reproducibility: a matrix product gives the same bits at any thread count
# (by default MKL splits a long inner dimension, such as the B * T positions a weight gradient sums over,
# between threads). MKL reads this when PyTorch does its first matrix product, so it is set on import, before
# any; a value the user set wins (MKL_CBWR=OFF turns it off). Builds without MKL ignore it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose weight and bias gradients are the same sums at any thread count.

    ATen's fused backward adds the rows' terms of those two gradients into one partial sum per thread, so
    they change in the last bits with ``torch.set_num_threads``. Here the normalisation stays fused and the
    affine part is a broadcast ``addcmul``, whose backward reduces over rows with every output column summed
    by a single thread. Same parameters (``weight``, ``bias``) and state-dict keys as ``nn.LayerNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, self.normalized_shape, None, None, self.eps), self.weight)


class Dropout(nn.Module):
    """Inverted dropout, optionally drawing its masks from a NumPy generator.

    On CPU, ``torch.bernoulli_`` is slow (it was 35% of the reference's step time); a mask made from
    NumPy's PCG64 random bytes costs about a fifth as much. The keep threshold is a multiple of 1/65536
    and the scale uses the exact keep probability, so the layer stays unbiased. With no generator set (the
    default, and always on GPU) it is ``torch.nn.functional.dropout``.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.rng: np.random.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.rng is None or x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        keep, scale = self.mask(x.shape)
        return x * keep.to(x.dtype).mul_(scale)  # one float mask: one multiply forward and backward

    def mask(self, shape: torch.Size) -> tuple[torch.Tensor, float]:
        """A boolean keep-mask of ``shape`` from the NumPy generator, and the scale of kept values."""
        threshold = round(self.p * 65536)
        keep = np.frombuffer(self.rng.bytes(2 * math.prod(shape)), dtype=np.uint16) >= threshold
        return torch.from_numpy(keep).view(shape), 65536 / (65536 - threshold)


class _CausalAttentionWithDropout(torch.autograd.Function):
    """``dropout(softmax(causal(q k^T / sqrt(dh)))) v`` for a given keep-mask, with a hand-written backward.

    Autograd of the spelled-out expression walks the ``(B, h, T, T)`` tensors about twice as often as
    needed (separate scale, mask-fill, dropout and their backward passes, each allocating); this version
    scales the small ``q`` instead of the scores, works in place and keeps the attention weights for backward
    (30% less time per block at ML-1M's T = 200). Shapes: q, k, v ``(B, h, T, dh)``, keep ``(B, h, T, T)`` bool.
    """

    @staticmethod
    def forward(
        ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, scale: float
    ) -> torch.Tensor:
        T = q.shape[-2]
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, h, T, T)
        scores.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1), -math.inf)
        weights = torch.softmax(scores, dim=-1)
        del scores
        dropped = weights * keep
        ctx.save_for_backward(q, k, v, keep, weights, dropped)
        ctx.scale = scale
        return (dropped @ v).mul_(scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        q, k, v, keep, weights, dropped = ctx.saved_tensors
        grad = grad * ctx.scale
        grad_v = dropped.transpose(-2, -1) @ grad
        # softmax backward, in place: ds = w * (dw - sum(dw * w)), with dw = (grad v^T) * keep
        ds = (grad @ v.transpose(-2, -1)).mul_(keep).mul_(weights)
        ds.addcmul_(weights, ds.sum(-1, keepdim=True), value=-1.0).mul_(1.0 / math.sqrt(q.shape[-1]))
        return ds @ k, ds.transpose(-2, -1) @ q, grad_v, None, None


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate query and key/value inputs.

    The reference feeds the layer-normalised sequence as queries and the un-normalised sequence as keys and
    values (kang205/SASRec ``multihead_attention(queries=normalize(seq), keys=seq)``).
    """

    def __init__(self, hidden: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = Dropout(dropout)
        self.q_proj = nn.Linear(hidden, hidden)
        self.kv_proj = nn.Linear(hidden, 2 * hidden)
        self.out_proj = nn.Linear(hidden, hidden)  # as torch.nn.MultiheadAttention in pmixer/SASRec.pytorch

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_limit: torch.Tensor | None = None) -> torch.Tensor:
        """queries ``(B, Tq, d)``, keys ``(B, T, d)`` -> ``(B, Tq, d)``.

        Without ``key_limit`` (``Tq == T``), position t attends to positions <= t. With ``key_limit``
        ``(B,)``, each row's queries attend to key positions <= ``key_limit[b]`` (used to compute only the
        last position at inference).
        """
        B, Tq, d = queries.shape
        T = keys.shape[1]
        h = self.num_heads
        q = self.q_proj(queries).view(B, Tq, h, d // h).transpose(1, 2)
        k, v = self.kv_proj(keys).view(B, T, 2, h, d // h).permute(2, 0, 3, 1, 4)
        if key_limit is not None:
            allowed = torch.arange(T, device=keys.device) <= key_limit[:, None]  # (B, T)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed[:, None, None, :], dropout_p=self.dropout.p if self.training else 0.0
            )
        elif self.training and self.dropout.p > 0:
            # Dropout on the attention weights, as the reference (tf.layers.dropout on the softmax output).
            # The fused kernel cannot take our dropout masks, so this branch spells attention out.
            if self.dropout.rng is None or q.device.type != "cpu":  # NumPy masks are for the CPU only
                scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
                future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1)
                out = self.dropout(torch.softmax(scores.masked_fill_(future, -torch.inf), dim=-1)) @ v
            else:
                keep, scale = self.dropout.mask((B, h, T, T))
                out = _CausalAttentionWithDropout.apply(q, k, v, keep, scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, d))


class PointWiseFeedForward(nn.Module):
    """FFN(x) = ReLU(x W1 + b1) W2 + b2, applied at every position, with dropout after each layer."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x)))))


class Block(nn.Module):
    """One self-attention block: attention then FFN, each with residual connection and LayerNorm.

    ``norm_first=False`` (the reference): ``q = LN(x); x = q + Attn(q, x); y = LN(x); x = y + FFN(y)``.
    ``norm_first=True`` (pre-LN, as pmixer's option): ``x = x + Attn(LN(x), LN(x)); x = x + FFN(LN(x))``.
    """

    def __init__(self, hidden: int, num_heads: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.attn_norm = LayerNorm(hidden, eps=1e-8)
        self.attn = CausalSelfAttention(hidden, num_heads, dropout)
        self.ffn_norm = LayerNorm(hidden, eps=1e-8)
        self.ffn = PointWiseFeedForward(hidden, dropout)

    def forward(self, x: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, d)`` -> ``(B, T, d)``; with ``last`` ``(B,)``, only each row's position ``last[b]``:
        ``(B, 1, d)`` (the same values, at a fraction of the cost)."""
        rows = torch.arange(x.shape[0], device=x.device)
        if self.norm_first:
            n = self.attn_norm(x)
            if last is None:
                x = x + self.attn(n, n)
            else:
                x = x[rows, last, None] + self.attn(n[rows, last, None], n, key_limit=last)
            return x + self.ffn(self.ffn_norm(x))
        if last is None:
            q = self.attn_norm(x)
            x = q + self.attn(q, x)
        else:
            q = self.attn_norm(x[rows, last, None])
            x = q + self.attn(q, x, key_limit=last)
        y = self.ffn_norm(x)
        return y + self.ffn(y)


class SASRec(nn.Module):
    """SASRec: item + learned position embeddings, causal self-attention blocks, scores with the shared item
    embedding (or, with ``tied_output=False``, a separate output embedding).

    Args:
        num_items: catalogue size; item ids are ``1..num_items`` and 0 is padding.
        maxlen: the longest sequence the model reads (the paper's n).
        hidden: embedding size d.
        num_blocks, num_heads: stacked blocks and attention heads (``hidden % num_heads == 0``).
        dropout: dropout rate on embeddings, attention weights and FFN layers.
        norm_first: pre-LN blocks instead of the reference's arrangement.
        tied_output: score items with the input item embedding (the paper); False learns a separate output
            embedding ``out_emb`` (gSASRec's default).
    """

    def __init__(
        self,
        num_items: int,
        maxlen: int = 50,
        hidden: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        norm_first: bool = False,
        tied_output: bool = True,
    ):
        super().__init__()
        self.num_items = num_items
        self.maxlen = maxlen
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, hidden)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, num_heads, dropout, norm_first) for _ in range(num_blocks))
        self.last_norm = LayerNorm(hidden, eps=1e-8)
        self.out_emb = None if tied_output else nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal for every weight matrix and embedding, as pmixer/SASRec.pytorch; padding row zero."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            if self.out_emb is not None:
                self.out_emb.weight[0].zero_()

    @property
    def output_weight(self) -> torch.Tensor:
        """``(num_items + 1, d)``: the item vectors that scores are dot products with (row 0 is padding)."""
        return self.item_emb.weight if self.out_emb is None else self.out_emb.weight

    def set_dropout_generator(self, rng: np.random.Generator | None) -> None:
        """Draw every dropout mask from ``rng`` (fast on CPU; see :class:`Dropout`), or from torch if None."""
        for module in self.modules():
            if isinstance(module, Dropout):
                module.rng = rng

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states for every position.

        Args:
            seq: ``(B, T)`` item ids, right-padded with 0, ``T <= maxlen``.
        Returns:
            ``(B, T, d)``: ``out[b, t]`` summarises ``seq[b, :t+1]``; values at padding positions are meaningless.
        """
        x, real = self._embed(seq)
        for block in self.blocks:
            x = block(x) * real
        return self.last_norm(x)

    def _embed(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = (seq > 0).unsqueeze(-1)  # (B, T, 1), the reference's "timeline mask"
        lengths = real.sum(1)  # (B, 1)
        # Reference position of column t: the last real item sits at maxlen - 1 (see module docstring).
        positions = (torch.arange(seq.shape[1], device=seq.device) + (self.maxlen - lengths)).clamp_(0, self.maxlen - 1)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(positions)
        return self.emb_dropout(x) * real, real

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` right-padded histories -> ``(B, d)``, the hidden state at each row's last real item.

        Equals ``forward(seq)`` at those positions, but the last block computes only them (about a quarter
        less work with two blocks).
        """
        x, real = self._embed(seq)
        last = real.sum((1, 2)).clamp_(min=1) - 1
        for block in self.blocks[:-1]:
            x = block(x) * real
        if len(self.blocks):
            x = self.blocks[-1](x, last)[:, 0]
        else:
            x = x[torch.arange(x.shape[0], device=x.device), last]
        return self.last_norm(x)

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Dot products with the item embedding (the paper's r = F M^T; ``out_emb`` when not tied).

        Args:
            hidden: ``(B, d)``.
            items: ``None`` for every item (``(B, num_items + 1)``, column 0 is padding), ``(C,)`` for the
                same candidates for every row (``(B, C)``), or ``(B, C)`` per-row candidates (``(B, C)``).
        """
        weight = self.output_weight
        if items is None:
            return hidden @ weight.T
        if items.dim() == 1:
            return hidden @ weight[items].T
        return torch.einsum("bd,bcd->bc", hidden, weight[items])
