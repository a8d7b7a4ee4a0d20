import numpy as np
import pytest
import torch
from einops import rearrange
from test_rl import tiny_mc, tiny_model

import internal_rl.analysis.rescue as rescue
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


def test_candidates_override_z_only_at_the_references_last_decision(monkeypatch):
    """Pass 2 on a real run (a switch that fires every step, so references span 1 to 100 decisions): every
    candidate row, and no reference row, takes its z exactly once, at decision index (reference's decisions − 1)
    of its group, counted independently from the policy's calls; that z is mean + s·σ·ε (policy) or s·ε (prior)
    with ε row r of randn(n, n_z) from a generator seeded seed + 1; reference rows replay pass 1 exactly."""
    G, M, seed = 4, 5, 3
    cands = (Candidate("prior", 4.0), Candidate("policy", 8.0))
    policy = _policy()
    passes, hits = [], []
    real_run = rescue._run

    def spy_run(core, pol, sd, at=None, z_of=None, desc=None):
        if z_of is None:
            passes.append(real_run(core, pol, sd))
            return passes[-1]
        calls = torch.zeros(core.n, dtype=torch.long)  # decisions each row has started, counted here
        step_rows = pol.step_rows

        def counting_step_rows(e, state, rows):
            calls[rows] += 1
            return step_rows(e, state, rows)

        def recording_z_of(rows, mean, logstd):
            z = z_of(rows, mean, logstd)
            hits.append((rows.clone(), calls[rows] - 1, mean.clone(), logstd.clone(), z.clone()))
            return z

        monkeypatch.setattr(pol, "step_rows", counting_step_rows)
        passes.append(real_run(core, pol, sd, at, recording_z_of))
        passes.append(at.copy())
        return passes[1]

    monkeypatch.setattr(rescue, "_run", spy_run)
    res = rescue_failed_layouts(tiny_model(), tiny_mc(always_switch=True), 1, policy, POST_TRAINING_TASK,
                                groups=G, group_size=M, seed=seed, candidates=cands)
    ref, alt, at = passes
    ref_decisions = rearrange(ref["decisions"], "(g m) -> g m", m=M)[:, 0]
    assert (ref_decisions > 1).any() and len(set(ref_decisions.tolist())) > 1  # "last" is not just index 0
    expected_at = [-1 if r % M == 0 else int(ref_decisions[r // M]) - 1 for r in range(G * M)]
    assert at.tolist() == expected_at
    rows = torch.cat([h[0] for h in hits]).tolist()
    assert sorted(rows) == [r for r in range(G * M) if r % M != 0]  # each candidate row once, no reference row
    noise = torch.randn(G * M, policy.n_z, generator=torch.Generator().manual_seed(seed + 1)).double()
    for r_hit, index, mean, logstd, z in hits:
        for i, r in enumerate(r_hit.tolist()):
            assert int(index[i]) == expected_at[r]
            c = cands[(r % M - 1) % len(cands)]
            if c.kind == "policy":
                want = mean[i].double() + c.scale * logstd[i].double().exp() * noise[r]
            else:
                want = c.scale * noise[r]
            torch.testing.assert_close(z[i].double(), want, rtol=1e-5, atol=1e-5)
    for key in ("decisions", "success", "progress", "steps"):
        assert (alt[key][::M] == ref[key][::M]).all()
    assert res["groups_consistent"] == 1.0 and res["reference_success_pass2"] == res["reference_success"]
    assert res["candidate_rows_changed"] > 0


def _scripted(success, progress, steps, decisions, M):
    """A pass's result from per-row lists given group by group."""
    flat = lambda x: rearrange(np.array(x), "g m -> (g m)", m=M)  # noqa: E731
    return {"success": flat(success).astype(bool), "progress": flat(progress), "steps": flat(steps),
            "decisions": flat(decisions)}


def test_rescue_figures_from_scripted_passes(monkeypatch):
    """With the episode runner replaced by scripted passes (5 groups × 4 rows, candidates prior:1, policy:2
    cycling over columns 1..3 as prior, policy, prior), every figure equals its hand count: 4 failed layouts
    (progress 2, 3, 0, 1); rescued in groups 1 (both priors, the policy too) and 3 (a prior), crossed also in
    group 4 (a prior reaches progress 2 > 1); group 2's inconsistent non-reference row does not change its
    reference (column 0); pass 2 overrides each candidate row at its group's reference decisions − 1."""
    M = 4
    pass1 = _scripted(success=[[1] * 4, [0] * 4, [0] * 4, [0] * 4, [0] * 4],
                      progress=[[6] * 4, [2] * 4, [3, 2, 3, 3], [0] * 4, [1] * 4],
                      steps=[[20] * 4, [9] * 4, [12] * 4, [3] * 4, [5] * 4],
                      decisions=[[3] * 4, [2] * 4, [5] * 4, [1] * 4, [4] * 4], M=M)
    pass2 = _scripted(success=[[1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]],
                      progress=[[6, 4, 6, 6], [2, 6, 6, 6], [3, 1, 3, 3], [0, 6, 0, 0], [1, 2, 0, 1]],
                      steps=[[20, 15, 20, 20], [9, 14, 11, 13], [12, 7, 12, 16], [3, 8, 3, 3], [5, 9, 4, 5]],
                      decisions=[[3] * 4, [2] * 4, [5] * 4, [1] * 4, [4] * 4], M=M)
    seen = []

    def scripted_run(core, pol, sd, at=None, z_of=None, desc=None):
        seen.append(None if at is None else at.tolist())
        return pass1 if at is None else pass2

    monkeypatch.setattr(rescue, "_run", scripted_run)
    res = rescue_failed_layouts(tiny_model(), tiny_mc(), 1, _policy(), "0-1-2-3-4-5", groups=5, group_size=M,
                                seed=0, candidates=(Candidate("prior", 1.0), Candidate("policy", 2.0)))
    assert seen == [None, [-1, 2, 2, 2, -1, 1, 1, 1, -1, 4, 4, 4, -1, 0, 0, 0, -1, 3, 3, 3]]
    assert res["groups_consistent"] == 4 / 5
    assert res["reference_success"] == 1 / 5 and res["reference_success_pass2"] == 1 / 5
    assert res["failed_layouts"] == 4
    assert res["reference_fail_progress_hist"] == [1, 1, 1, 1, 0, 0, 0]
    # changed (progress, steps or success differ from column 0): 1 + 3 + 2 + 1 + 2 of the 15 candidate rows
    assert res["candidate_rows_changed"] == pytest.approx(9 / 15)
    assert res["rescued"] == 2 / 4 and res["crossed"] == 3 / 4
    assert res["success_with_rescue"] == pytest.approx((1 + 2) / 5)
    assert res["by_candidate"] == {"prior_x1": {"rescued": 2 / 4, "row_success": 3 / 8},
                                   "policy_x2": {"rescued": 1 / 4, "row_success": 1 / 4}}
    assert res["rescued_by_fail_progress"] == {0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0}


def test_rescue_rejects_bad_input():
    assert parse_candidates(["prior:1", "policy:2.5", "policy"]) == (
        Candidate("prior", 1.0), Candidate("policy", 2.5), Candidate("policy", 1.0))
    for bad, msg in ((["gauss:1"], "kind"), (["policy:x"], "number"), (["prior:-1"], ">= 0"), ([], "at least one")):
        with pytest.raises(ValueError, match=msg):
            parse_candidates(bad)
    with pytest.raises(ValueError, match="group_size >= 2"):
        rescue_failed_layouts(tiny_model(), tiny_mc(), 1, _policy(), POST_TRAINING_TASK, groups=2, group_size=1)
