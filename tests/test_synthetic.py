"""The embedded synthetic dataset: deterministic, well-formed, and sequential (not just popularity)."""

from __future__ import annotations

import hashlib

import numpy as np

from sasrec.data.synthetic import make_synthetic


def test_deterministic_for_a_seed():
    a, b = make_synthetic(seed=7), make_synthetic(seed=7)
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.items, b.items)
    c = make_synthetic(seed=8)
    assert not (len(c.items) == len(a.items) and np.array_equal(c.items, a.items))


def test_shape_ids_and_lengths():
    seqs = make_synthetic()
    assert seqs.num_users == 2000 and seqs.num_items == 500
    assert seqs.items.dtype == np.int64 and seqs.offsets[0] == 0
    assert seqs.items.min() >= 1 and seqs.items.max() <= 500
    lengths = seqs.lengths
    assert lengths.min() >= 5 and lengths.max() <= 60
    assert np.median(lengths) < lengths.mean() < 20  # long-tailed
    assert all(len(set(s)) == len(s) for s in seqs.to_lists())  # no repeats within a user
    small = make_synthetic(num_users=10, num_items=8, seed=1)
    assert small.num_users == 10 and small.lengths.max() <= 8 and small.items.max() <= 8


def test_default_dataset_is_the_one_its_fingerprint_names():
    # A run on the default dataset records the fingerprint "synthetic:default" (sasrec.runs.load_dataset),
    # and --resume trusts it: if the generator's output changes, that name must change with it.
    seqs = make_synthetic()
    digest = hashlib.sha256(seqs.offsets.astype("<i8").tobytes() + seqs.items.astype("<i8").tobytes()).hexdigest()
    assert (len(seqs.items), digest) == (23310, "0f5888b2c6829a651055af675c9067b6b1153a8aad616f8c5fef940d9f6fee36"), (
        "make_synthetic() changed: rename the 'synthetic:default' fingerprint in sasrec.runs, then update this"
    )


def test_transitions_beat_popularity_on_held_out_last_items():
    seqs = make_synthetic()
    n = seqs.num_items
    transitions = np.zeros((n + 1, n + 1))
    popularity = np.zeros(n + 1)
    for seq in seqs.to_lists():
        train = seq[:-1]
        np.add.at(transitions, (train[:-1], train[1:]), 1)
        np.add.at(popularity, train, 1)
    hits_pop = hits_markov = 0
    for seq in seqs.to_lists():
        history, target = seq[:-1], seq[-1]
        hits_pop += hit_at_10(popularity, history, target)
        hits_markov += hit_at_10(transitions[history[-1]] + 1e-6 * popularity, history, target)
    hr_pop, hr_markov = hits_pop / seqs.num_users, hits_markov / seqs.num_users
    assert hr_markov > 0.5 and hr_markov > 3 * hr_pop, (hr_markov, hr_pop)


def hit_at_10(scores: np.ndarray, history: list[int], target: int) -> bool:
    scores = scores.astype(float)  # a copy
    scores[0] = -np.inf
    scores[history] = -np.inf  # never recommend what the user already has
    return target in np.argpartition(-scores, 10)[:10]
