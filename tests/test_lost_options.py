import itertools

import numpy as np
import pytest
import torch

from internal_rl.analysis.lost_options import (
    auc,
    fatal_aucs,
    fatal_decisions,
    index_only_scores,
    train_fatal_probe,
)


def test_fatal_decisions_are_the_last_decision_of_failed_episodes():
    lengths = torch.tensor([3, 1, 4, 2])
    mask = torch.arange(4)[None] < lengths[:, None]
    success = torch.tensor([False, False, True, False])
    fatal = fatal_decisions(mask, success)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 2] = expected[1, 0] = expected[3, 1] = True
    assert torch.equal(fatal, expected)


def test_auc_counts_ordered_pairs_and_halves_ties():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 4, 9).astype(float), rng.integers(0, 4, 7).astype(float)  # many ties
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    assert auc(pos, neg) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert auc([2.0, 3.0], [0.0, 1.0]) == 1.0 and auc([0.0], [1.0]) == 0.0 and auc([1.0], [1.0]) == 0.5
    assert np.isnan(auc([], [1.0]))


def test_probe_finds_a_planted_cause_of_failure_that_the_index_cannot():
    """The options that fail start where the input's first feature is high (and only they do): the probe
    separates them within every decision index on held-out episodes; the index-only baseline cannot (0.5
    within an index: one score per index)."""
    g = torch.Generator().manual_seed(0)
    B, K, D = 600, 4, 8
    lengths = torch.randint(1, K + 1, (B,), generator=g)
    mask = torch.arange(K)[None] < lengths[:, None]
    inputs = torch.randn(B, K, D, generator=g)
    success = torch.rand(B, generator=g) < 0.5
    fatal = fatal_decisions(mask, success)
    inputs[:, :, 0] = torch.where(fatal, 0.5 + inputs[:, :, 0].abs(), -inputs[:, :, 0].abs())
    train, test = torch.arange(400), torch.arange(400, B)
    probe = train_fatal_probe(inputs[train], mask[train], fatal[train], epochs=40, batch=100, lr=3e-3, width=16)
    with torch.no_grad():
        scores = probe(inputs, mask)
    res = fatal_aucs(scores, mask, fatal, test)
    assert res["within_index"] > 0.85 and res["pooled"] > 0.85
    assert res["fatal"] == int(fatal[test].sum()) and res["decisions"] == int(mask[test].sum())
    base = fatal_aucs(index_only_scores(mask, fatal, train), mask, fatal, test)
    assert base["within_index"] == pytest.approx(0.5)  # one score per index: every pair within it ties
    rate = fatal[train].float().sum(0) / mask[train].float().sum(0)
    torch.testing.assert_close(index_only_scores(mask, fatal, train)[0], rate)


def pair_auc(pos, neg):
    """Plain O(n²) reference: the share of (positive, negative) pairs ordered right, ties counting ½."""
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


def test_auc_matches_pair_counting_on_random_data():
    """`auc` equals the pair-counting loop on seeded random scores of unequal sizes, rounded to few levels
    (ties within and across the two sets) or continuous, and swapping the sets gives 1 − AUC."""
    rng = np.random.default_rng(7)
    for n_pos, n_neg, levels in ((1, 1, 2), (1, 13, 3), (17, 4, 5), (30, 23, 0), (40, 41, 4)):
        pos, neg = rng.normal(0.3, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)
        if levels:
            pos, neg = np.round(pos * levels / 2), np.round(neg * levels / 2)
        assert auc(pos, neg) == pytest.approx(pair_auc(pos, neg), abs=1e-12)
        assert auc(neg, pos) == pytest.approx(1.0 - pair_auc(pos, neg), abs=1e-12)


def test_fatal_aucs_weights_indices_by_fatal_count_and_skips_sparse_ones():
    """Hand-built rollouts, 25 scored episodes: decision 1 has 10 fatal (all scored above its 15 safe: AUC 1),
    decision 2 has 5 fatal (all below its 10 safe: AUC 0), decision 3 only 4 fatal (below the default
    min_count 5; AUC 1 there). `by_decision` lists decisions 1 and 2 only and `within_index` is their mean
    weighted by fatal decisions, (10·1 + 5·0) / 15, not the plain mean ½ nor 14/19 with decision 3.
    Padded steps (score 9) and three episodes outside `rows` (fatal at decision 2, score 9) change nothing;
    `pooled` is the pair-counting AUC over all 50 valid decisions."""
    rng = np.random.default_rng(0)
    lengths = [1] * 10 + [2] * 5 + [3] * 4 + [3] * 6 + [2] * 3  # the last 3 episodes are not in `rows`
    success = [False] * 19 + [True] * 6 + [False] * 3
    B, K = len(lengths), 3
    mask = torch.arange(K)[None] < torch.tensor(lengths)[:, None]
    fatal = fatal_decisions(mask, torch.tensor(success))
    scores = torch.full((B, K), 9.0, dtype=torch.float64)  # padding and the excluded episodes
    high, low = lambda n: rng.uniform(0.6, 1.0, n), lambda n: rng.uniform(0.0, 0.4, n)  # noqa: E731
    scores[:10, 0], scores[10:25, 0] = torch.from_numpy(high(10)), torch.from_numpy(low(15))  # decision 1
    scores[10:15, 1], scores[15:25, 1] = torch.from_numpy(low(5)), torch.from_numpy(high(10))  # decision 2
    scores[15:19, 2], scores[19:25, 2] = torch.from_numpy(high(4)), torch.from_numpy(low(6))  # decision 3
    rows = torch.arange(25)
    res = fatal_aucs(scores, mask, fatal, rows)
    assert res["by_decision"] == [{"decision": 1, "alive": 25, "fatal": 10, "auc": 1.0},
                                  {"decision": 2, "alive": 15, "fatal": 5, "auc": 0.0}]
    assert res["within_index"] == pytest.approx(10 / 15, abs=1e-12)
    assert res["fatal"] == 19 and res["decisions"] == 25 + 15 + 10
    pos = [scores[b, k].item() for b in range(25) for k in range(lengths[b]) if fatal[b, k]]
    neg = [scores[b, k].item() for b in range(25) for k in range(lengths[b]) if not fatal[b, k]]
    assert len(pos) == 19 and len(neg) == 31
    assert res["pooled"] == pytest.approx(pair_auc(pos, neg), abs=1e-12)
    # with min_count 4 decision 3 joins, weighted by its 4 fatal decisions
    low_bar = fatal_aucs(scores, mask, fatal, rows, min_count=4)
    assert [d["decision"] for d in low_bar["by_decision"]] == [1, 2, 3]
    assert low_bar["within_index"] == pytest.approx((10 + 0 + 4) / 19, abs=1e-12)
