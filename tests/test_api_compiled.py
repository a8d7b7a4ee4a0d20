"""The compiled rollout step (api_compiled.py): the static-shape step equals the eager one, step by step."""

import shutil

import pytest
import torch
from torch._dynamo.utils import counters

from internal_rl import MetaController, Transformer
from internal_rl.models.transformer import Attention, KVCache

S, K, DIM = 20, 4, 32


def make_pair(seed: int = 0, **kw) -> tuple[Transformer, MetaController]:
    torch.manual_seed(seed)
    args = dict(action_embed_readout=dict(num_discrete=K), state_embed_readout=dict(num_continuous=S),
                lower_body=dict(depth=1), upper_body=dict(depth=1), heads=2)
    args.update(kw)
    model = Transformer(DIM, **args)
    mc = MetaController(DIM, dim_meta_controller=16, dim_latent=4)
    with torch.no_grad():  # policy input-dependent, switch probabilities spread (some rows keep, some switch)
        mc.policy.head.weight.normal_(0.0, 0.3)
        mc.core.switch_out.weight.mul_(20.0)
    return model, mc


def roll(model: Transformer, mc: MetaController | None, states: torch.Tensor, actions: torch.Tensor, seed: int):
    """Feed fixed states and previous actions; record logits and what the metacontroller did."""
    torch.manual_seed(seed)
    cache, rec = None, []
    for t in range(states.shape[1]):
        past = None if t == 0 else actions[:, t - 1]
        logits, cache = model(states[:, t], past, meta_controller=mc, return_cache=True, cache=cache)
        m = cache.prev_hiddens.meta_controller
        rec.append((logits,) if m is None else
                   (logits, m.switch_beta, m.switched, m.actions, m.action_dist.mean, m.action_dist.logstd,
                    m.input_residual_stream))
    return rec, cache


def assert_same(eager, static):
    for t, (a, b) in enumerate(zip(eager, static)):
        for x, y in zip(a, b):
            if x.dtype == torch.bool:
                assert torch.equal(x, y), t
            else:
                torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5, msg=f"step {t}")


@pytest.mark.parametrize("use_mc", [True, False])
def test_static_step_equals_eager_step(use_mc):
    # max_len=4 makes the eager cache grow (4 -> 8 -> 16) during the 13-step rollout; the compiled one
    # starts at 2 slots (2 -> 4 -> 8 -> 16).
    model, mc = make_pair(max_len=4)
    mc = mc if use_mc else None
    B, T = 3, 13
    states, actions = torch.randn(B, T, S), torch.randint(0, K, (B, T))
    eager, _ = roll(model, mc, states, actions, seed=5)
    model.compile_rollout(backend="eager", capacity=2)  # dynamo traces the step as one graph, no code generation
    torch._dynamo.reset()
    counters.clear()
    static, cache = roll(model, mc, states, actions, seed=5)
    assert counters["stats"]["unique_graphs"] == 4  # one graph per cache capacity (2, 4, 8, 16), none per step
    assert cache.static is not None and cache.kv is None and cache.static.k[0].shape[2] == 16
    assert int(cache.static.pos) == T
    assert_same(eager, static)
    if use_mc:
        switched = torch.stack([r[2] for r in eager[1:]])
        assert switched.any() and not switched.all()  # both branches of the switch were exercised
    model.compile_rollout(False)
    assert roll(model, mc, states, actions, seed=5)[1].static is None
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        model.compile_rollout(capacity=0)


def test_static_step_continuous_actions_and_window():
    model, mc = make_pair(action_embed_readout=dict(num_continuous=3), attn_window=3)
    B, T = 2, 7
    states, actions = torch.randn(B, T, S), torch.randn(B, T, 3)
    eager, _ = roll(model, mc, states, actions, seed=1)
    static, _ = roll(model.compile_rollout(backend="eager"), mc, states, actions, seed=1)
    assert eager[0][0].shape == (B, 6)  # mean and log-std of the continuous action
    assert_same(eager, static)


@pytest.mark.parametrize("window", [0, 2])
def test_decode_static_matches_decode_one(window):
    torch.manual_seed(0)
    attn = Attention(16, 2, 8, num_buckets=8, max_distance=16, window=window)
    cache = KVCache.empty(1, 3, 2, 8, 6, "cpu", torch.float32)
    k_buf, v_buf = torch.zeros(3, 2, 6, 8), torch.zeros(3, 2, 6, 8)
    for t in range(6):
        x = torch.randn(3, 16)
        ref = attn(x[:, None], cache, 0)[:, 0]
        out = attn.decode_static(x, k_buf, v_buf, torch.tensor(t))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(k_buf, cache.k[0])


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="needs a C++ compiler")
def test_compiled_step_with_inductor():
    """The real compile (C++ code generation): same numbers as the eager step."""
    model, mc = make_pair(max_len=8)
    B, T = 2, 5
    states, actions = torch.randn(B, T, S), torch.randint(0, K, (B, T))
    eager, _ = roll(model, mc, states, actions, seed=3)
    static, _ = roll(model.compile_rollout(), mc, states, actions, seed=3)
    assert_same(eager, static)


def test_one_compiled_function_serves_models_that_differ_in_values_only():
    """The step is compiled once per process with a reduced set of guards (api_compiled._KEPT_GUARDS): models
    and metacontrollers with the same tensor shapes but other settings must still each get their own graph."""
    B, T = 2, 6
    states, actions = torch.randn(B, T, S), torch.randint(0, K, (B, T))
    model, mc = make_pair(seed=0)
    windowed, _ = make_pair(seed=0, attn_window=2)
    torch.manual_seed(4)
    always = MetaController(DIM, dim_meta_controller=16, dim_latent=4, always_switch=True)
    lower_threshold = MetaController(DIM, dim_meta_controller=16, dim_latent=4, beta_threshold=0.3)
    cases = [(model, mc), (model, None), (windowed, mc), (model, always), (model, lower_threshold), (model, mc)]
    expected = []
    for m, c in cases:
        expected.append(roll(m.compile_rollout(False), c, states, actions, seed=2)[0])
    torch._dynamo.reset()
    for (m, c), ref in zip(cases, expected):
        assert_same(ref, roll(m.compile_rollout(backend="eager"), c, states, actions, seed=2)[0])


def test_cache_made_without_the_metacontroller_takes_it_at_the_first_step():
    """``model.new_cache(B)`` then rollout calls with a metacontroller: both steps adopt it at step 1."""
    model, mc = make_pair()
    B, T = 2, 4
    states, actions = torch.randn(B, T, S), torch.randint(0, K, (B, T))
    results = []
    for compiled in (False, True):
        model.compile_rollout(compiled, backend="eager")
        torch.manual_seed(0)
        cache = model.new_cache(B)
        for t in range(T):
            logits, cache = model(states[:, t], None if t == 0 else actions[:, t - 1], meta_controller=mc,
                                  return_cache=True, cache=cache)
        assert cache.meta_controller is mc
        results.append(logits)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)
