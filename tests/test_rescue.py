import pytest
import torch
from test_rl import tiny_mc, tiny_model

from internal_rl.analysis.rescue import Candidate, parse_candidates, rescue_failed_layouts
from internal_rl.envs.pinpad import POST_TRAINING_TASK
from internal_rl.rl.policy import LatentPolicy


def _policy(seed: int = 0) -> LatentPolicy:
    torch.manual_seed(seed)
    pol = LatentPolicy(32, 4, width=16)
    torch.nn.init.normal_(pol.head.weight, std=0.3)  # a policy that is not the prior
    return pol


def test_a_candidate_equal_to_the_mean_repeats_the_reference():
    """Scale 0 around the policy is z = mean: pass 2 is pass 1 row for row, so nothing is rescued or changed,
    and argmax actions with z = mean make every row of a layout group agree."""
    res = rescue_failed_layouts(tiny_model(), tiny_mc(), 1, _policy(), "0-1-2-3", groups=6, group_size=3, seed=5,
                                candidates=(Candidate("policy", 0.0),))
    assert res["groups_consistent"] == 1.0
    assert res["reference_success_pass2"] == res["reference_success"]
    assert res["candidate_rows_changed"] == 0.0
    assert res["failed_layouts"] == round(6 * (1 - res["reference_success"]))
    assert sum(res["reference_fail_progress_hist"]) == res["failed_layouts"]
    assert res["failed_layouts"] > 0  # a random tiny model fails here, so the rescue figures are computed
    assert res["rescued"] == 0.0 and res["crossed"] == 0.0
    assert res["success_with_rescue"] == res["reference_success"]


def test_candidates_change_episodes_and_the_figures_are_consistent():
    res = rescue_failed_layouts(tiny_model(), tiny_mc(), 1, _policy(), POST_TRAINING_TASK, groups=8, group_size=9,
                                seed=3, candidates=(Candidate("prior", 4.0), Candidate("policy", 8.0)))
    assert res["groups_consistent"] == 1.0 and res["reference_success_pass2"] == res["reference_success"]
    assert res["candidate_rows_changed"] > 0  # the override reached the model: some episodes went elsewhere
    assert res["failed_layouts"] > 0  # a random tiny model does not solve the 12-colour task
    assert 0.0 <= res["rescued"] <= res["crossed"] <= 1.0
    assert res["success_with_rescue"] >= res["reference_success"]
    assert set(res["by_candidate"]) == {"prior_x4", "policy_x8"}
    assert all(0.0 <= v["row_success"] <= v["rescued"] <= res["rescued"] for v in res["by_candidate"].values())
    assert set(map(int, res["rescued_by_fail_progress"])) == {i for i, c in enumerate(res["reference_fail_progress_hist"]) if c}


def test_rescue_rejects_bad_input():
    assert parse_candidates(["prior:1", "policy:2.5", "policy"]) == (
        Candidate("prior", 1.0), Candidate("policy", 2.5), Candidate("policy", 1.0))
    for bad, msg in ((["gauss:1"], "kind"), (["policy:x"], "number"), (["prior:-1"], ">= 0"), ([], "at least one")):
        with pytest.raises(ValueError, match=msg):
            parse_candidates(bad)
    with pytest.raises(ValueError, match="group_size >= 2"):
        rescue_failed_layouts(tiny_model(), tiny_mc(), 1, _policy(), POST_TRAINING_TASK, groups=2, group_size=1)
