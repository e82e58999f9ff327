"""Training losses. Every loss has one signature, so the training loop never changes per loss:

    loss(hidden, positives, negatives, item_weight) -> scalar tensor

    hidden:      (P, d)  hidden states at the P real (non-padding) positions of a batch
    positives:   (P,)    the next item at each position (in 1..num_items)
    negatives:   (P, N)  sampled negative items (N = ``loss.num_negatives``; (P, 0) for losses that need none),
                 or (N,) one set shared by every position of the batch (option ``shared``, see below)
    item_weight: (num_items + 1, d) the item vectors scores are taken with (``SASRec.output_weight``: the
                 shared item embedding, or the separate output one; row 0 is padding, never a candidate)

Losses are chosen by name through :func:`make_loss` (``--loss``, ``--negatives``, ``loss_options``).

Which loss to pick
------------------
``bce`` (default)
    The paper's loss (Kang & McAuley 2018): one sampled negative per position, binary cross-entropy.
    Paper-faithful and cheap, but trained with few negatives the model is overconfident and full-ranking
    accuracy lags behind.
``ce``
    Full softmax cross-entropy over the whole catalogue. Usually the best full-ranking accuracy when the
    catalogue fits the compute budget (SASRec+, Klenitskiy & Vasilev, RecSys 2023). Computed in blocks of
    positions, so memory stays bounded for catalogues of 50k+ items; the cost is O(P * num_items * d) per
    step. Option ``block_rows`` (positions per block; 0 = automatic, 64 on the CPU).
``sampled-ce``
    Softmax over the target and N sampled negatives. With many negatives (a few hundred to a few
    thousand, e.g. ``--negatives 256``..``3000``) it comes close to ``ce`` at a fraction of the cost on
    large catalogues.
    Option ``in_batch`` (bool): use the other positions' targets in the batch as negatives, with logQ
    correction, instead of sampled ones (then no negatives are drawn).
``gbce``
    Generalised BCE of gSASRec (Petrov & Macdonald, RecSys 2023): BCE with N negatives whose positive term
    is calibrated to undo the overconfidence that negative sampling causes. Stays in the BCE family (cheap,
    sampled) while approaching ``ce`` accuracy with e.g. 256 negatives. Option ``t`` (calibration in
    [0, 1], default 0.75; ``t = 0`` is plain BCE).

Shared negatives (option ``shared=true`` of ``bce``, ``sampled-ce`` and ``gbce``)
    By default (the paper's way) every position gets its own N negatives, drawn from items the user never
    interacted with; scoring them gathers a ``(P, N, d)`` block, which costs as much as the model itself
    once N is in the hundreds. With ``shared`` the sampler draws one set of N distinct items per batch,
    uniformly from the whole catalogue, and every position is scored against it with one matrix product
    (``(P, d) @ (d, N)``, 5-10x faster for N >= 256). A shared negative that equals a position's own
    target is masked out for that position; one that is another item of the user is kept (a slightly
    noisier negative, as in SASRec+ and gSASRec's uniform sampling). Fine for ``sampled-ce`` and ``bce``;
    ``gbce`` with shared negatives did not learn on Games (its default is per-position negatives).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from sasrec.config import LOSS_SPECS, loss_settings
from sasrec.precision import compute_dtype

# Automatic block size of ``ce``'s normaliser (see ce_block_rows): positions per block on the CPU, and the
# most (position, item) scores a block may hold (4M float32 scores = 16 MiB), which only binds for
# catalogues over 65k items.
CE_ROWS_CPU = 64
CE_BLOCK_ELEMENTS = 2**22
CE_BLOCK_ELEMENTS_GPU = 2**24  # on a GPU, larger blocks: fewer kernel launches
# Rows summed by one thread in fixed_order_sum: below ATen's parallel grain size (32768), so summed serially.
SERIAL_SUM_ELEMENTS = 2**14


def fixed_order_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of all elements of ``x`` (a 0-dim tensor), rounded the same way at any thread count.

    ``x.sum()`` over 32768 elements or more gives every thread a partial sum, so its last bits change with
    ``torch.set_num_threads``. Summing rows of ``SERIAL_SUM_ELEMENTS`` (each row by one thread, zero-padded),
    then the row sums, fixes the order. Used for every loss's mean: the logged loss must not depend on
    ``--threads`` either.
    """
    x = x.reshape(-1)
    while x.numel() > SERIAL_SUM_ELEMENTS:
        x = F.pad(x, (0, -x.numel() % SERIAL_SUM_ELEMENTS)).view(-1, SERIAL_SUM_ELEMENTS).sum(1)
    return x.sum()


