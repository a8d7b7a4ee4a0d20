"""Metacontroller (paper D.2): β/z semantics, forward == step, padding, loss, gradients, every option."""

import dataclasses

import pytest
import torch

from internal_rl.control.metacontroller import (
    MetaController,
    MetaControllerConfig,
    discovery_loss,
    gaussian_kl,
)

DT = torch.float64
D, T, BATCH = 12, 7, 3
LENGTHS = [7, 4, 1]


def make(seed: int = 0, **overrides) -> MetaController:
    torch.manual_seed(seed)
    cfg = MetaControllerConfig(
        d_model=D, n_z=4, n_h=6, n_s=5, enc_hidden=16, dec_hidden=8, switch_hidden=8, rank=3
    )
    return MetaController(dataclasses.replace(cfg, **overrides)).to(DT)


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(BATCH, T, D, generator=g, dtype=DT)
    mask = torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]
    return e, mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----- β / z semantics ------------------------------------------------------------------------------


def test_z_follows_integration_equation() -> None:
    mc = make()
    e, _ = inputs()
    out = mc(e, generator=gen(0))
    assert bool((out.beta[:, 0] == 1).all())
    torch.testing.assert_close(out.z[:, 0], out.z_tilde[:, 0])
    b = out.beta[:, 1:, None]
    ref = b * out.z_tilde[:, 1:] + (1 - b) * out.z[:, :-1]
    torch.testing.assert_close(out.z[:, 1:], ref, rtol=0, atol=1e-12)
    assert bool(((out.beta[:, 1:] > 0.01) & (out.beta[:, 1:] < 0.99)).all())  # soft: a probability


@pytest.mark.parametrize("switch", ["soft", "hard"])
def test_beta_one_switches_beta_zero_keeps(switch: str) -> None:
    mc = make(switch=switch)
    e, _ = inputs()
    with torch.no_grad():
        mc.switch_out.bias.fill_(60.0)  # β ≈ 1: always take the new proposal
    out = mc(e, generator=gen(0))
    torch.testing.assert_close(out.beta, torch.ones_like(out.beta))
    torch.testing.assert_close(out.z, out.z_tilde, rtol=0, atol=1e-12)
    with torch.no_grad():
        mc.switch_out.bias.fill_(-60.0)  # β ≈ 0: keep the previous code; β_1 is still 1
    out = mc(e, generator=gen(0))
    assert bool((out.beta[:, 0] == 1).all()) and bool((out.beta[:, 1:] < 1e-20).all())
    torch.testing.assert_close(out.z, out.z_tilde[:, :1].expand_as(out.z), rtol=0, atol=1e-12)
    assert not torch.allclose(out.z[:, 1:], out.z_tilde[:, 1:])


# ----- forward == step ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"switch": "hard"},
        {"switch": "gumbel", "gumbel_tau": 0.5},
        {"always_switch": True},
        {"full_rank": True},
    ],
)
@pytest.mark.parametrize("padded", [False, True])
def test_step_equals_forward(overrides: dict, padded: bool) -> None:
    mc = make(**overrides)
    e, mask = inputs()
    if not padded:
        mask = None
    out = mc(e, mask, generator=gen(3))
    state = mc.initial_state(BATCH, dtype=DT)
    steps, hs = [], []
    for t in range(T):
        sw = None if out.switch_noise is None else out.switch_noise[:, t]
        step, state = mc.step(e[:, t], state, s=out.s, noise=out.noise[:, t], switch_noise=sw)
        steps.append(step)
        hs.append(state.h)
    valid = mask if mask is not None else torch.ones(BATCH, T, dtype=torch.bool)
    tol = {"rtol": 0, "atol": 1e-9}
    def stack(name):
        return torch.stack([getattr(s, name) for s in steps], 1)

    torch.testing.assert_close(stack("beta")[valid], out.beta[valid], **tol)
    torch.testing.assert_close(stack("z")[valid], out.z[valid], **tol)
    torch.testing.assert_close(stack("e_hat")[valid], out.e_hat[valid], **tol)
    torch.testing.assert_close(stack("kl")[valid], out.kl[valid], **tol)
    torch.testing.assert_close(torch.stack(hs, 1)[valid], out.h[valid], **tol)
    last = torch.tensor(LENGTHS) - 1 if padded else torch.full((BATCH,), T - 1)
    torch.testing.assert_close(torch.stack(hs, 1)[torch.arange(BATCH), last], out.h_last, **tol)
    if not padded:
        torch.testing.assert_close(state.h, out.h_last, **tol)


