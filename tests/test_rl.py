import math

import numpy as np
import pytest
import torch

from internal_rl.control.metacontroller import MetaController, MetaControllerConfig
from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig, freeze
from internal_rl.rl.option_env import OptionCore, OptionEnv
from internal_rl.rl.policy import LatentPolicy, gaussian_entropy, gaussian_logp
from internal_rl.rl.ppo import (
    Rollouts,
    clipped_surrogate,
    collect_latent,
    collect_raw,
    episode_advantages,
    latent_logp,
    ppo_update,
    raw_logp,
)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return freeze(SequenceModel(SequenceModelConfig(d_model=32, depth=2, n_heads=2, head_dim=16, mlp_hidden=64,
                                                    encoder="grid", prev_action_input=True)))


def tiny_mc(always_switch=False, seed=0):
    torch.manual_seed(seed)
    mc = MetaController(MetaControllerConfig(d_model=32, n_z=4, n_h=8, n_s=8, enc_hidden=16, dec_hidden=8, rank=4,
                                             always_switch=always_switch))
    with torch.no_grad():  # a switching unit that fires now and then
        mc.switch_out.bias.fill_(-0.5)
    return freeze(mc)


def test_policy_parallel_matches_step_and_starts_at_prior():
    torch.manual_seed(0)
    pol = LatentPolicy(32, 4, width=16).double()
    e = torch.randn(3, 7, 32, dtype=torch.float64)
    mean, logstd = pol(e)
    # zero-initialised head: N(0, I), the metacontroller's prior
    assert torch.all(mean == 0) and torch.all(logstd == 0)
    torch.nn.init.normal_(pol.head.weight, std=0.3)
    mean, logstd = pol(e)
    state = pol.initial_state(3)
    for t in range(7):
        m, s, state = pol.step(e[:, t], state)
        torch.testing.assert_close(m, mean[:, t])
        torch.testing.assert_close(s, logstd[:, t])


def test_gaussian_logp_is_joint_density():
    g = torch.Generator().manual_seed(0)
    mean, logstd, z = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    logstd = 0.3 * logstd
    ref = torch.distributions.Normal(mean, logstd.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_logp(z, mean, logstd), ref)


def test_gaussian_entropy_is_the_joint_entropy():
    logstd = torch.randn(5, 4, dtype=torch.float64) * 0.5
    ref = torch.distributions.Normal(torch.zeros_like(logstd), logstd.exp()).entropy().sum(-1)
    torch.testing.assert_close(gaussian_entropy(logstd), ref)


