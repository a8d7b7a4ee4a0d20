"""The `long` preset is the Session-7 chain of docs/RESULTS.md, field for field.

Those runs were made with explicit flags before the preset existed; this keeps the preset equal to what was
measured (pretraining of /tmp/s6/sweep_wd1_s1, discovery of /tmp/s7/d_a003, RL of /tmp/s7/rl_a003_*).
"""

from dataclasses import asdict

import pytest

from internal_rl.experiments import presets


def test_long_preset_is_the_quick_base_at_weight_decay_1_controlled_at_layer_1():
    quick, long = presets.model_config("quick"), presets.model_config("long")
    assert quick.control_layer == 2 and long.control_layer == 1
    assert {**asdict(quick), "control_layer": 1} == asdict(long)
    pq, pl = presets.pretrain_config("quick", "d", "o"), presets.pretrain_config("long", "d", "o")
    assert pl.weight_decay == pytest.approx(1.0) and pq.weight_decay == pytest.approx(1.5)
    # quick trains under bf16 autocast where the CPU has bf16 kernels; long keeps its float32 recipe
    assert (pq.amp, pl.amp) == ("auto", "none")
    assert ({**asdict(pq), "weight_decay": 1.0, "amp": "none", "model": asdict(pl.model)}
            == {**asdict(pl), "model": asdict(pl.model)})
    d = presets.data_config("long", "o")
    assert (d.num_episodes, d.num_episodes_star) == (200_000, 100_000)
    assert presets.reproduce_controller_layers("long", asdict(long)) == [1]


def test_long_preset_discovers_with_warmups_at_alpha_003_and_runs_rl_at_batch_1024():
    dis = presets.discover_config("long", "m", "d", "o")
    assert (dis.steps, dis.batch_size, dis.switch_warmup, dis.kl_warmup) == (6000, 64, 2000, 2000)
    assert dis.alpha == pytest.approx(0.03) and dis.layer == -1  # -1: the model's control layer, 1
    assert presets.discover_config("long", "m", "d", "o", always_switch=True).always_switch
    rl = presets.rl_config("long", "m", "dis", "o", "raw")
    assert (rl.method, rl.episodes, rl.batch_size, rl.eval_episodes) == ("raw", 524_288, 1024, 1024)
    assert (rl.lr, rl.epochs, rl.minibatches) == (pytest.approx(3e-4), 2, 4)