def test_pieces_match_forward() -> None:
    """switch / history_step / decode, used alone by the option-level env, agree with forward."""
    mc = make()
    e, _ = inputs()
    out = mc(e, sample=False)
    h = torch.zeros(BATCH, 6, dtype=DT)
    for t in range(T):
        if t > 0:
            torch.testing.assert_close(
                mc.switch(e[:, t], h, out.z[:, t - 1]), out.beta[:, t], rtol=0, atol=1e-12
            )
        h = mc.history_step(e[:, t], h)
        torch.testing.assert_close(h, out.h[:, t], rtol=0, atol=1e-12)
    torch.testing.assert_close(mc.decode(out.z).A, out.params.A)
    torch.testing.assert_close(out.params.apply(e), out.e_hat, rtol=0, atol=1e-12)  # e_hat = e + U_t e_t
    assert mc.binarize(torch.tensor([0.2, 0.5, 0.9])).tolist() == [False, True, True]


def test_step_with_external_proposal_and_reset() -> None:
    mc = make()
    e, _ = inputs()
    state = mc.initial_state(BATCH, dtype=DT)
    zt = torch.randn(BATCH, 4, dtype=DT)
    step, state = mc.step(e[:, 0], state, z_tilde=zt)
    torch.testing.assert_close(step.z, zt)  # first step switches to the given code
    assert step.kl is None and step.mu is None
    state.first = torch.tensor([True, False, False])  # reset row 0 only
    step2, state2 = mc.step(e[:, 1], state, z_tilde=zt * 2)
    fresh, _ = mc.step(e[:1, 1], mc.initial_state(1, dtype=DT), z_tilde=zt[:1] * 2)
    torch.testing.assert_close(step2.z[:1], fresh.z)
    torch.testing.assert_close(state2.h[:1], mc.history_step(e[:1, 1], torch.zeros(1, 6, dtype=DT)))
    assert step2.beta[0] == 1 and bool((step2.beta[1:] < 1).all())


# ----- padding --------------------------------------------------------------------------------------


def test_padding_changes_nothing_valid() -> None:
    mc = make(switch="gumbel")
    e, mask = inputs()
    out = mc(e, mask, generator=gen(5))
    e_garbage = e.clone()
    e_garbage[~mask] = float("nan")
    e_long = torch.cat([e_garbage, torch.full((BATCH, 3, D), 1e6, dtype=DT)], 1)
    mask_long = torch.cat([mask, torch.zeros(BATCH, 3, dtype=torch.bool)], 1)
    noise = torch.cat([out.noise, torch.randn(BATCH, 3, 4, dtype=DT)], 1)
    sw = torch.cat([out.switch_noise, torch.randn(BATCH, 3, dtype=DT)], 1)
    out2 = mc(e_long, mask_long, noise=noise, switch_noise=sw)
    for name in ("beta", "z", "e_hat", "kl", "mu", "h"):
        torch.testing.assert_close(
            getattr(out2, name)[:, :T][mask], getattr(out, name)[mask], rtol=0, atol=1e-12
        )
    torch.testing.assert_close(out2.s, out.s, rtol=0, atol=1e-12)
    torch.testing.assert_close(out2.h_last, out.h_last, rtol=0, atol=1e-12)
    assert bool((out2.beta[~mask_long] == 0).all()) and bool((out2.kl[~mask_long] == 0).all())
    # each padded row equals that row alone, unpadded
    for b, n in enumerate(LENGTHS):
        alone = mc(
            e[b : b + 1, :n], noise=out.noise[b : b + 1, :n], switch_noise=out.switch_noise[b : b + 1, :n]
        )
        torch.testing.assert_close(alone.z[0], out.z[b, :n], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone.s[0], out.s[b], rtol=0, atol=1e-12)


# ----- loss and gradients ---------------------------------------------------------------------------


def test_kl_and_discovery_loss_values() -> None:
    mu = torch.tensor([[0.5, -1.0]], dtype=DT)
    logvar = torch.tensor([[0.2, -0.3]], dtype=DT)
    var = logvar.exp()
    ref = sum(0.5 * (var[0, i] + mu[0, i] ** 2 - 1 - logvar[0, i]) for i in range(2))
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref.reshape(1))

    mc = make()
    e, mask = inputs()
    out = mc(e, mask, generator=gen(0))
    logp = -torch.rand(BATCH, T, dtype=DT)
    logp_garbage = torch.where(mask, logp, torch.tensor(float("nan"), dtype=DT))
    res = discovery_loss(logp_garbage, out, mask, alpha=0.3)
    n = mask.sum()
    torch.testing.assert_close(res["nll"], -logp[mask].sum() / n)
    torch.testing.assert_close(res["kl"], out.kl[mask].sum() / n)
    torch.testing.assert_close(res["loss"], res["nll"] + 0.3 * res["kl"])
    for b in range(BATCH):  # per episode: a loop over its valid steps
        valid = [t for t in range(T) if mask[b, t]]
        assert res["episode_steps"][b] == len(valid)
        torch.testing.assert_close(res["episode_loss"][b], sum(-logp[b, t] + 0.3 * out.kl[b, t] for t in valid))
    torch.testing.assert_close(res["episode_loss"].sum() / res["episode_steps"].sum(), res["loss"])
    unmasked = discovery_loss(logp, mc(e, generator=gen(0)), None, alpha=0.3)
    assert torch.isfinite(unmasked["loss"]) and not torch.allclose(unmasked["loss"], res["loss"])