def fixed_order_mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean()`` in the order of :func:`fixed_order_sum`; ``x`` must not be empty."""
    return fixed_order_sum(x) / x.numel()


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` elementwise, as ``F.softplus``, rounded the same way at any thread count.

    ``F.softplus`` and ``torch.sigmoid`` (so also the backward of ``F.binary_cross_entropy_with_logits``)
    compute a thread's last few elements with scalar code that rounds differently from their vector code;
    on a tensor of 32768 elements or more, split between threads at a point that depends on
    ``torch.set_num_threads``, some results change in the last bit (measured: 5 of 33584 ``F.softplus``
    outputs at 1 vs 2 threads on an AVX-512 CPU). ``F.logsigmoid`` pads a thread's tail into a full vector
    instead, forward and backward, so ``-logsigmoid(-x)`` is the same at any thread count; it differs from
    ``F.softplus`` by at most one rounding (~1e-6) and has no ``threshold``.

    Computed in float32 at least (``x`` ``(*)`` -> ``(*)``; bfloat16 or float32 -> float32, float64 stays
    float64): under bfloat16 autocast the scores come in bfloat16, and the loss terms then summed must not
    be rounded to 8 bits each, as ``F.binary_cross_entropy_with_logits`` (which autocast runs in float32)
    never rounded them.
    """
    return -F.logsigmoid(-x.to(torch.promote_types(x.dtype, torch.float32)))


