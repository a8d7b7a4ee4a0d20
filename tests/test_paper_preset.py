"""The `paper` preset: the paper's hyperparameters, and its GPU path run end to end at paper sizes on CPU.

No session has had a GPU to run `reproduce --preset paper`; these tests keep that path from rotting: every
phase config of the preset is built, its figures are checked against the paper (App. D, paper-notes), and
pretrain → probe → controllers → discover → RL run for a couple of steps with the paper's model and
metacontroller sizes (only step counts, batch sizes and episode counts are shrunk).
"""

import json

import pytest

from internal_rl.experiments import presets
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.phases.controllers import run_controllers
from internal_rl.phases.data import run_data
from internal_rl.phases.discover import run_discover
from internal_rl.phases.pretrain import run_pretrain
from internal_rl.phases.probe import run_probe
from internal_rl.phases.rl import run_rl


def test_paper_preset_carries_the_papers_hyperparameters():
    m = presets.model_config("paper")
    assert (m.d_model, m.depth, m.n_heads, m.head_dim, m.mlp_hidden) == (256, 6, 4, 64, 512)
    assert m.num_buckets == 32 and m.init_scale == pytest.approx(0.1)
    p = presets.pretrain_config("paper", "d", "o")
    assert (p.steps, p.batch_size) == (256_000, 1024)
    assert p.lr == pytest.approx(3e-4) and p.weight_decay == pytest.approx(0.03)
    assert (p.beta1, p.beta2) == (0.9, 0.999) and p.lr_schedule == "constant"
    assert p.obs_weight in (0.0, 0.01)  # the paper searched λ over {0, 0.01}
    d = presets.discover_config("paper", "m", "d", "o")
    assert (d.steps, d.batch_size, d.n_z, d.rank) == (64_000, 512, 8, 16)
    assert presets.reproduce_controller_layers("paper", {"depth": 6, "control_layer": 3}) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="unknown preset 'papr'"):
        presets.model_config("papr")


def test_paper_preset_runs_every_phase_at_paper_sizes(tmp_path):
    data = tmp_path / "data"
    run_data(presets.data_config("smoke", str(data)))  # the data phase differs only in episode counts

    pcfg = presets.pretrain_config("paper", str(data), str(tmp_path / "pretrain"))
    pcfg.steps, pcfg.batch_size, pcfg.eval_every, pcfg.ckpt_every, pcfg.log_every = 2, 4, 2, 2, 1
    pcfg.eval_episodes, pcfg.rollout_episodes, pcfg.device, pcfg.progress = 8, 4, "cpu", False
    res = run_pretrain(pcfg)
    assert res["steps"] == 2 and res["params"] > 3_000_000  # six 256-wide blocks (3.1 M), not a shrunk model
    model = SequenceModel.from_pretrained(tmp_path / "pretrain")
    assert model.config.depth == 6 and model.config.d_model == 256

    qcfg = presets.probe_config("paper", str(tmp_path / "pretrain"), str(data), str(tmp_path / "probe"))
    qcfg.steps, qcfg.max_episodes, qcfg.post_task_episodes = 2, 20, 4
    run_probe(qcfg)
    assert len(json.loads((tmp_path / "probe" / "probes.json").read_text())["test_accuracy"]) == 7

    ccfg = presets.controllers_config("paper", str(tmp_path / "pretrain"), str(data), str(tmp_path / "controllers"))
    ccfg.steps, ccfg.batch_size, ccfg.eval_episodes, ccfg.layers, ccfg.progress = 2, 4, 4, [3], False
    ccfg.also_temperatures = [0.0]
    run_controllers(ccfg)
    ctrl = json.loads((tmp_path / "controllers" / "controllers.json").read_text())
    assert len(ctrl["post_task_success"]) == 1 and len(ctrl["post_task_success_at_temperature"]["0.0"]) == 1

    dcfg = presets.discover_config("paper", str(tmp_path / "pretrain"), str(data), str(tmp_path / "discover"),
                                   steps=2, batch_size=4, eval_episodes=4, log_every=1, ckpt_every=2,
                                   device="cpu", progress=False)
    seg = run_discover(dcfg)
    assert 0.0 <= seg["f1"] <= 1.0

    rcfg = presets.rl_config("paper", str(tmp_path / "pretrain"), str(tmp_path / "discover"), str(tmp_path / "rl"))
    rcfg.episodes, rcfg.batch_size, rcfg.eval_episodes, rcfg.device, rcfg.progress = 8, 4, 4, "cpu", False
    out = run_rl(rcfg)
    assert out["episodes"] == 8 and out["env_steps"] >= 8 and 0.0 <= out["final_success"] <= 1.0
    saved = json.loads((tmp_path / "rl" / "results.json").read_text())
    assert saved["method"] == "internal" and saved["episodes"] == 8
    assert (tmp_path / "rl" / "policy.safetensors").stat().st_size > 0