@pytest.mark.parametrize("switch", ["soft", "hard", "gumbel"])
def test_gradients_reach_every_used_parameter(switch: str) -> None:
    mc = make(switch=switch)
    e, mask = inputs()
    readout = torch.randn(D, 5, dtype=DT)
    out = mc(e, mask, generator=gen(0))
    logp = torch.log_softmax(out.e_hat @ readout, -1)[..., 0]
    discovery_loss(logp, out, mask, alpha=0.1)["loss"].backward()
    for name, p in mc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_always_switch_leaves_switch_unit_unused() -> None:
    mc = make(always_switch=True)
    e, mask = inputs()
    out = mc(e, mask, generator=gen(0))
    assert bool((out.beta[mask] == 1).all())
    torch.testing.assert_close(out.z, out.z_tilde)
    discovery_loss(torch.log_softmax(out.e_hat, -1)[..., 0], out, mask, alpha=0.1)["loss"].backward()
    for name, p in mc.named_parameters():
        assert (p.grad is None) == name.startswith("switch_"), name


def test_force_switch_is_always_switch_for_one_call() -> None:
    """The switch warm-up of discovery: force_switch=True gives exactly the β ≡ 1 ablation's output."""
    mc, ablation = make(), make(always_switch=True)
    e, mask = inputs()
    forced = mc(e, mask, generator=gen(0), force_switch=True)
    ref = ablation(e, mask, generator=gen(0))
    for name in ("beta", "z", "e_hat", "kl"):
        torch.testing.assert_close(getattr(forced, name), getattr(ref, name))
    normal = mc(e, mask, generator=gen(0))
    assert float(normal.beta[:, 1:].detach().max()) < 1.0  # the next call uses the switching unit again


def test_switch_schedule_imposes_beta_and_holds_z() -> None:
    """An imposed schedule: z jumps to the proposal where β = 1 (always at t = 1) and holds where β = 0."""
    mc = make()
    e, mask = inputs()
    sched = torch.zeros(BATCH, T, dtype=DT)
    sched[:, 3] = 1.0
    sched[0, 5] = 1.0
    out = mc(e, mask, generator=gen(0), switch_schedule=sched)
    expect = sched.clone()
    expect[:, 0] = 1.0
    expect = torch.where(mask, expect, torch.zeros((), dtype=DT))
    torch.testing.assert_close(out.beta, expect)
    for b in range(BATCH):  # loop reference: z is the proposal at the last switch at or before t
        last = 0
        for t in range(LENGTHS[b]):
            if expect[b, t] == 1:
                last = t
            torch.testing.assert_close(out.z[b, t], out.z_tilde[b, last], rtol=0, atol=0)
    with pytest.raises(ValueError, match="switch_schedule"):
        mc(e, mask, switch_schedule=sched[:, :-1])


# ----- every option does what it says ---------------------------------------------------------------


def test_sample_flag_and_noise_replay() -> None:
    mc = make()
    e, _ = inputs()
    det1, det2 = mc(e, sample=False, generator=gen(1)), mc(e, sample=False, generator=gen(2))
    torch.testing.assert_close(det1.z_tilde, det1.mu)
    torch.testing.assert_close(det1.z, det2.z)
    assert det1.noise is None
    s1, s2 = mc(e, generator=gen(1)), mc(e, generator=gen(2))
    assert not torch.allclose(s1.z, s2.z) and not torch.allclose(s1.z_tilde, s1.mu)
    torch.testing.assert_close(s1.z_tilde, s1.mu + (0.5 * s1.logvar).exp() * s1.noise)
    torch.testing.assert_close(mc(e, noise=s1.noise).z, s1.z)


