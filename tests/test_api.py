"""The seed's compact API (internal_rl.api): the usage example on gridworld-pinpad, and its contracts."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from internal_rl import MetaController, Transformer
from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad, PinPadConfig
from internal_rl.models.sequence_model import prev_actions_of

S, K, DIM = 637, 4, 32




def make_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    args = dict(action_embed_readout=dict(num_discrete=K), state_embed_readout=dict(num_continuous=S),
                lower_body=dict(depth=1), upper_body=dict(depth=1), heads=2)
    args.update(kw)
    return Transformer(DIM, **args)


def make_mc(seed: int = 1, **kw) -> MetaController:
    torch.manual_seed(seed)
    args = dict(dim_meta_controller=16, dim_latent=4)
    args.update(kw)
    return MetaController(DIM, **args)


def randomize_policy_head(mc: MetaController, seed: int = 2) -> None:
    """The policy head starts at zero (π = N(0, I) for every input); give it an input dependence.

    Also spread the untrained switch probabilities (all ≈ 0.5) so rollouts mix switching and keeping.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mc.policy.head.weight.copy_(0.3 * torch.randn(mc.policy.head.weight.shape, generator=g))
        mc.core.switch_out.weight.mul_(20.0)


def expert_demos(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expert episodes on pretraining tasks as padded (state (B,T,S), actions (B,T), mask (B,T))."""
    b = generate_pinpad(n, eps=0.0, seed=seed, progress=False).batch(np.arange(n))
    return b["obs"][:, :-1], b["actions"], b["mask"]


def rollout(model: Transformer, mc: MetaController, n: int = 6, max_steps: int = 16, seed: int = 0):
    """Roll the controlled model out on the post-training task, recording what policy_loss needs."""
    env = BatchedPinPad(n, PinPadConfig(max_steps=max_steps, require_solvable_within_T=False), seed=seed)
    one_state = torch.from_numpy(env.reset(POST_TRAINING_TASK))
    past_action_id, cache = None, None
    rec = {k: [] for k in ("states", "old_log_probs", "latent_actions", "switch_betas", "mask", "logits")}
    while not env.done.all():
        logits, cache = model(one_state[:, None], past_action_id, meta_controller=mc, return_cache=True, cache=cache)
        meta_output = cache.prev_hiddens.meta_controller
        rec["old_log_probs"].append(mc.log_prob(meta_output.action_dist, meta_output.actions))
        rec["states"].append(meta_output.input_residual_stream)
        rec["latent_actions"].append(meta_output.actions)
        rec["switch_betas"].append(meta_output.switch_beta)
        rec["mask"].append(torch.from_numpy(~env.done))
        rec["logits"].append(logits[:, 0])
        past_action_id = torch.distributions.Categorical(logits=logits[:, 0]).sample()
        obs, _, _, _, _ = env.step(past_action_id.numpy())
        one_state = torch.from_numpy(obs)
    out = {k: torch.stack(v, 1) for k, v in rec.items()}
    out["returns"] = torch.from_numpy(env.success.astype(np.float32))
    return out


# ------------------------------------------------------------------------------------------ the seed
def test_seed_usage_example_on_pinpad():
    # 1. initialize model
    model = make_model()
    state, actions, mask = expert_demos()

    # 2. behavioral cloning (BC)
    state_loss, action_loss = model(state, actions, mask=mask)
    (state_loss + action_loss).backward()
    assert all(p.grad is not None for p in model.parameters())

    # 3. discovery phase
    meta_controller = make_mc()
    model.zero_grad(set_to_none=True)
    action_recon_loss, kl_loss, switch_loss = model(
        state, actions, meta_controller=meta_controller, discovery_phase=True, mask=mask
    )
    (action_recon_loss + kl_loss + switch_loss).backward()
    assert all(p.grad is None for p in model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in meta_controller.discovery_parameters())

    # 4. internal rl phase (GRPO): collect trajectories with the rollout cache on the real env
    group = rollout(model, meta_controller)
    assert group["switch_betas"][:, 0].eq(1).all()  # β_1 = 1
    returns = group["returns"]
    group_advantages = (returns - returns.mean()) / (returns.std(unbiased=False) + 1e-3)
    loss = meta_controller.policy_loss(
        group["states"], group["old_log_probs"], group["latent_actions"], group_advantages,
        group["switch_betas"], mask=group["mask"],
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in meta_controller.internal_rl_parameters())

    # 5. evolve (ES over the policy)
    model.meta_controller = meta_controller

    def environment_callable(model):
        g = rollout(model, model.meta_controller, n=2, max_steps=4, seed=1)
        return float(g["latent_actions"].mean())  # a toy fitness: anything computed from the rollout

    history = model.evolve(num_generations=2, environment=environment_callable, population_size=4)
    assert len(history) == 2


# ------------------------------------------------------------------------------------------------ BC
def test_bc_alignment_learns_current_not_next():
    """a_t = f(s_t) is learnable (~0 loss); a_t = f(s_{t+1}) is not (the model must not see the future)."""
    B, T, Sd = 32, 8, 4
    losses = {}
    for shift in (0, 1):
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        m = Transformer(16, action_embed_readout=dict(num_discrete=Sd), state_embed_readout=dict(num_continuous=Sd),
                        lower_body=dict(depth=1), upper_body=dict(depth=1), heads=2, init_scale=1.0)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(120):  # fresh data every step: nothing to memorise
            ids = torch.randint(0, Sd, (B, T + 1), generator=g)
            state = torch.nn.functional.one_hot(ids, Sd).float()
            _, action_loss = m(state[:, :T], ids[:, shift:T + shift])
            opt.zero_grad()
            action_loss.backward()
            opt.step()
        losses[shift] = action_loss.item()
    assert losses[0] < 0.05
    assert losses[1] > 1.2  # ≈ log 4: unpredictable


def test_bc_state_loss_targets_next_state_and_padding_changes_nothing():
    model = make_model()
    state, actions, mask = expert_demos(3)
    out = model.base(state, prev_actions_of(actions))
    m = mask[:, 1:].float()
    ref = (0.5 * ((out.obs_pred[:, :-1] - state[:, 1:]) ** 2).sum(-1) * m).sum() / m.sum()
    state_loss, action_loss = model(state, actions, mask=mask)
    torch.testing.assert_close(state_loss, ref)
    # padding changes nothing; the mask changes the loss
    garbage = state.clone()
    garbage[~mask] = float("nan")
    acts = actions.clone()
    acts[~mask] = 99
    s2, a2 = model(garbage, acts, mask=mask)
    torch.testing.assert_close((s2, a2), (state_loss, action_loss))
    mc = make_mc()
    torch.manual_seed(0)
    ref = model(state, actions, meta_controller=mc, discovery_phase=True, mask=mask)
    torch.manual_seed(0)
    got = model(garbage, acts, meta_controller=mc, discovery_phase=True, mask=mask)
    torch.testing.assert_close(got, ref)
    s3, a3 = model(state, actions)
    assert not torch.allclose(a3, action_loss)


def test_continuous_actions():
    model = make_model(action_embed_readout=dict(num_continuous=3))
    state = torch.randn(2, 5, S)
    acts = torch.randn(2, 5, 3)
    state_loss, action_loss = model(state, acts)
    (state_loss + action_loss).backward()
    logits, cache = model(state[:, 0], None, return_cache=True)
    assert logits.shape == (2, 6)  # (mean, log-std)
    logits, cache = model(state[:, 1], acts[:, 0], cache=cache, return_cache=True)
    assert cache.steps == 2


# ----------------------------------------------------------------------------------------- discovery
def test_discovery_freezes_base_bit_identical():
    model = make_model()
    mc = make_mc()
    state, actions, mask = expert_demos(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(list(model.parameters()) + list(mc.parameters()), lr=1e-2)
    for _ in range(2):
        r, k, s = model(state, actions, meta_controller=mc, discovery_phase=True, mask=mask)
        opt.zero_grad(set_to_none=True)
        (r + k + s).backward()
        assert all(p.grad is None for p in model.parameters())
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())  # flags restored after the call


def test_discovery_alpha_and_switch_weight_scale_their_terms():
    model = make_model()
    state, actions, mask = expert_demos(3)
    res = {}
    for alpha, w in [(0.1, 0.0), (0.3, 2.0)]:
        mc = make_mc(alpha=alpha, switch_loss_weight=w)
        torch.manual_seed(5)  # same z̃ noise
        res[(alpha, w)] = model(state, actions, meta_controller=mc, discovery_phase=True, mask=mask)
    (r1, k1, s1), (r2, k2, s2) = res[(0.1, 0.0)], res[(0.3, 2.0)]
    torch.testing.assert_close(r1, r2)
    torch.testing.assert_close(k2, 3 * k1)
    assert s1.item() == 0.0 and s1.requires_grad
    # 2 × mean β over the valid steps t ≥ 2 (β_1 = 1 is forced): the same z̃ noise gives the same β
    torch.manual_seed(5)
    with torch.no_grad():
        e = model.base.lower(state, prev_actions_of(actions))
        beta = mc.core(e, mask, sample=True).beta
    assert not mask.all()  # padding is there to be left out
    torch.testing.assert_close(s2.detach(), 2.0 * beta[:, 1:][mask[:, 1:]].mean())
    s2.backward()
    assert mc.core.switch_out.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ rollouts
def test_rollout_matches_parallel_controlled_forward():
    """Logits of the cached rollout equal one parallel pass with the recorded z (and e equals lower())."""
    model = make_model().eval()
    mc = make_mc()
    randomize_policy_head(mc)
    g = rollout(model, mc, n=3, max_steps=12, seed=3)
    switched = mc.switch_mask(g["switch_betas"])
    assert switched[:, 1:].any() and not switched.all()  # a mix of switching and keeping
    # z is kept between switches
    keep = ~switched[:, 1:]
    torch.testing.assert_close(g["latent_actions"][:, 1:][keep], g["latent_actions"][:, :-1][keep])
    e = g["states"]
    e_hat = mc.core.decode(g["latent_actions"]).apply(e)
    logits = model.base.upper(e_hat).action_logits
    valid = g["mask"]
    torch.testing.assert_close(logits[valid], g["logits"][valid], rtol=1e-4, atol=1e-5)


def test_rollout_first_step_and_bad_inputs():
    model = make_model()
    mc = make_mc()
    x = torch.randn(2, S)
    logits, cache = model(x, -1, meta_controller=mc, return_cache=True)
    assert logits.shape == (2, K)
    with pytest.raises(ValueError, match="previous step"):
        model(x, None, meta_controller=mc, cache=cache)
    with pytest.raises(ValueError, match="one state"):
        model(torch.randn(2, 3, S), None, meta_controller=mc, return_cache=True)
    with pytest.raises(ValueError, match="past action"):
        model(x, torch.tensor([0, 9]), meta_controller=mc, cache=cache)
    with pytest.raises(ValueError, match="episodes"):
        model(torch.randn(3, S), torch.zeros(3, dtype=torch.long), meta_controller=mc, cache=cache)
    with pytest.raises(ValueError, match="different meta_controller"):
        model(x, torch.tensor([0, 1]), meta_controller=make_mc(), cache=cache)
    logits, cache = model(x, torch.tensor([[0], [1]]), meta_controller=mc, cache=cache, return_cache=True)
    assert cache.steps == 2
    # without a metacontroller: the plain base model, equal to its own step
    plain = model(x[:, None], None, return_cache=True)[0]
    ref = model.base.step(x, model.base.new_cache(2), torch.full((2,), -1))
    torch.testing.assert_close(plain[:, 0], ref.action_logits)


def test_rollout_cache_grows_past_max_len():
    model = make_model(max_len=4)
    cache, pa = None, None
    for t in range(9):
        logits, cache = model(torch.randn(1, S), pa, return_cache=True, cache=cache)
        pa = torch.tensor([t % K])
    assert cache.kv.k[0].shape[2] >= 9 and cache.steps == 9


# ------------------------------------------------------------------------------------------ policy loss
def test_log_prob_is_joint_gaussian_density():
    mean, logstd, z = torch.randn(3, 4), torch.randn(3, 4) * 0.3, torch.randn(3, 4)
    ref = torch.distributions.Normal(mean, logstd.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(MetaController.log_prob((mean, logstd), z), ref)


def test_policy_log_probs_match_rollout_step_by_step():
    model = make_model()
    mc = make_mc()
    randomize_policy_head(mc)
    g = rollout(model, mc, n=4, max_steps=14, seed=5)
    sw = mc.switch_mask(g["switch_betas"], g["mask"])
    assert sw.sum() > sw.shape[0]  # some rows switched more than once
    lp = mc.policy_log_prob(g["states"], g["latent_actions"], g["switch_betas"], g["mask"])
    torch.testing.assert_close(lp[sw], g["old_log_probs"][sw], rtol=1e-4, atol=1e-4)
    assert lp[~sw].eq(0).all()
    # at old == new the ratio is 1: the loss is −mean advantage over decisions
    adv = torch.randn(4)
    loss = mc.policy_loss(g["states"], g["old_log_probs"], g["latent_actions"], adv, g["switch_betas"], g["mask"])
    ref = -(adv[:, None].expand_as(sw)[sw]).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5)


def test_policy_loss_padding_changes_nothing_and_no_mask_works():
    mc = make_mc()
    randomize_policy_head(mc)
    g = torch.Generator().manual_seed(0)
    B, T, n_z = 3, 9, 4
    states = torch.randn(B, T, DIM, generator=g)
    z = torch.randn(B, T, n_z, generator=g)
    betas = torch.rand(B, T, generator=g)
    betas[:, 0] = 1
    old = torch.randn(B, T, generator=g) - 3
    adv = torch.randn(B, T, generator=g)
    lengths = torch.tensor([9, 5, 2])
    mask = torch.arange(T)[None] < lengths[:, None]

    def loss_and_grads(st, zz, bb, oo, aa, m):
        mc.zero_grad(set_to_none=True)
        loss = mc.policy_loss(st, oo, zz, aa, bb, mask=m)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in mc.internal_rl_parameters()]

    ref = loss_and_grads(states, z, betas, old, adv, mask)
    pad = ~mask
    s2, z2, b2, o2, a2 = states.clone(), z.clone(), betas.clone(), old.clone(), adv.clone()
    s2[pad], z2[pad], b2[pad], o2[pad], a2[pad] = float("nan"), 1e6, 1.0, float("nan"), float("nan")
    got = loss_and_grads(s2, z2, b2, o2, a2, mask)
    torch.testing.assert_close(got[0], ref[0])
    for x, y in zip(got[1], ref[1]):
        torch.testing.assert_close(x, y)
    # the padded batch's loss is the decision-weighted mean of each row's unpadded loss
    sw = mc.switch_mask(betas, mask)
    total = 0.0
    for i, n in enumerate(lengths.tolist()):
        row = mc.policy_loss(states[i:i + 1, :n], old[i:i + 1, :n], z[i:i + 1, :n], adv[i:i + 1, :n], betas[i:i + 1, :n])
        total = total + row * sw[i].sum()
    torch.testing.assert_close(ref[0], total / sw.sum(), rtol=1e-5, atol=1e-6)


def test_policy_loss_clip_and_update_changes_policy():
    model = make_model()
    mc = make_mc()
    randomize_policy_head(mc)
    g = rollout(model, mc, n=4, max_steps=10, seed=7)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    shifted = g["old_log_probs"] - 0.5  # ratio e^0.5 ≈ 1.65: the clip matters
    args = (g["states"], shifted, g["latent_actions"], adv, g["switch_betas"], g["mask"])
    l_small, l_big = mc.policy_loss(*args, clip=0.1), mc.policy_loss(*args, clip=1.0)
    assert not torch.allclose(l_small, l_big)
    before = [p.clone() for p in mc.internal_rl_parameters()]
    opt = torch.optim.Adam(mc.internal_rl_parameters(), lr=1e-2)
    mc.policy_loss(*args[:1], g["old_log_probs"], *args[2:]).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, mc.internal_rl_parameters()))


def test_policy_loss_is_the_clipped_surrogate_of_the_step_by_step_ratios():
    """With old log-probs shifted off the rollout's own (ρ = e^{−shift} on both sides of the clip) and per-episode
    advantages of both signs, policy_loss equals −mean over the switch steps of min(ρA, clip(ρ)A), ρ taken from the
    step-by-step log-probs of the rollout (a loop); one small SGD step at ρ = 1 then raises Σ A·log π at the switch
    steps: the ratio is new over old, not the reverse."""
    model = make_model()
    mc = make_mc()
    randomize_policy_head(mc)
    g = rollout(model, mc, n=4, max_steps=10, seed=7)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    sw = mc.switch_mask(g["switch_betas"], g["mask"])
    shift = torch.zeros(sw.shape)
    cycle = torch.tensor([0.5, -0.5, 0.05])  # the switch steps in turn: ρ below, above and inside the clip
    shift[sw] = cycle[torch.arange(int(sw.sum())) % 3]
    old = g["old_log_probs"] + shift
    terms = []
    for b in range(4):
        for t in range(sw.shape[1]):
            if sw[b, t]:
                rho = math.exp(-float(shift[b, t]))
                terms.append(min(rho * float(adv[b]), min(max(rho, 0.8), 1.2) * float(adv[b])))
    rho = torch.exp(-shift)[sw]
    assert (rho < 0.8).any() and (rho > 1.2).any() and len(terms) >= 3
    with torch.no_grad():
        got = mc.policy_loss(g["states"], old, g["latent_actions"], adv, g["switch_betas"], g["mask"], clip=0.2)
    assert float(got) == pytest.approx(-sum(terms) / len(terms), rel=1e-4, abs=1e-6)

    opt = torch.optim.SGD(mc.internal_rl_parameters(), lr=1e-3)
    mc.policy_loss(g["states"], g["old_log_probs"], g["latent_actions"], adv, g["switch_betas"], g["mask"]).backward()
    opt.step()
    with torch.no_grad():
        after = mc.policy_log_prob(g["states"], g["latent_actions"], g["switch_betas"], g["mask"])
    moved = (after - g["old_log_probs"])[sw]
    assert float((adv[:, None].expand_as(sw)[sw] * moved).sum()) > 0


def test_policy_loss_bad_shapes():
    mc = make_mc()
    st, z, b, o = torch.randn(2, 5, DIM), torch.randn(2, 5, 4), torch.ones(2, 5), torch.zeros(2, 5)
    with pytest.raises(ValueError, match="states"):
        mc.policy_loss(st[..., :3], o, z, torch.zeros(2), b)
    with pytest.raises(ValueError, match="latent_actions"):
        mc.policy_loss(st, o, z[..., :3], torch.zeros(2), b)
    with pytest.raises(ValueError, match="advantages"):
        mc.policy_loss(st, o, z, torch.zeros(3), b)
    with pytest.raises(ValueError, match="mask"):
        mc.policy_loss(st, o, z, torch.zeros(2), b, mask=torch.ones(2, 5))


# ----------------------------------------------------------------------------------------- arguments
def test_constructor_arguments_do_what_they_say():
    model = make_model(lower_body=dict(depth=2), upper_body=dict(depth=1), heads=4, dim_head=8)
    c = model.config
    assert (c.depth, c.control_layer, c.n_heads, c.head_dim, c.obs_dim, c.n_actions) == (3, 2, 4, 8, S, K)
    assert c.prev_action_input and c.obs_head == "gaussian"
    mc = make_mc(dim_meta_controller=24, dim_latent=6, rank=3)
    assert (mc.config.n_h, mc.config.n_s, mc.config.enc_hidden, mc.config.n_z, mc.config.rank) == (24, 24, 24, 6, 3)
    assert mc.policy.head.out_features == 12


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="action_embed_readout"):
        make_model(action_embed_readout=dict(num_discrete=4, num_continuous=2))
    with pytest.raises(ValueError, match="lower_body"):
        make_model(lower_body=dict(depth=1, heads=3))
    with pytest.raises(ValueError, match="Transformer"):
        make_model(no_such_option=1)
    with pytest.raises(ValueError, match="MetaController"):
        make_mc(no_such_option=1)
    model = make_model()
    with pytest.raises(ValueError, match="state must be"):
        model(torch.randn(2, 5, S + 1), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="actions must be integer"):
        model(torch.randn(2, 5, S), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="0..3"):
        model(torch.randn(2, 5, S), torch.full((2, 5), 4))
    with pytest.raises(ValueError, match="needs a meta_controller"):
        model(torch.randn(2, 5, S), torch.zeros(2, 5, dtype=torch.long), discovery_phase=True)
    with pytest.raises(ValueError, match="dim_model"):
        model(torch.randn(2, 5, S), torch.zeros(2, 5, dtype=torch.long), discovery_phase=True,
              meta_controller=MetaController(DIM * 2, dim_meta_controller=8, dim_latent=2))
    with pytest.raises(ValueError, match="before evolve"):
        model.evolve(1, lambda m: 0.0)


# --------------------------------------------------------------------------------------------- evolve
def _toy_fitness(target: torch.Tensor, e: torch.Tensor):
    def environment(model) -> float:
        with torch.no_grad():
            mean, _ = model.meta_controller.policy(e)
        return -float((mean - target).square().mean())
    return environment


def test_evolve_improves_toy_fitness_and_is_deterministic():
    e = torch.randn(1, 3, DIM, generator=torch.Generator().manual_seed(0))
    target = torch.full((1, 3, 4), 0.7)
    env = _toy_fitness(target, e)
    results = []
    for _ in range(2):
        model = make_model()
        model.meta_controller = make_mc()
        start = env(model)
        model.evolve(25, env, population_size=8, sigma=0.05, lr=0.03, seed=3)
        results.append((start, env(model), [p.clone() for p in model.meta_controller.internal_rl_parameters()]))
    (start, end, p1), (_, end2, p2) = results
    assert start == pytest.approx(-0.49, abs=1e-6)  # zero-initialised head: mean 0 everywhere
    assert end > start + 0.3
    random_models = []  # what a freshly initialised metacontroller reaches, over initialisation seeds
    for s in range(8):
        torch.manual_seed(100 + s)
        m = make_model()
        m.meta_controller = make_mc()
        random_models.append(env(m))
    assert end > max(random_models) + 0.3
    assert end == end2 and all(torch.equal(a, b) for a, b in zip(p1, p2))
    # lr changes what it says: a smaller step moves less
    model = make_model()
    model.meta_controller = make_mc()
    model.evolve(25, env, population_size=8, sigma=0.05, lr=0.003, seed=3)
    assert start < env(model) < end


def test_import_is_light():
    code = "import sys, internal_rl; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_seed_usage_example_script_runs():
    """examples/seed_usage.py (BC → discovery → GRPO → ES on gridworld-pinpad) runs end to end and reports
    every stage."""
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "seed_usage.py"
    run = subprocess.run([sys.executable, str(script), "--steps", "2", "--rl-iters", "1", "--generations", "1"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    for stage in ("BC ", "discovery ", "GRPO 0", "ES 0", "done in"):
        assert stage in run.stdout, run.stdout
