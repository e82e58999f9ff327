"""The SASRec network (Kang & McAuley, ICDM 2018), following the authors' TensorFlow code (kang205/SASRec).

Layout: sequences are **right-padded** (real items first, item id 0 after them). Each real item gets the
position index it would have in the reference's left-padded window of length ``maxlen`` (the most recent
item is always at position ``maxlen - 1``), so the model computes exactly what the reference computes at
real positions, while a plain causal mask also hides every padding key (padding only ever comes *after* real
items). That makes batches trimmable to their longest sequence and lets PyTorch's fused causal attention
kernel run without an explicit mask.

Training draws random dropout masks in two places, on activations and on attention weights; how is the
``kernels`` object's business (:class:`TorchKernels` here, the plain computation; :mod:`sasrec.kernels` for
the faster CPU versions), passed in at construction. Nothing else about the network depends on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# MKL's strict conditional numerical reproducibility: on Intel CPUs a matrix product gives the same bits at any
# thread count (by default MKL splits a long inner dimension, such as the B * T positions a weight gradient sums
# over, between threads); on AMD ones, at a given thread count only (docs/training.md). MKL reads this when
# PyTorch does its first matrix product, so it is set on import, before any; a value the user set wins
# (MKL_CBWR=OFF turns it off). Builds without MKL ignore it.
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


class TorchKernels:
    """The plain computation of the model's two random operations: ``F.dropout`` and attention spelled out.

    The model's default, on any device. :class:`sasrec.kernels.CPUKernels` has the same interface and computes
    the same values for the same dropout masks, faster on the CPU; pass either as ``SASRec(kernels=...)``.
    """

    def dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Inverted dropout of rate ``p`` (training mode): each value zeroed with probability ``p``, the rest
        scaled by ``1 / (1 - p)``. Any shape."""
        return F.dropout(x, p, True)

    def causal_attention_with_dropout(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float
    ) -> torch.Tensor:
        """``dropout(softmax(causal(q k^T / sqrt(dh)))) v``: q, k, v ``(B, h, T, dh)`` -> ``(B, h, T, dh)``."""
        return causal_attention(q, k, v, dropout=lambda weights: self.dropout(weights, p))


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention where position t attends to positions <= t, with ``dropout`` applied to the
    ``(B, h, T, T)`` attention weights, as the reference (tf.layers.dropout on the softmax output).

    Shapes: q, k, v ``(B, h, T, dh)`` -> ``(B, h, T, dh)``.
    """
    T = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu_(1)
    weights = torch.softmax(scores.masked_fill_(future, -torch.inf), dim=-1)
    return (weights if dropout is None else dropout(weights)) @ v


class Dropout(nn.Module):
    """Inverted dropout of rate ``p`` with its masks from ``kernels``; the identity in eval mode or at rate 0."""

    def __init__(self, p: float, kernels: TorchKernels):
        super().__init__()
        self.p = p
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return self.kernels.dropout(x, self.p)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate query and key/value inputs.

    The reference feeds the layer-normalised sequence as queries and the un-normalised sequence as keys and
    values (kang205/SASRec ``multihead_attention(queries=normalize(seq), keys=seq)``).
    """

    def __init__(self, hidden: int, num_heads: int, dropout: float, kernels: TorchKernels):
        super().__init__()
        self.num_heads = num_heads
        self.dropout_p = dropout  # on the attention weights
        self.kernels = kernels
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
                q, k, v, attn_mask=allowed[:, None, None, :], dropout_p=self.dropout_p if self.training else 0.0
            )
        elif self.training and self.dropout_p > 0:
            # Dropout on the attention weights, as the reference (tf.layers.dropout on the softmax output). The
            # fused kernel below would draw its own masks; the kernels draw theirs, reproducibly.
            out = self.kernels.causal_attention_with_dropout(q, k, v, self.dropout_p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, d))


