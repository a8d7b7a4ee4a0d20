import numpy as np
import pytest
import torch

from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad
from internal_rl.experts.pinpad_expert import ShortestPathExpert
from internal_rl.models.encoders import LayoutMemo, NavEncoder, make_encoder, shortest_path_moves


@pytest.mark.parametrize("task", [None, POST_TRAINING_TASK])
def test_shortest_path_moves_match_the_expert(task):
    """For the colour the expert is heading to, the feature is exactly the expert's optimal-move set."""
    env = BatchedPinPad(64, seed=1)
    env.reset(task, seed=1)
    expert, rng = ShortestPathExpert(), np.random.default_rng(1)
    checked = 0
    for _ in range(40):
        live = ~env.done
        if not live.any():
            break
        moves = shortest_path_moves(torch.as_tensor(env.obs, dtype=torch.float32), 7, 8).numpy()
        chosen = moves[np.arange(env.num_envs), env.target_color]
        np.testing.assert_array_equal(chosen[live], (expert.action_probs(env) > 0)[live])
        checked += int(live.sum())
        env.step(expert.act(env, rng))
    assert checked > 500


def test_layout_memo_returns_what_the_bfs_returns():
    """Along a rollout (same layouts every step, rows dropped as episodes end, then a new batch of layouts)
    the memo hits after the first call and every answer equals the memo-free BFS."""
    env = BatchedPinPad(32, seed=3)
    memo, rng, hits = LayoutMemo(), np.random.default_rng(0), 0
    for reset_seed in (3, 4):
        env.reset(POST_TRAINING_TASK, seed=reset_seed)
        for t in range(12):
            rows = np.arange(env.num_envs) if t < 6 else np.flatnonzero(rng.random(env.num_envs) < 0.5)
            obs = torch.as_tensor(env.obs[rows], dtype=torch.float32)
            before = memo.layouts
            got = shortest_path_moves(obs, 7, 8, memo)
            hits += memo.layouts is before and before is not None
            assert torch.equal(got, shortest_path_moves(obs, 7, 8))
            env.step(rng.integers(0, 4, env.num_envs))
    assert hits >= 18  # every call but the first of each batch of layouts (some steps end episodes by reset)


def test_shortest_path_moves_by_hand():
    """3x3 grid, 2 colours, 1 wall: colour 0 at (0,2), colour 1 at (1,2), wall at (1,1), agent at (2,2)."""
    obs = torch.zeros(9, 2 + 1 + 1)
    obs[2, 0] = 1  # colour 0
    obs[5, 1] = 1  # colour 1
    obs[4, 2] = 1  # wall
    obs[8, 3] = 1  # agent
    m = shortest_path_moves(obs.reshape(1, -1), 3, 2)[0]
    # colour 1 is straight up; colour 0 must go around the wall and colour 1: left first.
    assert m[1].tolist() == [True, False, False, False]
    assert m[0].tolist() == [False, False, True, False]


def test_unreachable_colour_has_no_move():
    obs = torch.zeros(9, 4)
    obs[0, 0] = 1  # colour 0 in the corner, boxed in by walls
    obs[1, 2] = obs[3, 2] = 1
    obs[5, 1] = 1
    obs[8, 3] = 1
    m = shortest_path_moves(obs.reshape(1, -1), 3, 2)[0]
    assert not m[0].any() and m[1].any()


def test_nav_encoder_shapes_and_errors():
    enc = make_encoder("nav", 637, 16)
    assert isinstance(enc, NavEncoder)
    assert enc(torch.zeros(2, 5, 637)).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("conv", 637, 16)
    with pytest.raises(ValueError, match="n_colors"):
        make_encoder("nav", 637, 16, n_colors=12)
    with pytest.raises(ValueError, match="7x7"):
        shortest_path_moves(torch.zeros(1, 64 * 4), 8, 2)


def test_unique_rows_matches_torch_unique():
    from internal_rl.models.encoders import _unique_rows

    x = torch.randint(0, 3, (500, 4), generator=torch.Generator().manual_seed(0))
    rows, inverse = _unique_rows(x)
    ref_rows, ref_inverse = torch.unique(x, dim=0, return_inverse=True)
    assert torch.equal(rows, ref_rows) and torch.equal(inverse, ref_inverse)
    assert torch.equal(rows[inverse], x)


