import math

import pytest
import torch

from internal_rl.analysis.progress_nll import (
    pair_choice_nll_max,
    post_task_nll_by_colours_visited,
    within_pair_mean,
)
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig


def test_within_pair_mean_weights_odd_counts_by_steps():
    rows = [{"colours_visited": 0, "steps": 10, "nll": 9.0}, {"colours_visited": 1, "steps": 1, "nll": 1.0},
            {"colours_visited": 3, "steps": 3, "nll": 2.0}]
    assert within_pair_mean(rows) == pytest.approx((1.0 + 6.0) / 4)


def test_pair_choice_nll_max_skips_the_first_pair_and_within_pair_steps():
    rows = [{"colours_visited": k, "steps": 5, "nll": nll}
            for k, nll in enumerate([9.0, 8.0, 1.5, 7.0, 2.5, 0.2, 0.9])]
    assert pair_choice_nll_max(rows) == 2.5  # counts 2, 4, 6 only: count 0 (no pair yet) and odd counts are out
    with pytest.raises(ValueError, match="even colours_visited"):
        pair_choice_nll_max(rows[:2])


def test_post_task_profile_covers_all_twelve_colours():
    torch.manual_seed(0)
    m = SequenceModel(SequenceModelConfig(d_model=16, depth=2, n_heads=2, head_dim=8, mlp_hidden=32, encoder="nav"))
    rows = post_task_nll_by_colours_visited(m, episodes=8, seed=0)
    assert [r["colours_visited"] for r in rows] == list(range(12))
    # an untrained model is near uniform over 4 actions
    assert all(abs(r["nll"] - math.log(4)) < 0.2 for r in rows)
    assert sum(r["steps"] for r in rows) > 8 * 12
