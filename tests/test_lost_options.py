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
