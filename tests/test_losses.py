"""Each loss against a direct, obviously-correct computation (value and gradients), in float64."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sasrec.errors import ConfigError
from sasrec.losses import LOSSES, chunked_logsumexp, make_loss

P, D, ITEMS, N = 7, 5, 30, 4  # positions, hidden size, catalogue size, negatives
TOL = {"rtol": 1e-10, "atol": 1e-12}


def make_inputs(
    seed: int = 0,
    num_positions: int = P,
    num_items: int = ITEMS,
    num_negatives: int = N,
    max_positive: int | None = None,
):
    """hidden (P, d), positives (P,), negatives (P, N), item_weight (I + 1, d), all float64 leaves."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_positions, D, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(num_items + 1, D, generator=g, dtype=torch.float64, requires_grad=True)
    positives = torch.randint(1, (max_positive or num_items) + 1, (num_positions,), generator=g)
    negatives = torch.randint(1, num_items + 1, (num_positions, num_negatives), generator=g)
    return hidden, positives, negatives, weight


def value_and_grads(fn, hidden, weight):
    """The scalar ``fn()`` and its gradients w.r.t. hidden and weight."""
    value = fn()
    grad_h, grad_w = torch.autograd.grad(value, (hidden, weight))
    return value.detach(), grad_h, grad_w


def assert_same(loss_fn, reference_fn, hidden, weight):
    """Loss and reference agree in value and in both gradients."""
    got = value_and_grads(loss_fn, hidden, weight)
    want = value_and_grads(reference_fn, hidden, weight)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


# --- bce -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_negatives", [1, 4])
def test_bce_matches_direct_formula(num_negatives):
    hidden, pos, neg, weight = make_inputs(num_negatives=num_negatives)
    loss = make_loss("bce", num_negatives)

    def reference():
        # mean_p -log sigmoid(r_pos)  +  mean_{p,j} -log(1 - sigmoid(r_neg))
        pos_term = torch.stack([-torch.log(torch.sigmoid(hidden[p] @ weight[pos[p]])) for p in range(P)]).mean()
        neg_term = torch.stack(
            [
                -torch.log(1 - torch.sigmoid(hidden[p] @ weight[neg[p, j]]))
                for p in range(P)
                for j in range(num_negatives)
            ]
        ).mean()
        return pos_term + neg_term

    assert loss.num_negatives == num_negatives
    assert_same(lambda: loss(hidden, pos, neg, weight), reference, hidden, weight)


# --- ce --------------------------------------------------------------------------------------------------


def plain_ce(hidden, pos, weight):
    return F.cross_entropy(hidden @ weight[1:].T, pos - 1)


def test_plain_ce_is_the_softmax_over_items_without_padding():
    hidden, pos, _, weight = make_inputs()
    direct = torch.stack(
        [
            -(hidden[p] @ weight[pos[p]])
            + torch.log(sum(torch.exp(hidden[p] @ weight[i]) for i in range(1, ITEMS + 1)))
            for p in range(P)
        ]
    ).mean()
    torch.testing.assert_close(plain_ce(hidden, pos, weight), direct, **TOL)


@pytest.mark.parametrize("block_rows", [0, 1, 4, 7, 29, 30, 31, 1000])
def test_chunked_ce_equals_plain_ce(block_rows):
    hidden, pos, _, weight = make_inputs(seed=1)
    loss = make_loss("ce", 1, block_rows=block_rows)
    empty = torch.zeros(P, 0, dtype=torch.long)
    assert loss.num_negatives == 0
    assert_same(lambda: loss(hidden, pos, empty, weight), lambda: plain_ce(hidden, pos, weight), hidden, weight)


def test_ce_never_scores_padding_and_is_stable_for_large_logits():
    hidden, pos, _, weight = make_inputs(seed=2)
    loss = make_loss("ce", 0, block_rows=7)
    big = (hidden * 300).detach().requires_grad_()  # logits in the thousands: a naive exp overflows
    value = loss(big, pos, torch.zeros(P, 0, dtype=torch.long), weight)
    value.backward()
    assert torch.isfinite(value)
    torch.testing.assert_close(value.detach(), plain_ce(big, pos, weight).detach(), **TOL)
    assert torch.all(weight.grad[0] == 0)  # row 0 (padding) is never a candidate