def test_clipped_surrogate_reference():
    """−mean over valid decisions of min(ρA, clip(ρ)A), against a loop (float64, seeded: ρ on both sides of the clip)."""
    g = torch.Generator().manual_seed(0)
    logp, old = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    vals = []
    for i in range(4):
        for k in range(3):
            if mask[i, k]:
                r = float(torch.exp(logp[i, k] - old[i, k]))
                vals.append(min(r * adv[i], min(max(r, 0.8), 1.2) * adv[i]))
    ratios = torch.exp(logp - old)[mask]
    assert (ratios < 0.8).any() and (ratios > 1.2).any()  # both clips are exercised
    assert clipped_surrogate(logp, old, adv, mask, 0.2).item() == pytest.approx(-np.mean(vals), rel=1e-12, abs=1e-12)
    adv_n = episode_advantages(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert adv_n.mean().abs() < 1e-6 and adv_n[1] > 0


def test_grpo_group_advantages_match_a_loop():
    """With groups, each episode is normalised by its own group's mean and (population) std."""
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    got = episode_advantages(r, 1e-3, group_size=4)
    for g in range(3):
        x = r[4 * g: 4 * g + 4].double()
        want = (x - x.mean()) / (x.std(unbiased=False) + 1e-3)
        torch.testing.assert_close(got[4 * g: 4 * g + 4].double(), want)
    assert torch.equal(got[4:8], torch.zeros(4))  # a group that scored alike carries no signal
    torch.testing.assert_close(episode_advantages(r, 1e-3, group_size=1),
                               (r - r.mean()) / (r.std(unbiased=False) + 1e-3))  # one group: the whole batch
    with pytest.raises(ValueError, match="divisor"):
        episode_advantages(r, 1e-3, group_size=5)


def test_grpo_groups_share_their_layout():
    env = BatchedPinPad(12, seed=0)
    env.reset(POST_TRAINING_TASK, seed=1, group_size=4)
    colours = env.color_pos.reshape(3, 4, -1)
    assert (colours == colours[:, :1]).all() and (env.wall_pos.reshape(3, 4, -1) == env.wall_pos.reshape(3, 4, -1)[:, :1]).all()
    assert (env.agent_pos.reshape(3, 4, -1) == env.agent_pos.reshape(3, 4, -1)[:, :1]).all()
    assert len({colours[g, 0].tobytes() for g in range(3)}) == 3  # groups differ
    env.reset(None, seed=2, group_size=3)  # sampled tasks: one per group
    assert all(len(set(env.tasks[i:i + 3])) == 1 for i in range(0, 12, 3))
    with pytest.raises(ValueError, match="divisor"):
        env.reset(POST_TRAINING_TASK, group_size=5)
    with pytest.raises(ValueError, match="share their task"):
        env.reset([POST_TRAINING_TASK] * 6 + ["0-1"] * 6, group_size=4)


@pytest.mark.parametrize("always_switch", [False, True])
def test_option_core_decisions_follow_switch(always_switch):
    model, mc = tiny_model(), tiny_mc(always_switch)
    core = OptionCore(model, mc, layer=1, num_envs=8, seed=3)
    pol = LatentPolicy(32, 4, width=16)
    ro = collect_latent(core, pol, seed=5)
    decisions = ro.mask.sum(1)
    assert torch.all(decisions >= 1)
    if always_switch:  # a decision at every primitive step
        assert torch.equal(decisions, ro.env_steps)
    else:
        assert torch.all(decisions <= ro.env_steps)
    # the stored log-probs are those the parallel policy pass recomputes
    torch.testing.assert_close(latent_logp(pol, ro, torch.arange(8)).masked_fill(~ro.mask, 0),
                               ro.old_logp.masked_fill(~ro.mask, 0), atol=1e-4, rtol=1e-4)


def test_option_core_oracle_switch_decides_at_subgoal_changes():
    """oracle_switch: a decision at t = 1 and exactly where the env's subgoal label changes (none else)."""
    class Scripted(BatchedPinPad):  # labels that change every 3 (even rows) or 4 (odd rows) steps
        @property
        def subgoal(self):
            return (self.step_count // (3 + np.arange(self.num_envs) % 2)) % 4

    model, mc = tiny_model(), tiny_mc()
    env = Scripted(16, seed=3)
    core = OptionCore(model, mc, layer=1, num_envs=16, seed=3, oracle_switch=True, env=env)
    core.reset(7)
    z = torch.zeros(16, mc.config.n_z)
    decide, prev_sg, n_decisions = core.need.clone(), env.subgoal.copy(), 0
    assert bool(decide.all())
    while not bool(core.done.all()):
        _, done, need = core.advance(z, decide)
        sg = env.subgoal.copy()
        expect = torch.from_numpy((sg != prev_sg) & ~done.numpy())
        assert torch.equal(need, expect)
        decide, prev_sg, n_decisions = need, sg, n_decisions + int(need.sum())
    assert n_decisions > 0
    with pytest.raises(ValueError, match="subgoal"):
        OptionCore(model, mc, layer=1, num_envs=2, env=type("E", (), {"num_envs": 2})(), oracle_switch=True)


@pytest.mark.parametrize("threshold", [None, 0.3, 0.8])
def test_option_core_matches_manual_primitive_loop(threshold):
    """The engine's β and e equal a hand-written Alg. 1 loop with the same sampled actions, and a decision is
    asked for where β ≥ the threshold (None: the metacontroller's, 0.5; this one's β sits near 0.38)."""
    model, mc = tiny_model(), tiny_mc()
    core = OptionCore(model, mc, layer=1, num_envs=2, task=POST_TRAINING_TASK, seed=11, beta_threshold=threshold)
    thr = 0.5 if threshold is None else threshold
    fired = []
    e = core.reset(seed=11)
    z = torch.randn(2, 4)
    env = BatchedPinPad(2, seed=11)
    obs = env.reset(POST_TRAINING_TASK, seed=11)
    cache = model.new_cache(2, 100)
    h = torch.zeros(2, 8)
    e_ref = model.lower_step(torch.from_numpy(obs), cache, torch.full((2,), -1), 1)
    torch.testing.assert_close(e, e_ref)
    prev = None
    for _ in range(5):
        decide = torch.ones(2, dtype=torch.bool) if prev is None else torch.zeros(2, dtype=torch.bool)
        _, done, need = core.advance(z, decide)
        if done.any():
            break
        a = core.prev_action
        with torch.no_grad():
            model.upper_step(mc.decode(z).apply(e_ref), cache, 1)
            obs, *_ = env.step(a.numpy())
            h = mc.history_step(e_ref, h)
            e_ref = model.lower_step(torch.from_numpy(obs), cache, a, 1)
            beta = mc.switch(e_ref, h, z)
        torch.testing.assert_close(core.e, e_ref)
        assert torch.equal(need, beta >= thr)
        fired.append(bool(need.any()))
        prev = a
    assert any(fired) == (thr < 0.38)


def test_option_env_gymnasium_api():
    model, mc = tiny_model(), tiny_mc()
    env = OptionEnv(model, mc, layer=1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32,) and obs.dtype == np.float32
    total_steps, done = 0, False
    while not done:
        obs, r, term, trunc, info = env.step(np.zeros(4, np.float32))
        assert info["primitive_steps"] >= 1
        total_steps += info["primitive_steps"]
        done = term or trunc
    assert total_steps == int(env.core.env.step_count[0])
    with pytest.raises(ValueError, match="entries"):
        env.reset(seed=1)
        env.step(np.zeros(3, np.float32))


def test_ppo_step_changes_policy_and_raw_logp_matches():
    model, mc = tiny_model(), tiny_mc()
    pol = LatentPolicy(32, 4, width=16)
    ro = collect_latent(OptionCore(model, mc, 1, 8, seed=1), pol, seed=2)
    ro.returns = torch.arange(8, dtype=torch.float32)  # fake spread of returns so there is signal
    before = [p.clone() for p in pol.parameters()]
    opt = torch.optim.Adam(pol.parameters(), lr=1e-2)
    ppo_update(lambda r, i: latent_logp(pol, r, i), list(pol.parameters()), opt, ro, 1, 2, 0.2, 1e-3, 1.0,
               torch.Generator().manual_seed(0))
    assert any(not torch.equal(a, b) for a, b in zip(before, pol.parameters()))
    # raw rollouts: stored log-probs equal the full-sequence recomputation
    raw = SequenceModel(model.config)
    rr = collect_raw(raw, BatchedPinPad(4, seed=0), POST_TRAINING_TASK, seed=0)
    with torch.no_grad():
        lp = raw_logp(raw, rr, torch.arange(4))
    torch.testing.assert_close(lp[rr.mask], rr.old_logp[rr.mask], atol=1e-4, rtol=1e-4)


def test_dropping_finished_episodes_changes_nothing():
    """Compaction of the lockstep batch gives exactly the trajectories of the uncompacted engine."""
    model, mc = tiny_model(), tiny_mc()
    pol = LatentPolicy(32, 4, width=16)
    ros = [collect_latent(OptionCore(model, mc, 1, 16, seed=4, compact=c), pol, seed=9) for c in (True, False)]
    a, b = ros
    assert torch.equal(a.env_steps, b.env_steps) and torch.equal(a.success, b.success)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.inputs[a.mask], b.inputs[b.mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.old_logp[a.mask], b.old_logp[b.mask], atol=1e-5, rtol=1e-5)
    assert len(set(a.env_steps.tolist())) > 1  # episodes of different lengths, so compaction happened


def test_discovery_step_leaves_the_frozen_base_untouched():
    """Frozen means frozen: no grad on any base parameter, bit-identical after optimiser steps."""
    from internal_rl.control.discovery import discovery_step
    from internal_rl.data.pinpad_dataset import generate_pinpad

    model, data = tiny_model(), generate_pinpad(8, eps=0.0, seed=0, progress=False)
    torch.manual_seed(0)
    mc = MetaController(MetaControllerConfig(d_model=32, n_z=4, n_h=8, n_s=8, enc_hidden=16, dec_hidden=8, rank=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(mc.parameters(), lr=1e-2)
    for _ in range(3):
        loss, _ = discovery_step(model, mc, data.batch(np.arange(8)), layer=1, alpha=0.1)
        opt.zero_grad()
        loss["loss"].backward()
        assert all(p.grad is None for p in model.parameters())
        assert mc.encoder[0].weight.grad is not None and mc.switch_in.weight.grad is not None
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_evaluate_reports_where_episodes_end():
    """A model that always moves right, against the same layouts stepped by hand with numpy."""
    from internal_rl.rl.rollout import evaluate

    model = tiny_model()
    with torch.no_grad():
        model.action_head.weight.zero_()
        model.action_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]))
    res = evaluate(model, POST_TRAINING_TASK, episodes=40, seed=3, batch_size=40)
    env = BatchedPinPad(40, seed=3)
    env.reset(POST_TRAINING_TASK)
    ended_on = []
    for _ in range(env.config.max_steps):
        before = env.done.copy()
        _, _, term, _, _ = env.step(np.full(40, 3))
        for i in np.flatnonzero(term & ~before & ~env.success):
            ended_on.append(env.cell_color[i, env.agent_cell[i]])
    assert res["success"] == float(env.success.mean())
    assert res["progress_hist"] == np.bincount(env.progress).tolist()
    assert res["wrong_colour_hist"] == np.bincount(np.array(ended_on, dtype=np.int64), minlength=8).tolist()
    assert sum(res["wrong_colour_hist"]) > 0  # walking right does hit wrong colours


def test_tempered_probs_against_float64_softmax_and_bad_temperatures():
    from internal_rl.rl.rollout import sample_actions, tempered_probs

    logits = torch.randn(6, 4)
    ref = lambda t: torch.softmax(logits.double() / t, -1).float()  # noqa: E731
    assert torch.equal(tempered_probs(logits, 1.0), torch.softmax(logits, -1))  # τ = 1: the rollouts as before
    torch.testing.assert_close(tempered_probs(logits, 0.5), ref(0.5))
    torch.testing.assert_close(tempered_probs(logits, 3.0), ref(3.0))
    assert torch.equal(tempered_probs(logits, 0.0), torch.nn.functional.one_hot(logits.argmax(-1), 4).float())
    assert torch.equal(sample_actions(logits, None, temperature=0.0), logits.argmax(-1))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            sample_actions(logits, None, temperature=bad)


def test_option_core_at_temperature_zero_takes_the_controlled_argmax():
    """τ = 0: each primitive action is the argmax of the controlled base's logits (a hand-written loop);
    a tiny τ picks the same actions, while τ = 1 (the default) samples other ones."""
    model, mc = tiny_model(), tiny_mc()
    z = torch.randn(4, 4)

    def actions(tau):
        core = OptionCore(model, mc, layer=1, num_envs=4, task=POST_TRAINING_TASK, seed=5, action_temperature=tau)
        core.reset(seed=5)
        env = BatchedPinPad(4, seed=5)
        obs = env.reset(POST_TRAINING_TASK, seed=5)
        cache = model.new_cache(4, 100)
        e = model.lower_step(torch.from_numpy(obs), cache, torch.full((4,), -1), 1)
        taken, greedy = [], []
        for t in range(6):
            _, done, _ = core.advance(z, torch.full((4,), t == 0))
            a = core.prev_action.clone()
            with torch.no_grad():
                logits = model.upper_step(mc.decode(z).apply(e), cache, 1).action_logits
                obs, *_ = env.step(a.numpy())
                e = model.lower_step(torch.from_numpy(obs), cache, a, 1)
            taken.append(a)
            greedy.append(logits.argmax(-1))
            if done.any():
                break
        return torch.stack(taken), torch.stack(greedy)

    a0, g0 = actions(0.0)
    assert torch.equal(a0, g0)
    assert torch.equal(actions(1e-6)[0], a0)
    a1, g1 = actions(1.0)
    assert not torch.equal(a1, g1)  # sampling at τ = 1 leaves the argmax now and then
    with pytest.raises(ValueError, match="temperature"):
        OptionCore(model, mc, layer=1, num_envs=2, action_temperature=-1.0)


def test_latent_logp_groups_by_length_and_matches_one_padded_pass():
    """Episodes are run in length groups trimmed to their own longest: the same log-probabilities and
    gradients as one pass over the whole padded batch (float64), and 0 at padded slots."""
    torch.manual_seed(3)
    pol = LatentPolicy(32, 4, width=16).double()
    lengths = torch.tensor([1, 7, 2, 3, 1, 5, 16, 4, 9])
    B, K = len(lengths), int(lengths.max())
    mask = torch.arange(K)[None] < lengths[:, None]
    ro = Rollouts(inputs=torch.randn(B, K, 32, dtype=torch.float64), actions=torch.randn(B, K, 4, dtype=torch.float64),
                  old_logp=torch.zeros(B, K, dtype=torch.float64), mask=mask, returns=torch.zeros(B),
                  success=torch.zeros(B, dtype=torch.bool), env_steps=torch.zeros(B, dtype=torch.long))
    idx = torch.tensor([6, 0, 3, 1, 8, 5])  # a minibatch, in shuffled order
    ours = latent_logp(pol, ro, idx)
    mean, logstd = pol(ro.inputs[idx], ro.mask[idx])
    ref = gaussian_logp(ro.actions[idx], mean, logstd)
    m = ro.mask[idx]
    torch.testing.assert_close(ours[m], ref[m], rtol=1e-12, atol=1e-12)
    assert not ours[~m].any()
    g_ours = torch.autograd.grad(ours[m].sum(), list(pol.parameters()))
    g_ref = torch.autograd.grad(ref[m].sum(), list(pol.parameters()))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _entropy_rollouts(seed: int = 0) -> Rollouts:
    """Eight latent episodes of 1-5 decisions with a spread of returns (so that PPO has signal)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 5, 2, 3, 4, 1, 2, 5])
    B, K = len(lengths), int(lengths.max())
    mask = torch.arange(K)[None] < lengths[:, None]
    return Rollouts(inputs=torch.randn(B, K, 32, generator=g), actions=torch.randn(B, K, 4, generator=g),
                    old_logp=torch.full((B, K), -6.0), mask=mask, returns=torch.arange(B, dtype=torch.float32),
                    success=torch.zeros(B, dtype=torch.bool), env_steps=torch.zeros(B, dtype=torch.long))


def test_latent_logp_entropy_matches_the_policy_and_is_zero_at_padding():
    torch.manual_seed(1)
    pol = LatentPolicy(32, 4, width=16).double()
    torch.nn.init.normal_(pol.head.weight, std=0.3)
    ro = _entropy_rollouts()
    ro.inputs, ro.actions = ro.inputs.double(), ro.actions.double()
    idx = torch.tensor([4, 1, 0, 7])
    logp, ent = latent_logp(pol, ro, idx, with_entropy=True)
    torch.testing.assert_close(logp, latent_logp(pol, ro, idx))
    _, logstd = pol(ro.inputs[idx], ro.mask[idx])
    ref = torch.distributions.Normal(torch.zeros_like(logstd), logstd.exp()).entropy().sum(-1)
    m = ro.mask[idx]
    torch.testing.assert_close(ent[m], ref[m])
    assert not ent[~m].any()


def test_entropy_bonus_widens_the_policy_and_zero_is_the_plain_update():
    """The same data and start: c_H = 0 is the update without the term (bit-identical), and a large c_H ends
    with a wider Gaussian over z than c_H = 0; a negative c_H is refused."""
    def train(coef: float, via_tuple: bool) -> LatentPolicy:
        torch.manual_seed(0)
        pol = LatentPolicy(32, 4, width=16)
        opt = torch.optim.Adam(pol.parameters(), lr=1e-2)
        fn = (lambda r, i, e=False: latent_logp(pol, r, i, e)) if via_tuple else (lambda r, i: latent_logp(pol, r, i))
        for _ in range(5):
            stats = ppo_update(fn, list(pol.parameters()), opt, _entropy_rollouts(), 1, 2, 0.2, 1e-3, 1.0,
                               torch.Generator().manual_seed(0), entropy_coef=coef)
        assert ("entropy" in stats) == (coef > 0)
        return pol

    plain, zero, wide = train(0.0, False), train(0.0, True), train(1.0, True)
    for a, b in zip(plain.parameters(), zero.parameters()):
        assert torch.equal(a, b)
    ro = _entropy_rollouts()
    with torch.no_grad():
        std = [pol(ro.inputs, ro.mask)[1][ro.mask].exp().mean() for pol in (plain, wide)]
    assert std[1] > 1.5 * std[0]
    with pytest.raises(ValueError, match="entropy_coef"):
        ppo_update(lambda r, i: latent_logp(plain, r, i), list(plain.parameters()),
                   torch.optim.Adam(plain.parameters()), ro, 1, 2, 0.2, 1e-3, 1.0, torch.Generator(), entropy_coef=-0.1)


def test_raw_logp_entropy_is_the_categorical_entropy():
    model = SequenceModel(tiny_model().config)
    rr = collect_raw(model, BatchedPinPad(3, seed=0), POST_TRAINING_TASK, seed=0)
    with torch.no_grad():
        lp, ent = raw_logp(model, rr, torch.arange(3), with_entropy=True)
        T = rr.actions.shape[1]
        from internal_rl.models.sequence_model import prev_actions_of
        logits = model(rr.inputs[:, :T], prev_actions_of(rr.actions)).action_logits
    torch.testing.assert_close(lp, raw_logp(model, rr, torch.arange(3)))
    torch.testing.assert_close(ent, torch.distributions.Categorical(logits=logits.float()).entropy())


def test_update_diagnostics_match_a_loop_and_ignore_padding():
    """approx_kl = mean over valid decisions of (ρ − 1) − log ρ; clip fraction = share with |ρ − 1| > ε."""
    from internal_rl.rl.objective import update_diagnostics

    g = torch.Generator().manual_seed(3)
    logp, old = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 4, generator=g) < 0.6
    kl, frac = update_diagnostics(logp, old, mask, 0.2)
    terms, outside = [], []
    for b in range(5):
        for k in range(4):
            if mask[b, k]:
                r = math.exp(float(logp[b, k] - old[b, k]))
                terms.append((r - 1) - math.log(r))
                outside.append(abs(r - 1) > 0.2)
    assert kl == pytest.approx(sum(terms) / len(terms), rel=1e-6) and kl > 0
    assert frac == pytest.approx(sum(outside) / len(outside))
    padded = logp.masked_fill(~mask, 50.0)  # padding holds anything: it must not count
    assert update_diagnostics(padded, old, mask, 0.2) == pytest.approx((kl, frac), rel=1e-6)
    assert update_diagnostics(old, old, mask, 0.2) == (0.0, 0.0)  # an unchanged policy moved nowhere


def _ppo_reference(pol, ro, returns, group_size, clip=0.2, delta=1e-3, entropy_coef=0.0):
    """PPO's first-minibatch loss by definition, one episode and one decision at a time (float64): the policy run
    on each episode's own decisions, advantages normalised within groups of consecutive episodes."""
    R = returns.double().tolist()
    terms, ents = [], []
    for b in range(len(R)):
        g0 = b - b % group_size
        grp = R[g0:g0 + group_size] if group_size > 1 else R  # G = 1: the paper's whole-batch normalisation
        mu = sum(grp) / len(grp)
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / len(grp))
        adv = (R[b] - mu) / (sd + delta)
        n = int(ro.mask[b].sum())
        with torch.no_grad():
            mean, logstd = pol(ro.inputs[b:b + 1, :n])
        for k in range(n):
            logp = float(torch.distributions.Normal(mean[0, k], logstd[0, k].exp()).log_prob(ro.actions[b, k]).sum())
            rho = math.exp(logp - float(ro.old_logp[b, k]))
            terms.append(min(rho * adv, min(max(rho, 1 - clip), 1 + clip) * adv))
            ents.append(float(gaussian_entropy(logstd[0, k])))
    return -float(np.mean(terms)) - entropy_coef * float(np.mean(ents)), float(np.mean(ents))


