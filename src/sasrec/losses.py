"""Training losses. Every loss has one signature, so the training loop never changes per loss:

    loss(hidden, positives, negatives, item_weight) -> scalar tensor

    hidden:      (P, d)  hidden states at the P real (non-padding) positions of a batch
    positives:   (P,)    the next item at each position
    negatives:   (P, N)  sampled negative items (N = ``loss.num_negatives``; (P, 0) for losses that need none)
    item_weight: (num_items + 1, d) the shared item embedding matrix (row 0 is padding)

Losses are chosen by name through :func:`make_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sasrec.errors import ConfigError


class BCELoss(nn.Module):
    """The paper's loss: binary cross-entropy of the next item against sampled negatives.

    ``-log sigmoid(r_pos) - sum_j log(1 - sigmoid(r_neg_j))``, averaged over positions, as kang205/SASRec
    (which averages the positive and the negative terms over the real positions; with N negatives the
    negative term is averaged over them too, so N = 1 is exactly the reference).
    """

    def __init__(self, num_negatives: int = 1):
        super().__init__()
        self.num_negatives = num_negatives

    def forward(self, hidden: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                item_weight: torch.Tensor) -> torch.Tensor:
        pos_logits = (hidden * item_weight[positives]).sum(-1)  # (P,)
        neg_logits = torch.einsum("pd,pnd->pn", hidden, item_weight[negatives])  # (P, N)
        pos_loss = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
        neg_loss = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
        return pos_loss + neg_loss


LOSSES: dict[str, type[nn.Module]] = {"bce": BCELoss}


def make_loss(name: str, num_negatives: int = 1, **options: float) -> nn.Module:
    """Build a loss by name (``bce``, and the others registered in :data:`LOSSES`)."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}")
    if num_negatives < 0:
        raise ConfigError(f"negatives must be >= 0, got {num_negatives}")
    return LOSSES[name](num_negatives=num_negatives, **options)