def _grid_encoder_reference(G: int, C: int, obs: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """The grid encoder written out with loops in float64: the flat map, the contents of the agent's cell and
    an explicitly built egocentric window, each through its dense weight matrix."""
    W = 2 * G - 1
    flat_w, flat_b, under_w, ego_w = weights
    out = []
    for o in obs.double():
        cells = o.view(G * G, C)
        agent = int(cells[:, -1].argmax())
        under = (cells[:, -1:] * cells[:, :-1]).sum(0)
        window = torch.zeros(W, W, C, dtype=torch.float64)
        r0, c0 = divmod(agent, G)
        for cell in range(G * G):
            r, c = divmod(cell, G)
            window[r - r0 + G - 1, c - c0 + G - 1, :-1] = cells[cell, :-1]
            window[r - r0 + G - 1, c - c0 + G - 1, -1] = 1.0
        out.append(flat_w @ o + flat_b + under_w @ under + ego_w @ window.reshape(-1))
    return torch.stack(out)


@pytest.mark.parametrize("kind, n_env", [("grid", 6), ("nav", 6), ("grid", 60)])
def test_grid_encoder_matches_a_dense_loop_reference(kind, n_env):
    """The sparse (embedding-bag) encoder equals the dense float64 loop reference in value and gradient, on real
    observations, an all-zero padding row and a non-binary observation; with fewer observations than cells
    (the "inside" bits per observation) and with more (per cell, then gathered)."""
    torch.manual_seed(0)
    enc = make_encoder(kind, 637, 24)
    for p in enc.parameters():
        torch.nn.init.normal_(p)  # no zero-initialised parts hiding a wrong term
    env = BatchedPinPad(n_env, seed=3)
    env.reset(None, seed=3)
    obs = torch.as_tensor(env.obs, dtype=torch.float32)
    odd = torch.rand(637) * (torch.rand(637) < 0.2)
    obs = torch.cat([obs, torch.zeros(1, 637), odd[None]])
    got = enc(obs)
    params = [enc.flat.weight, enc.flat.bias, enc.under.weight, enc.ego.weight]
    ref = [p.detach().double().requires_grad_() for p in params]
    want = _grid_encoder_reference(enc.grid, enc.channels, obs, ref)
    if kind == "nav":  # the nav term is the grid encoder plus a linear map of the moves
        want = want + enc.nav(shortest_path_moves(obs, 7, 8).flatten(1).float()).double()
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-4)
    weight = torch.randn_like(got)
    grads = torch.autograd.grad((got * weight).sum(), params)
    ref_grads = torch.autograd.grad((want * weight.double()).sum(), ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-4)
    assert got.shape == (n_env + 2, 24) and enc(obs.view(2, -1, 637)).shape == (2, n_env // 2 + 1, 24)
    if kind == "grid":  # the sums stay float32 under bf16 autocast (only the nav map is a matrix product)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = enc(obs)
        assert under_autocast.dtype == torch.float32
        torch.testing.assert_close(under_autocast, got, rtol=1e-6, atol=1e-6)


def test_grid_encoder_weights_are_column_major_and_initialise_as_before():
    """The encoder stores its weights column by column (weight.t() contiguous, read by embedding_bag without a
    copy); the model's seeded initialisation gives the same values as a row-major layout, a round trip through
    a checkpoint keeps them, and a weight changed behind autograd's back (.data) is seen by the next call."""
    from internal_rl.experiments.presets import model_config
    from internal_rl.models.sequence_model import SequenceModel
    from internal_rl.models.transformer import variance_scaling_

    enc = make_encoder("nav", 637, 16)
    for lin in (enc.flat, enc.under, enc.ego):
        assert lin.weight.t().is_contiguous() and not lin.weight.is_contiguous()
    torch.manual_seed(0)
    row_major = variance_scaling_(torch.empty(16, 637), 0.1)
    torch.manual_seed(0)
    torch.testing.assert_close(variance_scaling_(torch.empty(637, 16).t(), 0.1), row_major, rtol=0, atol=0)
    torch.manual_seed(3)
    model = SequenceModel(model_config("smoke"))
    torch.manual_seed(3)
    again = SequenceModel(model_config("smoke"))
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    env = BatchedPinPad(4, seed=2)
    env.reset(None, seed=2)
    obs = torch.as_tensor(env.obs, dtype=torch.float32)
    with torch.no_grad():
        before = model.encoder(obs)
        model.encoder.ego.weight.data.mul_(2.0)  # no version bump: nothing may be cached
        after = model.encoder(obs)
    want = _grid_encoder_reference(7, 13, obs, [p.detach().double() for p in (
        model.encoder.flat.weight, model.encoder.flat.bias, model.encoder.under.weight, model.encoder.ego.weight)])
    want = want + model.encoder.nav(shortest_path_moves(obs, 7, 8).flatten(1).float()).double()
    torch.testing.assert_close(after.double(), want, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(before, after)