@pytest.mark.parametrize("group_size", [1, 4])
def test_ppo_update_loss_is_the_clipped_surrogate_of_the_normalised_returns(group_size):
    """One epoch, one minibatch: the reported loss (taken before the step) is −mean min(ρA, clip(ρ)A) over the
    valid decisions with A normalised over the batch (G = 1) or within groups of G (by a loop), ρ on both sides
    of the clip; with c_H > 0 the entropy is the masked mean entropy of the policy and the loss subtracts c_H × it."""
    torch.manual_seed(3)
    pol = LatentPolicy(32, 4, width=16).double()
    torch.nn.init.normal_(pol.head.weight, std=0.3)
    ro = _entropy_rollouts()
    ro.inputs, ro.actions = ro.inputs.double(), ro.actions.double()
    ro.returns = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        current = latent_logp(pol, ro, torch.arange(8))
    shift = 0.6 * torch.randn(ro.mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ro.old_logp = torch.where(ro.mask, current + shift, torch.full_like(current, float("nan")))  # padding: anything
    rho = torch.exp(-shift)[ro.mask]
    assert (rho < 0.8).any() and (rho > 1.2).any()
    for coef in (0.0, 0.3):
        want_loss, want_ent = _ppo_reference(pol, ro, ro.returns, group_size, entropy_coef=coef)
        pol_copy = LatentPolicy(32, 4, width=16).double()
        pol_copy.load_state_dict(pol.state_dict())
        fn = lambda r, i, e=False, p=pol_copy: latent_logp(p, r, i, e)  # noqa: E731
        stats = ppo_update(fn, list(pol_copy.parameters()), torch.optim.SGD(pol_copy.parameters(), lr=1e-2), ro,
                           1, 1, 0.2, 1e-3, 0.0, torch.Generator().manual_seed(0), group_size=group_size,
                           entropy_coef=coef)
        assert stats["loss"] == pytest.approx(want_loss, rel=1e-9, abs=1e-12)
        if coef:
            assert stats["entropy"] == pytest.approx(want_ent, rel=1e-9)


def test_ppo_update_skips_batches_without_signal_and_the_step_follows_the_advantages():
    """Returns that all tie (or tie within every GRPO group) skip the update with the parameters bit-identical;
    otherwise one small SGD step at ρ = 1 raises Σ A·log π over the decisions (the step's sign is the advantages')."""
    torch.manual_seed(4)
    pol = LatentPolicy(32, 4, width=16).double()
    torch.nn.init.normal_(pol.head.weight, std=0.3)
    ro = _entropy_rollouts()
    ro.inputs, ro.actions = ro.inputs.double(), ro.actions.double()
    fn = lambda r, i: latent_logp(pol, r, i)  # noqa: E731
    with torch.no_grad():
        ro.old_logp = latent_logp(pol, ro, torch.arange(8))
    before = [p.clone() for p in pol.parameters()]
    opt = torch.optim.SGD(pol.parameters(), lr=1e-3)
    for returns, g in ((torch.ones(8), 1), (torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]), 4)):
        ro.returns = returns.double()
        stats = ppo_update(fn, list(pol.parameters()), opt, ro, 2, 2, 0.2, 1e-3, 1.0, torch.Generator(), group_size=g)
        assert stats["skipped"] == 1.0
        assert all(torch.equal(a, b) for a, b in zip(before, pol.parameters()))
    ro.returns = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0], dtype=torch.float64)
    adv = episode_advantages(ro.returns)[:, None].expand(ro.mask.shape)
    stats = ppo_update(fn, list(pol.parameters()), opt, ro, 1, 1, 0.2, 1e-3, 0.0, torch.Generator())
    assert stats["skipped"] == 0.0
    with torch.no_grad():
        moved = latent_logp(pol, ro, torch.arange(8)) - ro.old_logp
    assert float((adv * moved)[ro.mask].sum()) > 0