def test_chunked_logsumexp_gradcheck_and_non_unit_upstream_gradient():
    hidden, _, _, weight = make_inputs(seed=3, num_items=11)
    assert torch.autograd.gradcheck(lambda h, w: chunked_logsumexp(h, w, 3), (hidden, weight))
    upstream = torch.linspace(-1.0, 2.0, P, dtype=torch.float64)
    assert_same(
        lambda: (chunked_logsumexp(hidden, weight, 4) * upstream).sum(),
        lambda: (torch.logsumexp(hidden @ weight.T, 1) * upstream).sum(),
        hidden,
        weight,
    )


def test_chunked_ce_keeps_no_positions_by_items_matrix():
    num_positions, num_items, chunk = 16, 1000, 64
    hidden, pos, _, weight = make_inputs(seed=4, num_positions=num_positions, num_items=num_items)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    loss = make_loss("ce", 0, block_rows=chunk)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = loss(hidden, pos, torch.zeros(num_positions, 0, dtype=torch.long), weight)
    value.backward()
    assert saved and max(saved) <= (num_items + 1) * D  # at most the weights themselves, never (P, I)
    # The measure sees a (P, I) matrix when there is one: the unchunked softmax saves one.
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        plain_ce(hidden, pos, weight)
    assert max(saved) >= num_positions * num_items > (num_items + 1) * D


# --- sampled-ce ------------------------------------------------------------------------------------------


def test_sampled_ce_matches_direct_formula():
    hidden, pos, neg, weight = make_inputs(seed=5)
    loss = make_loss("sampled-ce", N)

    def reference():
        terms = []
        for p in range(P):
            pos_score = torch.exp(hidden[p] @ weight[pos[p]])
            neg_scores = sum(torch.exp(hidden[p] @ weight[neg[p, j]]) for j in range(N))
            terms.append(-torch.log(pos_score / (pos_score + neg_scores)))
        return torch.stack(terms).mean()

    assert loss.num_negatives == N
    assert_same(lambda: loss(hidden, pos, neg, weight), reference, hidden, weight)


@pytest.mark.parametrize("seed", [6, 7])
def test_in_batch_sampled_ce_logq_matches_slow_loop(seed):
    num_positions = 12
    hidden, pos, _, weight = make_inputs(seed=seed, num_positions=num_positions, max_positive=5)
    assert len(set(pos.tolist())) < num_positions  # duplicates exercise collisions and logQ
    loss = make_loss("sampled-ce", 3, in_batch=True)

    def reference():
        # candidates of row p: every position k's target, logit - log(frequency of pos_k in the batch),
        # except columns k != p that hold p's own target
        terms = []
        for p in range(num_positions):
            logits, target = [], None
            for k in range(num_positions):
                if k != p and pos[k] == pos[p]:
                    continue
                freq = (pos == pos[k]).sum().item() / num_positions
                if k == p:
                    target = len(logits)
                logits.append(hidden[p] @ weight[pos[k]] - math.log(freq))
            terms.append(-torch.log_softmax(torch.stack(logits), 0)[target])
        return torch.stack(terms).mean()

    assert loss.num_negatives == 0
    empty = torch.zeros(num_positions, 0, dtype=torch.long)
    assert_same(lambda: loss(hidden, pos, empty, weight), reference, hidden, weight)


def test_in_batch_without_duplicates_is_plain_in_batch_softmax():
    hidden, _, _, weight = make_inputs(seed=8)
    pos = torch.randperm(ITEMS)[:P] + 1  # distinct targets: all frequencies equal, logQ is a constant
    loss = make_loss("sampled-ce", 0, in_batch=1)
    assert_same(
        lambda: loss(hidden, pos, torch.zeros(P, 0, dtype=torch.long), weight),
        lambda: F.cross_entropy(hidden @ weight[pos].T, torch.arange(P)),
        hidden,
        weight,
    )


# --- gbce ------------------------------------------------------------------------------------------------


