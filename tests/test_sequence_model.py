import math

import pytest
import torch

from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig, freeze, prev_actions_of
from internal_rl.models.transformer import KV_INITIAL_CAPACITY, relative_position_bucket


def tiny(**kw) -> SequenceModel:
    cfg = dict(obs_dim=7 * 7 * 13, d_model=32, depth=4, n_heads=2, head_dim=16, mlp_hidden=64, max_len=40)
    cfg.update(kw)
    torch.manual_seed(0)
    return SequenceModel(SequenceModelConfig(**cfg)).double()


def grid_obs(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(B, T, 49, 13, dtype=torch.float64)
    cells = torch.randint(0, 49, (B, T), generator=g)
    obs[torch.arange(B)[:, None], torch.arange(T)[None], cells, 12] = 1
    obs[:, :, :8, :8] = torch.eye(8, dtype=torch.float64)
    return obs.reshape(B, T, -1)


def test_relative_buckets():
    d = torch.arange(0, 300)
    b = relative_position_bucket(d, 32, 128)
    assert torch.equal(b[:16], torch.arange(16))
    assert b.max() == 31 and b.min() == 0
    assert torch.all(b[1:] >= b[:-1])  # monotone in distance


@pytest.mark.parametrize("encoder", ["linear", "grid", "nav"])
@pytest.mark.parametrize("prev_action", [False, True])
def test_kv_cache_matches_full_forward(encoder, prev_action):
    m = tiny(encoder=encoder, prev_action_input=prev_action).eval()
    B, T = 3, 25
    obs = grid_obs(B, T)
    actions = torch.randint(0, 4, (B, T))
    pa = prev_actions_of(actions) if prev_action else None
    full = m(obs, pa, return_residuals=True)
    cache = m.new_cache(B)
    for t in range(T):
        out = m.step(obs[:, t], cache, None if pa is None else pa[:, t])
        torch.testing.assert_close(out.action_logits, full.action_logits[:, t], atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(out.obs_pred, full.obs_pred[:, t], atol=1e-10, rtol=1e-9)
    assert len(full.residuals) == m.config.depth + 1


def test_control_is_applied_at_layer_and_step_matches():
    m = tiny().eval()
    B, T = 2, 10
    obs = grid_obs(B, T)
    W = torch.randn(32, 32, dtype=torch.float64) * 0.1
    control = lambda e: e + e @ W.T  # noqa: E731
    full = m(obs, control=control, layer=2, return_residuals=True)
    base = m(obs, return_residuals=True)
    # layers below the control point are untouched, layers above change
    for layer in range(3):
        torch.testing.assert_close(full.residuals[layer], base.residuals[layer])
    assert not torch.allclose(full.residuals[3], base.residuals[3])
    # the controlled stream equals upper(control(lower))
    e = m.lower(obs, layer=2)
    torch.testing.assert_close(m.upper(control(e), layer=2).action_logits, full.action_logits)
    cache = m.new_cache(B)
    for t in range(T):
        out = m.step(obs[:, t], cache, control=control, layer=2)
        torch.testing.assert_close(out.action_logits, full.action_logits[:, t])


def test_causal_and_padding_changes_nothing():
    m = tiny().eval()
    obs = grid_obs(2, 12)
    out = m(obs[:, :8]).action_logits
    garbage = obs.clone()
    garbage[:, 8:] = torch.rand_like(garbage[:, 8:])
    torch.testing.assert_close(m(garbage).action_logits[:, :8], out)
    # masked loss ignores padded steps' actions and observations
    actions = torch.randint(0, 4, (2, 11))
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[:, :7] = True
    batch = dict(obs=obs, actions=actions, mask=mask)
    l1 = m.loss(batch, obs_weight=0.1)
    actions2 = actions.clone()
    actions2[:, 7:] = (actions2[:, 7:] + 1) % 4
    obs2 = obs.clone()
    obs2[:, 8:] = 0
    l2 = m.loss(dict(obs=obs2, actions=actions2, mask=mask), obs_weight=0.1)
    torch.testing.assert_close(l1["loss"], l2["loss"])


def _fit(target_shift: int) -> float:
    """Train a tiny model where a_t = cell(o_{t+shift}) mod 4; return the final action NLL."""
    torch.manual_seed(0)
    m = SequenceModel(SequenceModelConfig(obs_dim=49 * 13, d_model=32, depth=2, n_heads=2, head_dim=16,
                                          mlp_hidden=64, encoder="linear"))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    T = 12
    for i in range(300):
        cells = torch.randint(0, 49, (32, T + 2))
        obs = torch.zeros(32, T + 2, 49, 13)
        obs.scatter_(2, cells[..., None, None].expand(-1, -1, 1, 13), 0)
        obs[torch.arange(32)[:, None], torch.arange(T + 2)[None], cells, 12] = 1
        obs = obs.reshape(32, T + 2, -1)
        actions = (cells[:, target_shift: target_shift + T] % 4)
        batch = dict(obs=obs[:, : T + 1], actions=actions, mask=torch.ones(32, T, dtype=torch.bool))
        loss = m.loss(batch)["action_nll"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_alignment_action_at_t_is_predicted_from_o_t():
    """a_t = f(o_t) is learnable to ~0 NLL; a_t = f(o_{t+1}) (a future observation) is not."""
    assert _fit(0) < 0.05
    assert _fit(1) > 0.8 * math.log(4)


def test_freeze_and_save_load(tmp_path):
    m = tiny(encoder="grid", prev_action_input=True)
    m.save_pretrained(tmp_path)
    m2 = SequenceModel.from_pretrained(tmp_path).double()
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    freeze(m2)
    assert not any(p.requires_grad for p in m2.parameters())
    with pytest.raises(FileNotFoundError, match="config.json"):
        SequenceModel.from_pretrained(tmp_path / "nope")


def test_bad_input_raises():
    m = tiny()
    with pytest.raises(ValueError, match="features"):
        m(torch.zeros(1, 3, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="control_layer"):
        SequenceModelConfig(depth=4, control_layer=7)
    m2 = tiny(prev_action_input=True)
    with pytest.raises(ValueError, match="prev_actions"):
        m2(grid_obs(1, 3))


def test_continuous_head_gaussian_logp():
    m = tiny(n_actions=0, action_dim=3, obs_head="gaussian")
    obs = grid_obs(2, 5)
    out = m(obs)
    a = torch.randn(2, 5, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(out.action_logits, out.action_logstd.exp()).log_prob(a).sum(-1)
    torch.testing.assert_close(m.action_logp(out, a), ref)


def test_attention_window_matches_a_plain_loop():
    """Windowed attention = softmax over the last `window` keys only, with the relative-position bias."""
    from internal_rl.models.transformer import Attention

    torch.manual_seed(1)
    W, T, H, Dh = 5, 13, 2, 4
    att = Attention(8, H, Dh, num_buckets=8, max_distance=16, window=W).double()
    torch.nn.init.normal_(att.rel_bias.weight)
    x = torch.randn(2, T, 8, dtype=torch.float64)
    q, k, v = att.qkv(x).view(2, T, 3, H, Dh).unbind(2)
    buckets = relative_position_bucket(torch.arange(T), 8, 16)
    ref = torch.zeros(2, T, H, Dh, dtype=torch.float64)
    for t in range(T):
        for h in range(H):
            js = list(range(max(0, t - W + 1), t + 1))
            s = torch.stack([(q[:, t, h] * k[:, j, h]).sum(-1) / Dh**0.5 + att.rel_bias.weight[buckets[t - j], h]
                             for j in js], -1)
            p = torch.softmax(s, -1)
            ref[:, t, h] = sum(p[:, i, None] * v[:, j, h] for i, j in enumerate(js))
    expected = att.out(ref.reshape(2, T, H * Dh))
    torch.testing.assert_close(att(x), expected)


def test_attention_window_cache_matches_full_forward_and_limits_the_view():
    m = tiny(attn_window=4).eval()
    B, T = 2, 25
    obs = grid_obs(B, T)
    full = m(obs)
    cache = m.new_cache(B)
    for t in range(T):
        out = m.step(obs[:, t], cache)
        torch.testing.assert_close(out.action_logits, full.action_logits[:, t], atol=1e-10, rtol=1e-9)
    # chunks of several steps through the cache (the multi-query path) agree too
    cache = m.new_cache(B)
    e = torch.cat([m.run_blocks(m.embed(obs[:, a:b]), 0, 4, cache) for a, b in [(0, 9), (9, 10), (10, T)]], 1)
    torch.testing.assert_close(m.heads(e).action_logits, full.action_logits, atol=1e-10, rtol=1e-9)
    # setting the window on a built model is the same as building it with one
    m2 = tiny().eval()
    m2.set_attn_window(4)
    assert m2.config.attn_window == 4
    torch.testing.assert_close(m2(obs).action_logits, full.action_logits)
    # a window as long as the sequence is no window
    torch.testing.assert_close(tiny(attn_window=T).eval()(obs).action_logits, tiny().eval()(obs).action_logits)
    # each of the 4 layers looks 3 steps back, so step t sees o_{t-12}..o_t and nothing older
    t = 20
    changed = obs.clone()
    changed[:, t - 13] = grid_obs(B, 1, seed=5)[:, 0]
    torch.testing.assert_close(m(changed).action_logits[:, t], full.action_logits[:, t])
    changed = obs.clone()
    changed[:, t - 12] = grid_obs(B, 1, seed=5)[:, 0]
    assert not torch.allclose(m(changed).action_logits[:, t], full.action_logits[:, t])
    with pytest.raises(ValueError, match="attn_window"):
        tiny(attn_window=-1)


def test_attention_window_on_some_layers_only(tmp_path):
    """attn_window_layers windows only the listed blocks: cached steps match the full forward, the other blocks
    still see the whole past, set_attn_window(w, layers) builds the same model, a save/load keeps it, and a
    layer outside the model is refused."""
    m = tiny(attn_window=4, attn_window_layers=(2, 3)).eval()
    assert [b.attn.window for b in m.blocks] == [0, 0, 4, 4]
    B, T = 2, 25
    obs = grid_obs(B, T)
    full = m(obs)
    cache = m.new_cache(B)
    for t in range(T):
        torch.testing.assert_close(m.step(obs[:, t], cache).action_logits, full.action_logits[:, t],
                                   atol=1e-10, rtol=1e-9)
    # the first two blocks attend to everything, so the oldest observation still matters at the last step
    changed = obs.clone()
    changed[:, 0] = grid_obs(B, 1, seed=5)[:, 0]
    assert not torch.allclose(m(changed).action_logits[:, -1], full.action_logits[:, -1])
    everywhere = tiny(attn_window=4).eval()
    assert not torch.allclose(everywhere(obs).action_logits, full.action_logits)
    everywhere.set_attn_window(4, (2, 3))
    torch.testing.assert_close(everywhere(obs).action_logits, full.action_logits)
    everywhere.set_attn_window(4)
    assert everywhere.config.attn_window_layers is None and all(b.attn.window == 4 for b in everywhere.blocks)
    m.save_pretrained(tmp_path / "m")
    again = SequenceModel.from_pretrained(tmp_path / "m")
    assert again.config.attn_window_layers == (2, 3) and [b.attn.window for b in again.blocks] == [0, 0, 4, 4]
    with pytest.raises(ValueError, match="attn_window_layers"):
        tiny(attn_window=4, attn_window_layers=(4,))
    with pytest.raises(ValueError, match="attn_window_layers"):
        everywhere.set_attn_window(4, (-1,))
    assert everywhere.config.attn_window_layers is None  # a refused change leaves the model as it was


def test_attention_window_example_writes_a_windowed_copy(tmp_path):
    """examples/attention_window.py runs and its copy loads with the window set and the same weights."""
    import subprocess
    import sys
    from pathlib import Path

    m = tiny(encoder="nav", max_len=128).float()
    m.save_pretrained(tmp_path / "base")
    script = Path(__file__).parents[1] / "examples" / "attention_window.py"
    run = subprocess.run([sys.executable, str(script), "--model", str(tmp_path / "base"), "--task", "0-1-4-5",
                          "--windows", "0", "4", "--episodes", "8", "--copy-window", "4", "--copy-to",
                          str(tmp_path / "w4")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.split("|")[0].strip() in ("0", "4")]
    assert len(rows) == 2 and all(len(r.split("|")[1].split()) == 4 for r in rows)
    copy = SequenceModel.from_pretrained(tmp_path / "w4")
    assert copy.config.attn_window == 4 and all(b.attn.window == 4 for b in copy.blocks)
    for v, v2 in zip(m.state_dict().values(), copy.state_dict().values()):
        assert torch.equal(v, v2)
    run = subprocess.run([sys.executable, str(script), "--model", str(tmp_path / "base"), "--task", "0-1-4-5",
                          "--windows", "4", "--episodes", "8", "--layers", "2", "3", "--copy-window", "4",
                          "--copy-to", str(tmp_path / "w4_upper")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    upper = SequenceModel.from_pretrained(tmp_path / "w4_upper")
    assert [b.attn.window for b in upper.blocks] == [0, 0, 4, 4]


def test_kv_cache_grows_by_doubling_keeps_empty_slots_zero_and_compacts():
    """The cache starts small and doubles up to max_len (stepping stays exact across each growth), every
    slot past a layer's length holds zeros (one-position steps read the whole buffer, masked), dropping
    rows keeps the survivors' next steps exact, and adding past max_len raises."""
    m = tiny(max_len=40).eval()
    B, T = 3, 40
    obs = grid_obs(B, T, seed=3)
    full = m(obs).action_logits
    cache = m.new_cache(B)
    assert cache.k[0].shape[2] == KV_INITIAL_CAPACITY
    capacities = []
    for t in range(T):
        if t == 20:  # drop row 1, as the option-level environment does with finished episodes
            cache = cache.index_select(torch.tensor([0, 2]))
        rows = [0, 1, 2] if t < 20 else [0, 2]
        out = m.step(obs[rows, t], cache)
        torch.testing.assert_close(out.action_logits, full[rows, t], atol=1e-10, rtol=1e-9)
        capacities.append(cache.k[0].shape[2])
        for buf in cache.k + cache.v:
            assert not buf[:, :, t + 1:].any()  # empty slots are zeros
    assert sorted(set(capacities)) == [16, 32, 40]
    with pytest.raises(ValueError, match="KV cache holds 40 steps"):
        m.step(obs[[0, 2], 0], cache)