def test_ppo_update_reports_how_far_the_policy_moved():
    torch.manual_seed(0)
    pol = LatentPolicy(32, 4, width=16)
    ro = _entropy_rollouts()
    with torch.no_grad():
        ro.old_logp = latent_logp(pol, ro, torch.arange(8))  # the collecting policy is this one
    opt = torch.optim.Adam(pol.parameters(), lr=1e-2)
    fn = lambda r, i: latent_logp(pol, r, i)  # noqa: E731
    stats = ppo_update(fn, list(pol.parameters()), opt, ro, 1, 1, 0.2, 1e-3, 1.0, torch.Generator().manual_seed(0))
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-10) and stats["clip_fraction"] == 0.0  # one step: before it
    stats = ppo_update(fn, list(pol.parameters()), opt, ro, 3, 2, 0.2, 1e-3, 1.0, torch.Generator().manual_seed(0))
    assert stats["approx_kl"] > 1e-6 and 0.0 <= stats["clip_fraction"] <= 1.0


def test_collected_policy_std_matches_the_parallel_pass_and_is_zero_at_padding():
    model, mc = tiny_model(), tiny_mc()
    torch.manual_seed(0)
    pol = LatentPolicy(32, 4, width=16)
    torch.nn.init.normal_(pol.head.weight, std=0.3)  # a σ that varies with the input
    ro = collect_latent(OptionCore(model, mc, 1, 8, seed=1), pol, seed=2)
    with torch.no_grad():
        _, logstd = pol(ro.inputs, ro.mask)
    torch.testing.assert_close(ro.policy_std[ro.mask], logstd.exp().mean(-1)[ro.mask], atol=1e-5, rtol=1e-5)
    assert bool((ro.policy_std[~ro.mask] == 0).all()) and ro.policy_std[ro.mask].std() > 0