def gbce_reference(hidden, pos, neg, weight, t: float):
    """The paper's formula, naively: p = sigmoid(r_pos) ** beta, BCE over the 1 + N candidates."""
    num_items, num_negatives = weight.shape[0] - 1, neg.shape[1]
    alpha = num_negatives / (num_items - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    terms = []
    for p in range(hidden.shape[0]):
        prob = torch.sigmoid(hidden[p] @ weight[pos[p]]) ** beta
        terms.append(-torch.log(prob))
        terms += [-torch.log(1 - torch.sigmoid(hidden[p] @ weight[neg[p, j]])) for j in range(num_negatives)]
    return torch.stack(terms).mean()


@pytest.mark.parametrize("t", [0.0, 0.5, 0.75, 1.0])
def test_gbce_matches_formula(t):
    hidden, pos, neg, weight = make_inputs(seed=9)
    loss = make_loss("gbce", N, t=t)
    assert loss.num_negatives == N
    assert_same(
        lambda: loss(hidden, pos, neg, weight), lambda: gbce_reference(hidden, pos, neg, weight, t), hidden, weight
    )


def test_gbce_default_t_and_beta():
    loss = make_loss("gbce", 256)
    assert loss.t == 0.75
    alpha = 256 / 3415
    assert loss.beta(3416) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))


def test_gbce_with_t0_is_plain_bce():
    hidden, pos, neg, weight = make_inputs(seed=10)
    gbce = make_loss("gbce", N, t=0)
    assert gbce.beta(ITEMS) == 1.0

    def plain_bce():  # BCE over the (P, 1 + N) candidates, target first, mean over all terms
        logits = torch.cat(
            [(hidden * weight[pos]).sum(-1, keepdim=True), torch.einsum("pd,pnd->pn", hidden, weight[neg])], 1
        )
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1
        return F.binary_cross_entropy_with_logits(logits, labels)

    assert_same(lambda: gbce(hidden, pos, neg, weight), plain_bce, hidden, weight)
    one = neg[:, :1]  # with one negative it is half the paper's bce (which averages the two terms' means)
    bce = make_loss("bce", 1)
    torch.testing.assert_close(
        make_loss("gbce", 1, t=0)(hidden, pos, one, weight), bce(hidden, pos, one, weight) / 2, **TOL
    )


def test_gbce_is_stable_for_extreme_logits():
    hidden, pos, neg, weight = make_inputs(seed=11)
    loss = make_loss("gbce", N, t=0.75)
    value = loss(hidden * 1000, pos, neg, weight)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()


# --- make_loss -------------------------------------------------------------------------------------------


def test_every_registered_loss_is_documented_and_gives_a_gradient():
    # The README's `--loss` table is the user's list of choices: it must name exactly the registered losses.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Losses (`--loss`)", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.MULTILINE))
    assert documented == set(LOSSES)
    for name in LOSSES:
        hidden, pos, neg, weight = make_inputs(seed=14)
        loss = make_loss(name, N)
        value = loss(hidden, pos, neg[:, : loss.num_negatives], weight)
        value.backward()
        assert torch.isfinite(value) and value > 0, name
        assert hidden.grad.abs().sum() > 0 and weight.grad.abs().sum() > 0, name


def test_make_loss_errors():
    with pytest.raises(ConfigError, match="unknown loss"):
        make_loss("softmax")
    with pytest.raises(ConfigError, match="negatives must be >= 0"):
        make_loss("bce", -1)
    with pytest.raises(ConfigError, match="unknown option"):
        make_loss("bce", 1, t=0.5)
    with pytest.raises(ConfigError, match="unknown option"):
        make_loss("ce", 1, chunk=10)
    with pytest.raises(ConfigError, match="block_rows"):
        make_loss("ce", 0, block_rows=2.5)
    with pytest.raises(ConfigError, match="block_rows"):
        make_loss("ce", 0, block_rows=-1)
    with pytest.raises(ConfigError, match="in_batch"):
        make_loss("sampled-ce", 1, in_batch="maybe")
    with pytest.raises(ConfigError, match="negatives >= 1"):
        make_loss("sampled-ce", 0)
    with pytest.raises(ConfigError, match="negatives >= 1"):
        make_loss("gbce", 0)
    with pytest.raises(ConfigError, match="option t"):
        make_loss("gbce", 1, t=1.5)


def test_make_loss_negatives_to_draw():
    assert make_loss("ce", 5).num_negatives == 0
    assert make_loss("ce", 1, block_rows=64.0).block_rows == 64  # TOML may give floats
    assert make_loss("sampled-ce", 5, in_batch=True).num_negatives == 0
    assert make_loss("sampled-ce", 5, in_batch=False).num_negatives == 5
    assert make_loss("bce", 3).num_negatives == 3


# --- shared negatives -------------------------------------------------------------------------------------


