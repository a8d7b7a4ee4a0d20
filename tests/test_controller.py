"""Controllers ê = e + U e: values against dense float64 references; no D×D tensor when low rank."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from internal_rl.control.controller import ControlParams, HyperDecoder, apply_full, apply_low_rank

DT = torch.float64


def test_apply_low_rank_matches_dense_reference_per_step() -> None:
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 5, 10, generator=g, dtype=DT)
    A = torch.randn(3, 5, 10, 4, generator=g, dtype=DT)
    B = torch.randn(3, 5, 10, 4, generator=g, dtype=DT)
    U = B @ A.transpose(-1, -2)  # dense reference only
    ref = e + torch.einsum("btij,btj->bti", U, e)
    torch.testing.assert_close(apply_low_rank(e, A, B), ref, rtol=1e-12, atol=1e-12)


def test_apply_low_rank_broadcasts_one_controller() -> None:
    g = torch.Generator().manual_seed(1)
    e = torch.randn(3, 5, 10, generator=g, dtype=DT)
    A = torch.randn(10, 4, generator=g, dtype=DT)
    B = torch.randn(10, 4, generator=g, dtype=DT)
    ref = e + e @ (B @ A.T).T
    torch.testing.assert_close(apply_low_rank(e, A, B), ref, rtol=1e-12, atol=1e-12)
    # one controller per batch row, broadcast over time
    A2 = torch.randn(3, 1, 10, 4, generator=g, dtype=DT)
    B2 = torch.randn(3, 1, 10, 4, generator=g, dtype=DT)
    U2 = B2 @ A2.transpose(-1, -2)
    torch.testing.assert_close(
        apply_low_rank(e, A2, B2),
        e + torch.einsum("btij,btj->bti", U2.expand(3, 5, 10, 10), e),
        rtol=1e-12,
        atol=1e-12,
    )


def test_apply_full_matches_dense_reference() -> None:
    g = torch.Generator().manual_seed(2)
    e = torch.randn(3, 5, 6, generator=g, dtype=DT)
    U = torch.randn(3, 5, 6, 6, generator=g, dtype=DT)
    torch.testing.assert_close(
        apply_full(e, U), e + torch.einsum("btij,btj->bti", U, e), rtol=1e-12, atol=1e-12
    )
    U1 = torch.randn(6, 6, generator=g, dtype=DT)
    torch.testing.assert_close(apply_full(e, U1), e + e @ U1.T, rtol=1e-12, atol=1e-12)


def test_apply_bad_shapes_raise() -> None:
    e = torch.zeros(2, 3, 8)
    with pytest.raises(ValueError, match="width"):
        apply_low_rank(e, torch.zeros(7, 2), torch.zeros(7, 2))
    with pytest.raises(ValueError):
        apply_low_rank(e, torch.zeros(8, 2), torch.zeros(8, 3))
    with pytest.raises(ValueError, match="width"):
        apply_full(e, torch.zeros(7, 7))
    with pytest.raises(ValueError):
        apply_full(e, torch.zeros(8, 7))
    with pytest.raises(ValueError):
        ControlParams(A=torch.zeros(8, 2))
    with pytest.raises(ValueError):
        ControlParams(A=torch.zeros(8, 2), B=torch.zeros(8, 2), U=torch.zeros(8, 8))


@pytest.mark.parametrize("full_rank", [False, True])
def test_hyper_decoder_values_and_small_init(full_rank: bool) -> None:
    torch.manual_seed(3)
    D, r = 32, 4
    dec = HyperDecoder(5, D, hidden=16, rank=r, full_rank=full_rank).to(DT)
    z = torch.randn(2, 7, 5, dtype=DT)
    e = torch.randn(2, 7, D, dtype=DT)
    params = dec(z)
    if full_rank:
        assert params.full_rank and params.U.shape == (2, 7, D, D) and params.A is None
        U = params.U
    else:
        assert not params.full_rank and params.A.shape == (2, 7, D, r) and params.B.shape == (2, 7, D, r)
        U = params.B @ params.A.transpose(-1, -2)
    ref = e + torch.einsum("btij,btj->bti", U, e)
    torch.testing.assert_close(dec.apply(e, params), ref, rtol=1e-12, atol=1e-12)
    # U ≈ 0 at init: the controlled model starts as the base model, but U is not exactly 0
    rel = (dec.apply(e, params) - e).norm() / e.norm()
    assert 1e-5 < rel.item() < 0.05
    # indexing the leading dims selects one step's controller
    torch.testing.assert_close(params[:, 3].apply(e[:, 3]), ref[:, 3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("full_rank", [False, True])
def test_fused_control_equals_decode_then_apply(full_rank: bool) -> None:
    torch.manual_seed(5)
    dec = HyperDecoder(5, 12, hidden=7, rank=3, full_rank=full_rank).to(DT)
    for p in dec.parameters():  # generic weights, not the small init
        torch.nn.init.normal_(p, std=0.5)
    z = torch.randn(2, 4, 5, dtype=DT)
    e = torch.randn(2, 4, 12, dtype=DT)
    torch.testing.assert_close(dec.control(e, z), dec.apply(e, dec(z)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        dec.control(e[0, 0], z[0, 0]), dec.apply(e[0, 0], dec(z[0, 0])), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="d_model"):
        dec.control(e[..., :-1], z)


def test_hyper_decoder_init_scale_changes_size() -> None:
    sizes = []
    for scale in (1e-3, 1e-1):
        torch.manual_seed(4)
        dec = HyperDecoder(5, 16, rank=4, init_scale=scale).to(DT)
        e = torch.randn(50, 16, dtype=DT)
        sizes.append(((dec.apply(e, dec(torch.randn(50, 5, dtype=DT))) - e).norm() / e.norm()).item())
    assert sizes[1] > 30 * sizes[0]


def test_hyper_decoder_bad_input_and_module_apply() -> None:
    dec = HyperDecoder(5, 16, rank=4)
    with pytest.raises(ValueError, match="z"):
        dec(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="d_model"):
        dec.apply(torch.zeros(3, 15), dec(torch.zeros(3, 5)))
    seen = []
    dec.apply(lambda m: seen.append(type(m).__name__))  # nn.Module.apply still works
    assert "HyperDecoder" in seen and "Linear" in seen


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor produced by an op (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("full_rank", [False, True])
def test_no_d_squared_tensor_in_low_rank_case(full_rank: bool) -> None:
    """Low rank never creates a D×D-sized tensor (forward, apply, backward); full rank does (probe works)."""
    D, r, hidden = 256, 2, 8  # hidden * D * r and B * T * D * r are far below D * D
    dec = HyperDecoder(4, D, hidden=hidden, rank=r, full_rank=full_rank)
    z = torch.randn(2, 3, 4, requires_grad=True)
    e = torch.randn(2, 3, D, requires_grad=True)
    with _LargestTensor() as probe:
        dec.apply(e, dec(z)).square().sum().backward()
    with _LargestTensor() as fused_probe:
        dec.control(e, z).square().sum().backward()
    if full_rank:
        assert probe.largest >= D * D
    else:
        assert probe.largest < D * D // 8, probe.largest
        assert fused_probe.largest < D * D // 8, fused_probe.largest
        assert z.grad is not None and e.grad is not None