def test_policy_std_floor_clamps_sigma_and_stops_its_gradient_below():
    torch.manual_seed(0)
    e = torch.randn(3, 5, 32)
    free, floored = LatentPolicy(32, 4, width=16), LatentPolicy(32, 4, width=16, min_std=0.5)
    floored.load_state_dict(free.state_dict())
    with torch.no_grad():  # log σ = −3 on dims 0–1 (below the floor), +0.2 on dims 2–3 (above it)
        for p in (free, floored):
            p.head.bias[4:] = torch.tensor([-3.0, -3.0, 0.2, 0.2])
    m0, s0 = free(e)
    m1, s1 = floored(e)
    torch.testing.assert_close(m1, m0)
    torch.testing.assert_close(s0[..., :2], torch.full_like(s0[..., :2], -3.0))
    torch.testing.assert_close(s1[..., :2], torch.full_like(s1[..., :2], math.log(0.5)))
    torch.testing.assert_close(s1[..., 2:], s0[..., 2:])
    s1.sum().backward()  # the floored dims pass no gradient to σ's head; the others do
    assert torch.all(floored.head.bias.grad[4:6] == 0) and torch.all(floored.head.bias.grad[6:] == 15)
    assert LatentPolicy(32, 4, width=16, min_std=0.0).min_logstd == -5.0  # no floor: the usual clamp
    for bad in (-0.1, 8.0):
        with pytest.raises(ValueError, match="min_std"):
            LatentPolicy(32, 4, width=16, min_std=bad)