def shared_inputs(seed: int):
    """Inputs whose (N,) shared negatives include some positions' own targets (to exercise the mask)."""
    hidden, pos, _, weight = make_inputs(seed=seed)
    shared = torch.tensor([pos[0].item(), pos[3].item(), 29, 30])
    shared = torch.unique(shared)  # the sampler draws distinct items
    return hidden, pos, shared, weight


def test_shared_negatives_without_collisions_equal_per_position_ones():
    hidden, pos, _, weight = make_inputs(seed=11, max_positive=20)
    shared = torch.tensor([21, 25, 30])  # never a target
    per_position = shared.expand(P, -1)
    for name, options in [("bce", {}), ("sampled-ce", {}), ("gbce", {"t": 0.5})]:
        a, b = make_loss(name, 3, shared=True, **options), make_loss(name, 3, **options)
        assert a.shared and not b.shared
        assert_same(
            lambda a=a: a(hidden, pos, shared, weight), lambda b=b: b(hidden, pos, per_position, weight), hidden, weight
        )


def test_shared_sampled_ce_drops_each_positions_own_target():
    hidden, pos, shared, weight = shared_inputs(seed=12)
    loss = make_loss("sampled-ce", len(shared), shared=True)

    def reference():
        terms = []
        for p in range(P):
            negs = [j for j in shared.tolist() if j != pos[p]]
            logits = torch.stack([hidden[p] @ weight[pos[p]], *[hidden[p] @ weight[j] for j in negs]])
            terms.append(-torch.log_softmax(logits, 0)[0])
        return torch.stack(terms).mean()

    assert_same(lambda: loss(hidden, pos, shared, weight), reference, hidden, weight)


def test_shared_bce_and_gbce_drop_each_positions_own_target():
    hidden, pos, shared, weight = shared_inputs(seed=13)
    n = len(shared)
    pairs = [(p, j) for p in range(P) for j in shared.tolist() if j != pos[p]]
    assert len(pairs) < P * n  # some pairs are masked

    def bce_reference():  # per position: -log sigmoid(pos) - mean over its kept negatives of log(1 - sigmoid)
        terms = []
        for p in range(P):
            negs = [j for q, j in pairs if q == p]
            neg_term = torch.stack([-F.logsigmoid(-(hidden[p] @ weight[j])) for j in negs]).mean()
            terms.append(-F.logsigmoid(hidden[p] @ weight[pos[p]]) + neg_term)
        return torch.stack(terms).mean()

    bce = make_loss("bce", n, shared=True)
    assert_same(lambda: bce(hidden, pos, shared, weight), bce_reference, hidden, weight)

    gbce = make_loss("gbce", n, t=0.75, shared=True)
    beta = gbce.beta(ITEMS)

    def gbce_reference():
        total = sum(-beta * F.logsigmoid(hidden[p] @ weight[pos[p]]) for p in range(P))
        total = total + sum(-F.logsigmoid(-(hidden[p] @ weight[j])) for p, j in pairs)
        return total / (P * (1 + n))

    assert_same(lambda: gbce(hidden, pos, shared, weight), gbce_reference, hidden, weight)


def test_shared_option_errors():
    with pytest.raises(ConfigError, match="in_batch and shared"):
        make_loss("sampled-ce", 4, in_batch=True, shared=True)
    with pytest.raises(ConfigError, match="shared must be true or false"):
        make_loss("bce", 4, shared="maybe")
    with pytest.raises(ConfigError, match="unknown option"):
        make_loss("ce", 0, shared=True)


@pytest.mark.parametrize(
    "name, negatives, options",
    [
        ("bce", 2, {}),
        ("bce", 2, {"shared": True}),
        ("ce", 0, {}),
        ("sampled-ce", 2, {}),
        ("sampled-ce", 2, {"shared": True}),
        ("sampled-ce", 0, {"in_batch": True}),
        ("gbce", 2, {"shared": True}),
    ],
)
def test_no_positions_give_zero_loss_not_nan(name, negatives, options):
    hidden, _, _, weight = make_inputs()
    empty = hidden[:0]
    neg = torch.tensor([3, 4]) if options.get("shared") else torch.zeros(0, negatives, dtype=torch.long)
    value = make_loss(name, negatives, **options)(empty, torch.zeros(0, dtype=torch.long), neg, weight)
    assert value.item() == 0.0
    value.backward()
