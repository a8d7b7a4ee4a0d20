"""switch_recurrence (hand-written backward) against the plain autograd loop, in float64."""

import pytest
import torch
import torch.nn.functional as F

from internal_rl.control.metacontroller import MetaController, MetaControllerConfig
from internal_rl.control.switching import switch_recurrence


def reference(pre, y_tilde, w_out, b_out, noise, mode, tau, threshold):
    """The recurrence as written in the module docstring, one autograd op at a time."""
    y = y_tilde[:, 0]
    betas = [torch.ones_like(pre[:, 0, 0])]
    for t in range(1, pre.shape[1]):
        logit = F.relu(pre[:, t] + y) @ w_out + b_out
        if mode == "gumbel":
            b = torch.sigmoid((logit + (0.0 if noise is None else noise[:, t])) / tau)
        else:
            p = torch.sigmoid(logit)
            b = p if mode == "soft" else (p >= threshold).to(p.dtype) + (p - p.detach())
        y = b[:, None] * y_tilde[:, t] + (1.0 - b[:, None]) * y
        betas.append(b)
    return torch.stack(betas, dim=1)


def _inputs(seed, B=3, T=17, H=6):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)  # noqa: E731
    return mk(B, T, H), mk(B, T, H), mk(H), mk(()), torch.randn(B, T, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("mode,use_noise", [("soft", False), ("hard", False), ("gumbel", True), ("gumbel", False)])
def test_values_and_gradients_match_the_autograd_loop(mode, use_noise):
    pre, y_tilde, w_out, b_out, noise = _inputs(0)
    noise = noise if use_noise else None
    weight = torch.randn(pre.shape[:2], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (reference, switch_recurrence):
        beta = fn(pre, y_tilde, w_out, b_out, noise, mode, 0.7, 0.5)
        # a loss that also reads β through a nonlinearity, so every path of the gradient matters
        loss = (weight * beta).sum() + (beta**2).sum()
        grads.append((beta.detach(),) + torch.autograd.grad(loss, (pre, y_tilde, w_out, b_out)))
    ref, ours = grads
    assert ours[0].shape == pre.shape[:2]
    assert torch.equal(ours[0][:, 0], torch.ones(pre.shape[0], dtype=torch.float64))  # β_1 = 1
    for r, o in zip(ref, ours):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    if mode == "hard":
        assert set(ours[0].unique().tolist()) <= {0.0, 1.0}
    assert ours[4].abs() > 0  # the gradient reaches the output bias: the check is not vacuous


def test_single_step_sequence():
    pre, y_tilde, w_out, b_out, _ = _inputs(4, T=1)
    beta = switch_recurrence(pre, y_tilde, w_out, b_out)
    assert torch.equal(beta, torch.ones(pre.shape[0], 1, dtype=torch.float64))
    g = torch.autograd.grad(beta.sum(), (pre, y_tilde), allow_unused=True)
    assert all(x is None or not x.any() for x in g)


def test_gradcheck_soft():
    pre, y_tilde, w_out, b_out, _ = _inputs(2, B=2, T=6, H=4)
    assert torch.autograd.gradcheck(lambda *a: switch_recurrence(*a), (pre, y_tilde, w_out, b_out))


def test_metacontroller_discovery_gradients_unchanged():
    """The metacontroller's whole-sequence pass gives the same β, z and parameter gradients with the plain
    autograd loop swapped in for switch_recurrence."""
    torch.manual_seed(0)
    mc = MetaController(MetaControllerConfig(d_model=16, n_h=8, n_s=8, n_z=4, enc_hidden=16, dec_hidden=8,
                                             rank=2, switch_hidden=12)).double()
    e = torch.randn(2, 11, 16, dtype=torch.float64)
    noise = torch.randn(2, 11, 4, dtype=torch.float64)
    out = mc(e, noise=noise)
    g_ours = torch.autograd.grad(out.e_hat.sum() + out.beta.sum(), list(mc.parameters()), allow_unused=True)

    import internal_rl.control.metacontroller as mod
    orig = mod.switch_recurrence
    mod.switch_recurrence = reference
    try:
        ref = mc(e, noise=noise)
        g_ref = torch.autograd.grad(ref.e_hat.sum() + ref.beta.sum(), list(mc.parameters()), allow_unused=True)
    finally:
        mod.switch_recurrence = orig
    torch.testing.assert_close(out.beta, ref.beta, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.z, ref.z, rtol=1e-10, atol=1e-12)
    for a, r in zip(g_ours, g_ref):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
    assert g_ours[list(dict(mc.named_parameters())).index("switch_out.bias")].abs() > 0


def test_bad_inputs_raise():
    pre, y_tilde, w_out, b_out, noise = _inputs(3)
    with pytest.raises(ValueError, match="pre and y_tilde"):
        switch_recurrence(pre[:, :, :2], y_tilde, w_out, b_out)
    with pytest.raises(ValueError, match="w_out"):
        switch_recurrence(pre, y_tilde, w_out[:2], b_out)
    with pytest.raises(ValueError, match="mode"):
        switch_recurrence(pre, y_tilde, w_out, b_out, mode="sharp")
    with pytest.raises(ValueError, match="noise"):
        switch_recurrence(pre, y_tilde, w_out, b_out, noise=noise[:, :3], mode="gumbel")