def item_rows(item_weight: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``item_weight[items]``: rows of ``(I + 1, d)`` for integer ``items`` of any shape -> ``(*items.shape, d)``.

    Every loss gathers item vectors through this, never by indexing: the backward of ``weight[items]``
    (``index_put_`` with accumulation) sums the gradients of an item drawn several times in an order that
    depends on thread scheduling, so two runs with the same seed drift apart (by ~1e-8 after one step at
    2 threads). ``F.embedding``'s CPU backward gives each thread a range of rows and adds a row's gradients
    in the order of ``items``: the same sums at any thread count, and no slower.
    """
    return F.embedding(items, item_weight)


def negative_logits(
    hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, item_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores of the negatives: ``(P, N)`` logits and a ``(P, N)`` mask of (position, negative) pairs to drop.

    ``negatives`` ``(P, N)``: per-position negatives (never the target: they are unseen items), mask ``None``.
    ``negatives`` ``(N,)``: shared by all positions, one matrix product; the mask marks where a shared
    negative is the position's own target.
    """
    if negatives.dim() == 1:
        logits = hidden @ item_rows(item_weight, negatives).T  # (P, N)
        return logits, negatives[None, :] == positives[:, None]
    return torch.einsum("pd,pnd->pn", hidden, item_rows(item_weight, negatives)), None


class BCELoss(nn.Module):
    """The paper's loss: binary cross-entropy of the next item against sampled negatives.

    ``-log sigmoid(r_pos) - sum_j log(1 - sigmoid(r_neg_j))``, averaged over positions, as kang205/SASRec
    (which averages the positive and the negative terms over the real positions; with N negatives the
    negative term is averaged over them too, so N = 1 is exactly the reference). With ``shared``
    negatives, a position's negative term is the mean over its unmasked negatives.
    """

    def __init__(self, num_negatives: int = 1, shared: bool = False):
        super().__init__()
        self.num_negatives = num_negatives
        self.shared = shared

    def forward(
        self, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, item_weight: torch.Tensor
    ) -> torch.Tensor:
        if hidden.shape[0] == 0:  # no real position (an empty shard): a zero that keeps the graph
            return hidden.sum() * 0.0
        if negatives.dim() == 2:
            # One gather for targets and negatives: its backward zero-fills the (I + 1, d) gradient once,
            # not twice, which is a tenth of a Games step.
            candidates = item_rows(item_weight, torch.cat([positives[:, None], negatives], 1))  # (P, 1 + N, d)
            logits = torch.einsum("pd,pnd->pn", hidden, candidates)
            pos_logits, neg_logits, drop = logits[:, 0], logits[:, 1:], None
        else:
            pos_logits = (hidden * item_rows(item_weight, positives)).sum(-1)  # (P,)
            neg_logits, drop = negative_logits(hidden, positives, negatives, item_weight)  # (P, N)
        # -log sigmoid(r) = softplus(-r) and -log(1 - sigmoid(r)) = softplus(r): binary cross-entropy with
        # targets 1 and 0, through the softplus that rounds the same at any thread count.
        pos_loss = fixed_order_mean(softplus(-pos_logits))
        if drop is None:
            neg_loss = fixed_order_mean(softplus(neg_logits))
        else:  # per position: the mean over its kept negatives (a mean over positions keeps DDP exact)
            kept = (~drop).sum(-1).clamp(min=1)
            neg_loss = fixed_order_mean(softplus(neg_logits).masked_fill(drop, 0.0).sum(-1) / kept)
        return pos_loss + neg_loss


class _ChunkedLogSumExp(torch.autograd.Function):
    """``logsumexp(hidden @ weight.T, dim=1)`` computed over blocks of ``hidden``'s rows (positions).

    Neither pass keeps the ``(P, I)`` score matrix: the forward pass takes each block's ``(rows, I)`` scores
    and their logsumexp over the whole catalogue at once; the backward pass recomputes them to form the
    block's softmax, its rows of the ``hidden`` gradient, and its term of the ``weight`` gradient (the blocks'
    terms are added in order; with the products that MKL computes reproducibly, the gradients do not depend on
    the thread count). Peak extra memory is a
    few ``(rows, I)`` blocks. Blocks of positions beat blocks of items on the CPU (measured on ML-1M-shaped
    batches: 0.38 s vs 0.49 s per step at 64 rows, one thread): both products keep the whole catalogue as
    one side, and each block stays in cache through the exponentials.

    Under bfloat16 autocast (``--precision bf16``) the scores and the ``weight`` gradient's products run in
    bfloat16, and everything else (the exponentials, the logsumexp, the sum of the blocks' ``weight``
    gradients, and the ``hidden`` gradient's product, see ``backward``) in float32; the backward pass runs
    outside the autocast region, so the dtype is recorded in forward.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, rows: int) -> torch.Tensor:
        # hidden (P, d), weight (I, d) -> lse (P,), in at least float32
        acc = torch.promote_types(hidden.dtype, torch.float32)
        dtype = compute_dtype(hidden)
        h, w_t = hidden.to(dtype), weight.to(dtype).T
        lse = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            lse[start : start + rows] = torch.logsumexp((h[start : start + rows] @ w_t).to(acc), dim=1)
        ctx.save_for_backward(hidden, weight, lse)
        ctx.rows, ctx.dtype = rows, dtype
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_lse: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        hidden, weight, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if need_w else None
        h, w = hidden.to(ctx.dtype), weight.to(ctx.dtype)
        w_acc = weight.to(lse.dtype)  # the hidden gradient's product, in at least float32 (see below)
        for start in range(0, hidden.shape[0], ctx.rows):
            block = slice(start, start + ctx.rows)
            scores = (h[block] @ w.T).to(lse.dtype)  # (rows, I)
            # d lse_p / d score_pi = softmax_pi; times the incoming gradient of lse_p
            coef = scores.sub_(lse[block, None]).exp_().mul_(grad_lse[block, None])  # in place, float32
            if grad_h is not None:
                # In float32 even under bf16: oneDNN's bfloat16 result for this few-rows, long-inner-dimension
                # product changes with the thread count, and float32 is reproducible (MKL_CBWR, sasrec.model).
                grad_h[block] = coef @ w_acc
            if grad_w is not None:
                if ctx.dtype == grad_w.dtype:
                    grad_w.addmm_(coef.T, h[block])
                else:  # bfloat16 products: each block's term rounded once, the sum kept in float32
                    grad_w += coef.to(ctx.dtype).T @ h[block]
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None


def chunked_logsumexp(hidden: torch.Tensor, weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``torch.logsumexp(hidden @ weight.T, 1)`` (``(P, d)``, ``(I, d)`` -> ``(P,)``) in bounded memory,
    ``rows`` positions at a time."""
    return _ChunkedLogSumExp.apply(hidden, weight, rows)


def ce_block_rows(num_items: int, device: torch.device) -> int:
    """Positions per block of ``ce``'s normaliser: 64 on the CPU (the fastest of 16-1024 on ML-1M and Games
    shapes), fewer when a catalogue is so large that 64 rows would exceed ``CE_BLOCK_ELEMENTS`` scores; on a
    GPU, ``CE_BLOCK_ELEMENTS_GPU`` scores per block (fewer, larger kernels)."""
    if device.type == "cpu":
        return max(1, min(CE_ROWS_CPU, CE_BLOCK_ELEMENTS // max(num_items, 1)))
    return max(1, CE_BLOCK_ELEMENTS_GPU // max(num_items, 1))


class FullCELoss(nn.Module):
    """Softmax cross-entropy over the whole catalogue (items ``1..num_items``; padding excluded).

    Equal in value and gradient to ``F.cross_entropy(hidden @ item_weight[1:].T, positives - 1)``, but the
    normaliser is a logsumexp over blocks of positions (:func:`chunked_logsumexp`), so memory is
    ``O(block_rows * num_items)`` instead of ``O(P * num_items)``. Draws no negatives.

    ``block_rows``: positions per block; 0 (default) picks :func:`ce_block_rows` at call time.
    """

    def __init__(self, num_negatives: int = 0, block_rows: int = 0):
        super().__init__()
        self.num_negatives = 0  # the sampler draws none, whatever --negatives says
        self.shared = False
        self.block_rows = block_rows

    def forward(
        self, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, item_weight: torch.Tensor
    ) -> torch.Tensor:
        P = hidden.shape[0]
        if P == 0:
            return hidden.sum() * 0.0
        rows = self.block_rows or ce_block_rows(item_weight.shape[0] - 1, hidden.device)
        lse = chunked_logsumexp(hidden, item_weight[1:], rows)  # (P,)
        pos_logits = (hidden * item_rows(item_weight, positives)).sum(-1)  # (P,)
        return fixed_order_mean(lse - pos_logits.to(lse.dtype)).to(hidden.dtype)


class SampledCELoss(nn.Module):
    """Softmax cross-entropy of the target against negatives: ``-log softmax([r_pos, r_neg_1..N])[0]``.

    Sampled (default): the N uniform negatives from the sampler (they never equal the user's own items, so
    never the target). Uniform sampling needs no logQ correction (it is a constant shift). With ``shared``
    negatives, one equal to a position's target is masked out of that position's softmax.

    ``in_batch=True``: the candidates of position p are the targets of all P positions of the batch, with
    the logQ correction of Yi et al. (RecSys 2019): every candidate column k gets ``-log q(pos_k)``, where
    ``q`` is the item's frequency among the batch's targets; columns k != p holding p's own target are
    removed (they are not negatives). Draws no sampler negatives. Implemented on the U unique targets
    (``(P, U)`` scores, U <= P): the c_j columns of a negative item j contribute ``c_j * exp(r_j) / q_j =
    P * exp(r_j)``, and p's own target (kept once) ``P * exp(r_pos) / c_pos``, so the loss equals a softmax
    over the unique items where only the target's logit is shifted by ``-log c_pos``.
    """

    def __init__(self, num_negatives: int = 1, in_batch: bool = False, shared: bool = False):
        super().__init__()
        self.in_batch = in_batch
        self.shared = shared
        self.num_negatives = 0 if self.in_batch else num_negatives

    def forward(
        self, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, item_weight: torch.Tensor
    ) -> torch.Tensor:
        if hidden.shape[0] == 0:  # no real position (an empty shard): a zero that keeps the graph
            return hidden.sum() * 0.0
        if self.in_batch:
            return self._in_batch(hidden, positives, item_weight)
        pos_logits = (hidden * item_rows(item_weight, positives)).sum(-1, keepdim=True)  # (P, 1)
        neg_logits, drop = negative_logits(hidden, positives, negatives, item_weight)  # (P, N)
        if drop is not None:
            neg_logits = neg_logits.masked_fill(drop, -math.inf)  # the target is not its own negative
        logits = torch.cat([pos_logits, neg_logits], dim=1)  # (P, 1 + N); the target is column 0
        return fixed_order_mean(F.cross_entropy(logits, torch.zeros_like(positives), reduction="none"))

    @staticmethod
    def _in_batch(hidden: torch.Tensor, positives: torch.Tensor, item_weight: torch.Tensor) -> torch.Tensor:
        # unique (U,) items; index (P,): each row's target as a column of unique; counts (U,): c_j
        unique, index, counts = torch.unique(positives, return_inverse=True, return_counts=True)
        logits = hidden @ item_rows(item_weight, unique).T  # (P, U)
        shift = -counts.to(logits.dtype).log()[index]  # (P,): -log c_pos, added to each row's target column
        logits = logits.scatter_add(1, index[:, None], shift[:, None])
        return fixed_order_mean(F.cross_entropy(logits, index, reduction="none"))


class GBCELoss(nn.Module):
    """Generalised BCE of gSASRec (Petrov & Macdonald, RecSys 2023), as asash/gSASRec-pytorch.

    With N uniform negatives out of the I - 1 non-target items the sampling rate is ``alpha = N / (I - 1)``
    and ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha) = 1 - t * (1 - alpha)``. The positive probability is
    ``sigmoid(r_pos) ** beta``, so the positive term is ``-beta * log sigmoid(r_pos)`` (computed as
    ``beta * softplus(-r_pos)``, stable); the negatives are plain BCE. As the reference, the loss is the
    mean over all 1 + N (position, candidate) terms::

        mean_p [ beta * softplus(-r_pos) + sum_j softplus(r_neg_j) ] / (1 + N)

    ``t = 0`` gives ``beta = 1``, plain BCE over the 1 + N candidates (for N = 1 that is half ``bce``);
    ``t = 1`` gives ``beta = alpha``. I is read from ``item_weight`` at call time. With ``shared``
    negatives a masked pair contributes no term (the denominator stays 1 + N).
    """

    def __init__(self, num_negatives: int = 1, t: float = 0.75, shared: bool = False):
        super().__init__()
        self.num_negatives = num_negatives
        self.t = t
        self.shared = shared

    def beta(self, num_items: int) -> float:
        """The positive-term exponent for a catalogue of ``num_items`` items."""
        alpha = self.num_negatives / max(num_items - 1, 1)
        return 1.0 - self.t * (1.0 - alpha)

    def forward(
        self, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, item_weight: torch.Tensor
    ) -> torch.Tensor:
        if hidden.shape[0] == 0:  # no real position (an empty shard): a zero that keeps the graph
            return hidden.sum() * 0.0
        beta = self.beta(item_weight.shape[0] - 1)
        pos_logits = (hidden * item_rows(item_weight, positives)).sum(-1)  # (P,)
        neg_logits, drop = negative_logits(hidden, positives, negatives, item_weight)  # (P, N)
        neg_terms = softplus(neg_logits)
        if drop is not None:
            neg_terms = neg_terms.masked_fill(drop, 0.0)  # a shared negative equal to the target: no term
        per_position = beta * softplus(-pos_logits) + neg_terms.sum(-1)  # (P,)
        return fixed_order_mean(per_position) / (1 + neg_logits.shape[1])


LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "ce": FullCELoss,
    "sampled-ce": SampledCELoss,
    "gbce": GBCELoss,
}


def make_loss(name: str, num_negatives: int = 1, **options: Any) -> nn.Module:
    """Build a loss by name (see :data:`LOSSES`) with its ``options``, after checking them all against
    :data:`sasrec.config.LOSS_SPECS` (ConfigError naming the first problem); options not given take the defaults
    listed there.

    The returned module's ``num_negatives`` is what the sampler must draw (0 for ``ce`` and in-batch
    ``sampled-ce``, whatever ``num_negatives`` was asked), and its ``shared`` says whether one set per
    batch (``(N,)``) or one per position (``(P, N)``).
    """
    values = loss_settings(name, num_negatives, options)
    defaults = {key: option.default for key, option in LOSS_SPECS[name].options.items()}
    return LOSSES[name](num_negatives=num_negatives, **{**defaults, **values})
