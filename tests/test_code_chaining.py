"""The learned-code diagnostic: codes read per subgoal at switches, then chained by the env's next subgoal."""

import json

import numpy as np
import pytest
import torch

from internal_rl.analysis.code_chaining import chain_codes, subgoal_codes
from internal_rl.control.metacontroller import MetaController, MetaControllerConfig
from internal_rl.data.trajectories import Trajectories
from internal_rl.experiments import presets
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig, prev_actions_of
from internal_rl.phases.data import run_data
from internal_rl.rl.option_env import OptionCore


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("codes")
    run_data(presets.data_config("smoke", str(root / "data")))
    torch.manual_seed(0)
    model = SequenceModel(SequenceModelConfig(obs_dim=637, n_actions=4, d_model=32, depth=2, n_heads=2,
                                              head_dim=16, mlp_hidden=64)).eval()
    mc = MetaController(MetaControllerConfig(d_model=32, n_z=3, rank=2)).eval()
    return root, model, mc


def test_codes_are_the_mean_switch_code_per_subgoal(setup):
    root, model, mc = setup
    data = Trajectories.load(root / "data" / "D_star_heldout")
    batch = data.batch(np.arange(len(data)), torch.device("cpu"))
    found = subgoal_codes(model, mc, 1, batch, 4)
    # reference: the same forward pass, then a plain loop over every valid step
    with torch.no_grad():
        T = batch["actions"].shape[1]
        e = model.lower(batch["obs"][:, :T], prev_actions_of(batch["actions"]) if model.prev_action is not None
                        else None, 1)
        out = mc(e, batch["mask"], sample=False)
    groups = {k: [] for k in range(4)}
    for i in range(len(batch["lengths"])):
        for t in range(int(batch["lengths"][i])):
            if out.beta[i, t] > mc.config.beta_threshold:
                groups[int(batch["subgoals"][i, t])].append(out.z[i, t].numpy())
    for k in range(4):
        assert found["counts"][k] == len(groups[k])
        if groups[k]:
            np.testing.assert_allclose(found["codes"][k], np.mean(groups[k], 0), rtol=1e-5, atol=1e-6)
        else:
            assert np.isnan(found["codes"][k]).all()
    assert found["counts"].sum() >= len(batch["lengths"])  # β_1 = 1: every episode switches at t = 1
    bad = dict(batch, subgoals=batch["subgoals"].clamp(min=0) + 4)
    with pytest.raises(ValueError, match="subgoal labels"):
        subgoal_codes(model, mc, 1, bad, 4)


@pytest.mark.parametrize("oracle", [False, True])
def test_each_decision_gets_the_next_subgoals_code(setup, monkeypatch, oracle):
    _, model, mc = setup
    codes = np.arange(12, dtype=np.float64).reshape(4, 3)  # row k is recognisably subgoal k's
    seen = []
    advance = OptionCore.advance

    def spy(self, z, decide):
        seen.append((z[decide].clone(), self.env.subgoal[decide.numpy()].copy()))
        return advance(self, z, decide)

    monkeypatch.setattr(OptionCore, "advance", spy)
    res = chain_codes(model, mc, 1, codes, "0-1-2-3-4-5-6-7-0-1-2-3", episodes=8, seed=3, oracle_switch=oracle)
    assert len(seen) > 0 and sum(len(s) for _, s in seen) == pytest.approx(res["decisions_per_episode"] * 8)
    for z, sub in seen:
        np.testing.assert_array_equal(z.numpy(), codes[sub].astype(np.float32))
    assert sum(res["colours_visited_histogram"]) == 8 and len(res["colours_visited_histogram"]) == 13
    assert 0.0 <= res["success"] <= 1.0
    failed = sum(res["wrong_colour_histogram"])  # every episode that did not succeed or run out of time
    assert len(res["wrong_colour_histogram"]) == 8 and failed <= 8 - round(8 * res["success"])
    if oracle:  # decisions only at t = 1 and where the true subgoal changed: at most one per colour pair reached
        progress = np.repeat(np.arange(13), res["colours_visited_histogram"])
        assert res["decisions_per_episode"] <= np.mean(1 + progress // 2)
    with pytest.raises(ValueError, match="no code"):
        chain_codes(model, mc, 1, np.full((4, 3), np.nan), None, episodes=2)


def test_codes_phase_writes_codes_json(setup, tmp_path):
    from internal_rl.cli import main

    root, _, _ = setup
    run = ["--preset", "smoke", "--root", str(root)]
    for cmd in ("pretrain", "discover"):
        main([cmd, *run, "--no-progress"])
    main(["codes", *run, "--out", str(tmp_path / "codes"), "--scales", "1", "2"])
    res = json.loads((tmp_path / "codes" / "codes.json").read_text())
    assert [(c["scale"], c["tasks"]) for c in res["chaining"]] == [(1, "pretraining"), (1, "post"),
                                                                   (2, "pretraining"), (2, "post")]
    assert np.asarray(res["codes"]).shape == (4, 8) and len(res["counts"]) == 4


def test_oracle_codes_are_read_at_the_true_boundaries(setup):
    root, model, mc = setup
    data = Trajectories.load(root / "data" / "D_star_heldout")
    batch = data.batch(np.arange(len(data)), torch.device("cpu"))
    found = subgoal_codes(model, mc, 1, batch, 4, oracle_switch=True)
    expect = np.zeros(4, dtype=np.int64)  # one switch per segment: t = 1 and every label change
    for i in range(len(batch["lengths"])):
        labels = batch["subgoals"][i, : int(batch["lengths"][i])].numpy()
        starts = np.r_[True, labels[1:] != labels[:-1]]
        expect += np.bincount(labels[starts], minlength=4)
    np.testing.assert_array_equal(found["counts"], expect)