class PointWiseFeedForward(nn.Module):
    """FFN(x) = ReLU(x W1 + b1) W2 + b2, applied at every position, with dropout after each layer.

    ``W1`` is ``(d, factor * d)`` and ``W2`` ``(factor * d, d)``: the paper's FFN has ``factor = 1``; Transformer
    recipes such as eSASRec widen it to 4.
    """

    def __init__(self, hidden: int, dropout: float, kernels: TorchKernels, factor: int = 1):
        super().__init__()
        self.fc1 = nn.Linear(hidden, factor * hidden)
        self.fc2 = nn.Linear(factor * hidden, hidden)
        self.dropout = Dropout(dropout, kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x)))))


class Block(nn.Module):
    """One self-attention block: attention then FFN, each with residual connection and LayerNorm.

    ``norm_first=False`` (the reference): ``q = LN(x); x = q + Attn(q, x); y = LN(x); x = y + FFN(y)``.
    ``norm_first=True`` (pre-LN, as pmixer's option): ``x = x + Attn(LN(x), LN(x)); x = x + FFN(LN(x))``.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        dropout: float,
        norm_first: bool,
        kernels: TorchKernels,
        ffn_factor: int = 1,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.attn_norm = LayerNorm(hidden, eps=1e-8)
        self.attn = CausalSelfAttention(hidden, num_heads, dropout, kernels)
        self.ffn_norm = LayerNorm(hidden, eps=1e-8)
        self.ffn = PointWiseFeedForward(hidden, dropout, kernels, ffn_factor)

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
        ffn_factor: the feed-forward layer's width as a multiple of ``hidden`` (the paper: 1).
        kernels: how dropout masks are drawn and attention with dropout is computed in training:
            :class:`TorchKernels` (the default) or :class:`sasrec.kernels.CPUKernels` (faster on the CPU, masks
            from a NumPy generator). Evaluation does not use them.
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
        ffn_factor: int = 1,
        kernels: TorchKernels | None = None,
    ):
        super().__init__()
        kernels = kernels or TorchKernels()
        self.num_items = num_items
        self.maxlen = maxlen
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, hidden)
        self.emb_dropout = Dropout(dropout, kernels)
        self.blocks = nn.ModuleList(
            Block(hidden, num_heads, dropout, norm_first, kernels, ffn_factor) for _ in range(num_blocks)
        )
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

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states for every position.

        Args:
            seq: ``(B, T)`` item ids, right-padded with 0, ``T <= maxlen``.
        Returns:
            ``(B, T, d)``: ``out[b, t]`` summarises ``seq[b, :t+1]``; values at padding positions are meaningless.
        Raises:
            ValueError: ``T > maxlen``; a caller with longer histories passes their last ``maxlen`` items.
        """
        x, real = self._embed(seq)
        for block in self.blocks:
            x = block(x) * real
        return self.last_norm(x)

    def _embed(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T)`` right-padded ids -> (embedded sequence ``(B, T, d)``, real-item mask ``(B, T, 1)``)."""
        if seq.shape[1] > self.maxlen:
            raise ValueError(
                f"sequences of {seq.shape[1]} items are longer than this model's maxlen {self.maxlen}: "
                f"pass the last {self.maxlen} items of each (the model has no position beyond them)"
            )
        real = (seq > 0).unsqueeze(-1)  # (B, T, 1), the reference's "timeline mask"
        lengths = real.sum(1)  # (B, 1)
        # Reference position of column t: the last real item sits at maxlen - 1 (see module docstring). Padding
        # columns would fall past the table; they take its last row, and `real` zeroes them.
        positions = (torch.arange(seq.shape[1], device=seq.device) + (self.maxlen - lengths)).clamp_(
            max=self.maxlen - 1
        )
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(positions)
        return self.emb_dropout(x) * real, real

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` right-padded histories, ``T <= maxlen`` -> ``(B, d)``, the hidden state at each row's last
        real item.

        Equals ``forward(seq)`` at those positions, but the last block computes only them (about a quarter
        less work with two blocks). Raises ValueError when ``T > maxlen``, as :meth:`forward`.
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