def test_switch_modes_change_beta() -> None:
    e, _ = inputs()
    soft = make(switch="soft")(e, generator=gen(0))
    hard = make(switch="hard")(e, generator=gen(0))
    p = soft.beta[:, 1:]
    assert bool(((p > 0) & (p < 1)).all())
    assert set(hard.beta.unique().tolist()) <= {0.0, 1.0}
    # hard with the same weights: β_t = 1[σ ≥ threshold] of the same switch MLP
    mc = make(switch="hard")
    out = mc(e, sample=False)
    z_prev, h_prev = out.z[:, :-1], torch.nn.functional.pad(out.h[:, :-1], (0, 0, 1, 0))[:, 1:]
    prob = mc.switch(e[:, 1:], h_prev, z_prev)
    torch.testing.assert_close(out.beta[:, 1:], (prob >= 0.5).to(DT))
    high = make(switch="hard", beta_threshold=0.9)
    high.load_state_dict(mc.state_dict())
    assert (prob < 0.9).any() and (prob >= 0.5).any()
    torch.testing.assert_close(
        high(e, sample=False).beta[:, 1:][prob < 0.9], torch.zeros_like(prob[prob < 0.9])
    )
    # gumbel: noise changes β when sampling; lower temperature is closer to binary; no noise when not sampling
    g1, g2 = make(switch="gumbel")(e, generator=gen(1)), make(switch="gumbel")(e, generator=gen(2))
    assert not torch.allclose(g1.beta, g2.beta)
    cold = make(switch="gumbel", gumbel_tau=0.05)(e, noise=g1.noise, switch_noise=g1.switch_noise)
    def dist(b):
        return (b[:, 1:] - b[:, 1:].round()).abs().mean()

    assert dist(cold.beta) < dist(g1.beta)
    gdet = make(switch="gumbel", gumbel_tau=2.0)
    out = gdet(e, sample=False)
    assert out.switch_noise is None
    prob = gdet.switch(e[:, 1:], h_prev, out.z[:, :-1])
    torch.testing.assert_close(out.beta[:, 1:], torch.sigmoid(torch.logit(prob) / 2.0))


def test_full_rank_and_rank_options() -> None:
    e, _ = inputs()
    full = make(full_rank=True)(e, generator=gen(0))
    assert full.params.U.shape == (BATCH, T, D, D) and full.params.A is None
    torch.testing.assert_close(full.params.apply(e), full.e_hat, rtol=0, atol=1e-12)
    low = make(rank=5)(e, generator=gen(0))
    assert low.params.A.shape == (BATCH, T, D, 5) and low.params.U is None
    for out in (full, low):
        assert 0 < ((out.e_hat - e).norm() / e.norm()).item() < 0.05  # U ≈ 0 at init
    big = make(decoder_init_scale=1.0)(e, generator=gen(0))
    assert ((big.e_hat - e).norm() / e.norm()).item() > 0.05


def test_embedder_options() -> None:
    e, mask = inputs()
    mc = make(embedder_dim=8, embedder_layers=2, embedder_heads=2)
    assert len(mc.embedder.blocks) == 2 and mc.embedder.dim == 8
    assert mc.embed(e, mask).shape == (BATCH, 5)


# ----- bad input ------------------------------------------------------------------------------------


def test_bad_inputs_raise() -> None:
    mc = make()
    e, mask = inputs()
    with pytest.raises(ValueError, match="d_model"):
        mc(torch.zeros(BATCH, T, D + 1, dtype=DT))
    with pytest.raises(ValueError, match="d_model"):
        mc(torch.zeros(T, D, dtype=DT))
    with pytest.raises(ValueError, match="shape"):
        mc(e, mask[:, :-1])
    with pytest.raises(ValueError, match="bool"):
        mc(e, mask.to(DT))
    with pytest.raises(ValueError, match="noise"):
        mc(e, noise=torch.zeros(BATCH, T, 3, dtype=DT))
    with pytest.raises(ValueError, match="switch"):
        MetaControllerConfig(d_model=D, switch="binary")
    with pytest.raises(ValueError):
        MetaControllerConfig(d_model=D, gumbel_tau=0.0)
    state = mc.initial_state(BATCH, dtype=DT)
    with pytest.raises(ValueError, match="sequence embedding"):
        mc.step(e[:, 0], state)
    with pytest.raises(ValueError, match="d_model"):
        mc.step(e[:, 0, :-1], state, s=torch.zeros(BATCH, 5, dtype=DT))
    with pytest.raises(ValueError, match="batch"):
        mc.step(e[:2, 0], state, s=torch.zeros(2, 5, dtype=DT))
    with pytest.raises(ValueError, match="action_logp"):
        discovery_loss(torch.zeros(BATCH, T + 1, dtype=DT), mc(e), None)
    with pytest.raises(ValueError, match="h_prev"):
        mc.history_step(e[:, 0], torch.zeros(BATCH, 5, dtype=DT))