def test_collect_with_mean_z_acts_with_the_policy_mean():
    model, mc = tiny_model(), tiny_mc()
    torch.manual_seed(0)
    pol = LatentPolicy(32, 4, width=16)
    torch.nn.init.normal_(pol.head.weight, std=0.3)
    ro = collect_latent(OptionCore(model, mc, 1, 8, seed=1), pol, seed=2, mean_z=True)
    with torch.no_grad():
        mean, logstd = pol(ro.inputs, ro.mask)
    torch.testing.assert_close(ro.actions[ro.mask], mean[ro.mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ro.old_logp[ro.mask], gaussian_logp(mean, mean, logstd)[ro.mask], atol=1e-4, rtol=1e-4)
    drawn = collect_latent(OptionCore(model, mc, 1, 8, seed=1), pol, seed=2)  # the same episodes, z drawn
    first = drawn.mask[:, 0]
    assert not torch.allclose(drawn.actions[:, 0][first], mean[:, 0][first])


def test_tied_group_share_counts_groups_without_signal():
    from internal_rl.rl.objective import tied_group_share
    r = torch.tensor([1., 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1])
    ref = np.mean([len(set(r[i:i + 4].tolist())) == 1 for i in range(0, 16, 4)])  # all win, all lose, mixed, mixed
    assert tied_group_share(r, 4) == ref == 0.5
    adv = episode_advantages(r, 1e-3, 4).reshape(4, 4)  # the tied groups are exactly those with zero advantages
    assert [bool((g == 0).all()) for g in adv] == [True, True, False, False]
    assert tied_group_share(r, 1) == 1.0 and tied_group_share(r, 16) == 0.0
    with pytest.raises(ValueError, match="divisor"):
        tied_group_share(r, 5)


def _gae_loop(values, returns, lengths, lam):
    """GAE(γ = 1, λ) per decision written as the definition, one episode at a time, in float64."""
    out = torch.zeros(values.shape, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        v = [float(x) for x in values[b, :n]] + [float(returns[b])]  # after the last decision: the return
        for k in range(n):
            out[b, k] = sum(lam ** (j - k) * (v[j + 1] - v[j]) for j in range(k, n))
    return out


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_decision_advantages_match_gae_by_definition(lam):
    from internal_rl.rl.objective import decision_advantages

    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([1, 4, 2, 6, 3])
    B, K = len(lengths), int(lengths.max())
    mask = torch.arange(K)[None] < lengths[:, None]
    values = torch.rand(B, K, generator=g, dtype=torch.float64).masked_fill(~mask, 7.0)  # junk at padding
    returns = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    ours = decision_advantages(values, returns, mask, lam)
    torch.testing.assert_close(ours, _gae_loop(values, returns, lengths, lam), rtol=1e-12, atol=1e-12)
    assert not ours[~mask].any()
    if lam == 1.0:  # every decision judged by R − V at its own state
        torch.testing.assert_close(ours[mask], (returns[:, None] - values).expand(B, K)[mask])
    if lam == 0.0:  # one decision's own effect on the value: only the last decision sees the return
        torch.testing.assert_close(ours[1, :3], values[1, 1:4] - values[1, :3])
        torch.testing.assert_close(ours[1, 3], returns[1] - values[1, 3])
    with pytest.raises(ValueError, match="gae_lambda"):
        decision_advantages(values, returns, mask, 1.5)
    with pytest.raises(ValueError, match="must be"):
        decision_advantages(values[:, :-1], returns, mask, lam)


def test_normalised_decision_advantages_and_per_decision_surrogate():
    from internal_rl.rl.objective import normalise_decision_advantages

    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([3, 1, 2])
    mask = torch.arange(3)[None] < lengths[:, None]
    adv = torch.randn(3, 3, generator=g, dtype=torch.float64)
    norm = normalise_decision_advantages(adv, mask, delta=0.0)
    torch.testing.assert_close(norm[mask].mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(norm[mask].std(unbiased=False), torch.tensor(1.0, dtype=torch.float64))
    assert not norm[~mask].any()
    # one advantage per decision, constant within each episode, is the episode-shared surrogate
    logp, old = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
    per_episode = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(clipped_surrogate(logp, old, per_episode[:, None].expand(3, 3), mask, 0.2),
                               clipped_surrogate(logp, old, per_episode, mask, 0.2))


def test_value_loss_and_targets_leave_padding_out():
    """value_loss is the mean squared error over the valid decisions only (padding holds junk), and the targets
    are each episode's return at its valid decisions and 0 at padding."""
    from internal_rl.rl.critic import critic_targets, value_loss

    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    v, t = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)
    v_junk = v.masked_fill(~mask, 1e3)
    want = float(np.mean([(float(v[i, k]) - float(t[i, k])) ** 2 for i in range(3) for k in range(3) if mask[i, k]]))
    assert float(value_loss(v_junk, t, mask)) == pytest.approx(want, rel=1e-12)
    returns = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    tg = critic_targets(returns, mask)
    assert torch.equal(tg, torch.tensor([[1.0, 1, 1], [0, 0, 0], [2, 2, 0]], dtype=torch.float64))


def test_critic_is_causal_ignores_padding_and_starts_at_zero():
    from internal_rl.rl.critic import LatentCritic
    from internal_rl.rl.ppo import latent_values

    torch.manual_seed(6)
    critic = LatentCritic(32, width=16).double()
    e = torch.randn(2, 5, 32, dtype=torch.float64)
    assert not critic(e).any()  # the zero head: V ≡ 0 before training
    torch.nn.init.normal_(critic.head.weight, std=0.5)
    v = critic(e)
    e2 = e.clone()
    e2[:, 3:] = torch.randn(2, 2, 32, dtype=torch.float64)  # later decisions cannot change earlier values
    torch.testing.assert_close(critic(e2)[:, :3], v[:, :3], rtol=1e-12, atol=1e-12)
    lengths = torch.tensor([5, 2])
    mask = torch.arange(5)[None] < lengths[:, None]
    ro = Rollouts(inputs=e2, actions=torch.zeros(2, 5, 4, dtype=torch.float64), old_logp=torch.zeros(2, 5),
                  mask=mask, returns=torch.zeros(2), success=torch.zeros(2, dtype=torch.bool),
                  env_steps=torch.zeros(2, dtype=torch.long))
    grouped = latent_values(critic, ro, torch.tensor([1, 0]))  # run in length groups, shuffled rows
    torch.testing.assert_close(grouped[mask[[1, 0]]], critic(e2)[[1, 0]][mask[[1, 0]]], rtol=1e-12, atol=1e-12)
    assert not grouped[~mask[[1, 0]]].any()


def test_critic_update_learns_the_returns_and_ppo_takes_per_decision_advantages():
    from internal_rl.rl.critic import LatentCritic, critic_targets, value_loss
    from internal_rl.rl.ppo import critic_update, latent_values

    torch.manual_seed(7)
    ro = _entropy_rollouts()
    ro.returns = (ro.inputs[:, 0, 0] > 0).float()  # a return the first residual stream predicts
    critic = LatentCritic(32, width=16)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    everyone = torch.arange(len(ro.returns))
    targets = critic_targets(ro.returns, ro.mask)
    assert torch.equal(targets[ro.mask], ro.returns[:, None].expand(ro.mask.shape)[ro.mask])
    with torch.no_grad():
        before = float(value_loss(latent_values(critic, ro, everyone), targets, ro.mask))
    for _ in range(30):
        critic_update(critic, opt, ro, epochs=1, minibatches=2, max_grad_norm=1.0, generator=g)
    with torch.no_grad():
        after = float(value_loss(latent_values(critic, ro, everyone), targets, ro.mask))
    assert after < 0.25 * before
    pol = LatentPolicy(32, 4, width=16)
    popt = torch.optim.Adam(pol.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="advantages must be"):
        ppo_update(lambda r, i: latent_logp(pol, r, i), list(pol.parameters()), popt, ro, 1, 2, 0.2, 1e-3, 1.0, g,
                   advantages=torch.zeros(len(ro.returns)))
    # advantages only at the first decision of episode 0: its log-probability moves their way, whatever the returns
    with torch.no_grad():
        ro.old_logp = latent_logp(pol, ro, everyone)  # collected by this policy: the ratio starts at 1
    state = {k: v.clone() for k, v in pol.state_dict().items()}
    for sign in (1.0, -1.0):
        pol.load_state_dict(state)
        popt = torch.optim.Adam(pol.parameters(), lr=1e-2)
        adv = torch.zeros(ro.mask.shape)
        adv[0, 0] = sign
        ppo_update(lambda r, i: latent_logp(pol, r, i), list(pol.parameters()), popt, ro, 1, 1, 0.2, 1e-3, 1.0, g,
                   advantages=adv)
        with torch.no_grad():
            moved = float(latent_logp(pol, ro, everyone)[0, 0] - ro.old_logp[0, 0])
        assert moved * sign > 0


def test_group_scaled_decision_advantages_match_a_loop_and_silence_tied_groups():
    from internal_rl.rl.objective import group_scaled_decision_advantages

    g = torch.Generator().manual_seed(8)
    returns = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])  # groups of 4
    adv = torch.randn(12, 3, generator=g, dtype=torch.float64)
    ours = group_scaled_decision_advantages(adv, returns, 4, delta=1e-3)
    for i in range(12):
        grp = returns[4 * (i // 4): 4 * (i // 4) + 4].double()
        std = float(np.std(grp.numpy()))
        expected = torch.zeros(3, dtype=torch.float64) if std == 0 else adv[i] / (std + 1e-3)
        torch.testing.assert_close(ours[i], expected)
    assert not ours[4:8].any()  # a group that all succeeded: no signal, as in GRPO
    with pytest.raises(ValueError, match="group_size"):
        group_scaled_decision_advantages(adv, returns, 5)
