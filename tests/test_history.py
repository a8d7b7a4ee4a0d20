"""gru_sequence (the history GRU with a hand-written backward) against the GRU equations and nn.GRU, in float64."""

import pytest
import torch
from torch import nn

from internal_rl.control.history import HAND_BACKWARD_MAX_BATCH, gru_sequence


def reference(x, w_ih, w_hh, b_ih, b_hh):
    """h_1..h_T of the GRU equations in the module docstring, one step at a time from h_0 = 0."""
    H = w_hh.shape[1]
    h = torch.zeros(x.shape[0], H, dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        u = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        h = (1 - u) * n + u * h
        out.append(h)
    return torch.stack(out, dim=1)


def _gru(seed, D=6, H=5):
    torch.manual_seed(seed)
    gru = nn.GRU(D, H, batch_first=True).double()
    with torch.no_grad():  # larger weights than the default init, so the gates saturate differently per unit
        for p in gru.parameters():
            p.mul_(3.0)
    return gru


@pytest.mark.parametrize("T,x_grad", [(13, True), (13, False), (1, True)])
def test_values_and_gradients_match_the_equations(T, x_grad):
    gru = _gru(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, T, 6, generator=g, dtype=torch.float64).requires_grad_(x_grad)
    weight = torch.randn(3, T, 5, generator=g, dtype=torch.float64)
    params = list(gru.parameters())  # w_ih, w_hh, b_ih, b_hh
    inputs = ([x] if x_grad else []) + params
    results = []
    for fn in (lambda: reference(x, *params), lambda: gru(x)[0], lambda: gru_sequence(gru, x)):
        h = fn()
        loss = (weight * h).sum() + (h**2).sum()  # reads h through a nonlinearity too
        results.append((h.detach(),) + torch.autograd.grad(loss, inputs))
    ours = gru_sequence(gru, x)
    assert "GRUSequence" in ours.grad_fn.name()  # the hand-written backward is the one under test
    assert ours.shape == (3, T, 5)
    for ref in results[:2]:
        for r, o in zip(ref, results[2]):
            torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    reached = [gr.abs().sum() > 0 for gr in results[2][1:]]
    if T == 1:  # h_0 = 0, so W_hh has no effect at T = 1 (its gradient is exactly 0 in every implementation)
        assert not reached.pop(-3)
    assert all(reached)  # every other gradient is reached: the comparison is not vacuous


def test_large_batches_take_autograd_through_nn_gru_with_the_same_numbers():
    gru = _gru(2)
    x = torch.randn(HAND_BACKWARD_MAX_BATCH + 1, 4, 6, dtype=torch.float64)
    h = gru_sequence(gru, x)
    assert "GRUSequence" not in h.grad_fn.name()
    torch.testing.assert_close(h, reference(x, *gru.parameters()), rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # no graph wanted: the plain module
        assert gru_sequence(gru, x[:2]).grad_fn is None


def test_bad_input_raises():
    gru = _gru(3)
    with pytest.raises(ValueError, match=r"x must be \(B, T, 6\)"):
        gru_sequence(gru, torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="one-layer"):
        gru_sequence(nn.GRU(6, 5, num_layers=2, batch_first=True), torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="batch-first"):
        gru_sequence(nn.GRU(6, 5), torch.randn(2, 3, 6))


def test_gradient_for_the_input_alone_with_frozen_weights():
    """A frozen GRU (no weight needs a gradient) still passes the exact gradient to its input."""
    gru = _gru(4).requires_grad_(False)
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 9, 5, dtype=torch.float64)
    ours = gru_sequence(gru, x)
    assert "GRUSequence" in ours.grad_fn.name()
    (g_ours,) = torch.autograd.grad((w * ours).sum(), x)
    (g_ref,) = torch.autograd.grad((w * reference(x, *gru.parameters())).sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
