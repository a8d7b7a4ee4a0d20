"""End-to-end smoke tests of every phase and the reproduce pipeline (tiny `smoke` preset)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from internal_rl.envs.pinpad import POST_TRAINING_TASK
from internal_rl.experiments import presets
from internal_rl.experiments.reproduce import ReproduceConfig, run_reproduce
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.phases.data import run_data
from internal_rl.phases.pretrain import run_pretrain


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    run_data(presets.data_config("smoke", str(root / "data")))
    return root


def test_pretrain_resume_continues_the_same_run(data_dir):
    out = data_dir / "pretrain_resume"
    cfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(out))
    cfg.steps, cfg.ckpt_every, cfg.log_every, cfg.progress = 20, 10, 10, False
    run_pretrain(cfg)
    w20 = SequenceModel.from_pretrained(out).state_dict()
    with open(out / "metrics.csv", "a") as f:  # a row logged by a run that died after its last checkpoint
        f.write("25,1.0,9.9,9.9,0.001,1.0\n")
    cfg.steps, cfg.resume = 30, True
    res = run_pretrain(cfg)
    assert res["steps"] == 30
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("action_nll")]
    assert steps == [10, 20, 30]
    w30 = SequenceModel.from_pretrained(out).state_dict()
    assert any(not torch.equal(w20[k], w30[k]) for k in w20)
    # an uninterrupted 30-step run lands on the same weights (same data order and RNG)
    cfg2 = presets.pretrain_config("smoke", str(data_dir / "data"), str(data_dir / "pretrain_straight"))
    cfg2.steps, cfg2.ckpt_every, cfg2.log_every, cfg2.progress = 30, 10, 10, False
    run_pretrain(cfg2)
    straight = SequenceModel.from_pretrained(data_dir / "pretrain_straight").state_dict()
    for k in w30:
        torch.testing.assert_close(w30[k], straight[k], atol=1e-6, rtol=1e-5)


def test_pretrain_under_bf16_autocast_learns_and_keeps_float32_weights(data_dir, tmp_path):
    """amp='bf16' runs the training steps' matrix products in bfloat16: the loss still falls, the weights and the
    evaluation stay float32, the run records the precision, and an unknown mode fails before any work."""
    from internal_rl.phases.common import resolve_amp

    def config(out: str, amp: str):
        cfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / out))
        cfg.amp, cfg.progress, cfg.rollout_episodes = amp, False, 0
        cfg.steps, cfg.lr, cfg.eval_every, cfg.ckpt_every = 60, 3e-3, 60, 60  # long enough to see learning
        return cfg

    cfg = config("bf16", "bf16")
    res = run_pretrain(cfg)
    assert res["amp"] == "bfloat16"
    nll = [float(r["action_nll"]) for r in csv.DictReader(open(tmp_path / "bf16" / "metrics.csv")) if r.get("action_nll")]
    assert nll[-1] < nll[0] - 0.1
    model = SequenceModel.from_pretrained(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the same steps in float32 land on different, but nearby, weights: autocast was really on
    assert run_pretrain(config("fp32", "none"))["amp"] == "none"
    w16, w32 = model.state_dict(), SequenceModel.from_pretrained(tmp_path / "fp32").state_dict()
    assert any(not torch.equal(w16[k], w32[k]) for k in w16)
    assert abs(res["heldout_action_nll"] - json.loads((tmp_path / "fp32" / "results.json").read_text())[
        "heldout_action_nll"]) < 0.02
    assert resolve_amp("none", torch.device("cpu")) is None and resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_amp("auto", torch.device("cpu")) in (None, torch.bfloat16)
    cfg.amp, cfg.out = "fp8", str(tmp_path / "never")
    with pytest.raises(ValueError, match="amp mode 'fp8'"):
        run_pretrain(cfg)
    assert not (tmp_path / "never").exists()


def test_reproduce_smoke_writes_every_artifact(tmp_path):
    res = run_reproduce(ReproduceConfig(preset="smoke", seeds=2, out=str(tmp_path)))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["preset"] == "smoke" and saved["wall_seconds"] > 0
    for m in ("internal", "raw", "beta1", "cotrained"):
        r = saved["methods"][m]
        assert r["seeds"] == 2 and len(r["final_success_iqr"]) == 2
        assert 0.0 <= r["final_success_median"] <= 1.0 and r["episodes"] > 0 and r["env_steps"] > 0
        # z-space methods are scored with the policy's mean z too; raw has no z
        assert (len(r.get("final_success_mean_z_per_seed", [])) == 2) == (m != "raw")
    for seed, row in zip((0, 1), saved["per_seed"]):  # seed by seed: the discovery run beside every method's RL
        seg = json.loads((tmp_path / f"seed{seed}" / "discover" / "segmentation.json").read_text())
        assert row["switch_f1"] == seg["f1"] and row["switches_at_mid_events"] == seg["switches_at_mid_events"]
        assert row["final_success"]["raw"] == saved["methods"]["raw"]["final_success_per_seed"][seed]
    assert "| seed | switch F1 |" in (tmp_path / "results.md").read_text()
    for seed in (0, 1):
        d = tmp_path / f"seed{seed}"
        assert "post_task_success" in json.loads((d / "controllers" / "controllers.json").read_text())
        assert "f1" in json.loads((d / "discover" / "segmentation.json").read_text())
        probes = json.loads((d / "probe" / "probes.json").read_text())
        assert len(probes["test_accuracy"]) == 3
        assert probes["post_task_pair_choice_nll_max"] == max(
            r["nll"] for r in probes["post_task_nll_by_colours_visited"] if r["colours_visited"] in (2, 4, 6, 8, 10))
    assert (tmp_path / "success_curves.png").stat().st_size > 0
    assert "| internal |" in (tmp_path / "results.md").read_text()
    assert res["methods"]["internal"]["seeds"] == 2


def test_reproduce_continues_an_interrupted_phase_from_its_checkpoint(tmp_path, monkeypatch):
    """A phase whose folder holds a checkpoint but no result file (the run died before finishing) is resumed
    with resume=True, not retrained from step 0; finished phases are read back and not run at all."""
    import internal_rl.phases.discover as discover_mod
    import internal_rl.phases.pretrain as pretrain_mod
    import internal_rl.phases.rl as rl_mod

    cfg = ReproduceConfig(preset="smoke", seeds=1, out=str(tmp_path), methods=["internal"])
    first = run_reproduce(cfg)
    d = tmp_path / "seed0"
    rows = (d / "pretrain" / "metrics.csv").read_text()
    (d / "pretrain" / "results.json").unlink()  # as if killed after the last checkpoint, before results.json
    (d / "rl_internal" / "results.json").unlink()
    calls = {}
    for mod, name in ((pretrain_mod, "run_pretrain"), (rl_mod, "run_rl"), (discover_mod, "run_discover")):
        def spy(c, _real=getattr(mod, name), _name=name):
            calls[_name] = c.resume
            return _real(c)
        monkeypatch.setattr(mod, name, spy)
    again = run_reproduce(cfg)
    assert calls == {"run_pretrain": True, "run_rl": True}  # discover finished: read back, not called
    assert again["phases_read_back"] == 4  # data, probe, controllers, discover
    assert (d / "pretrain" / "metrics.csv").read_text() == rows  # no step trained twice
    steps = json.loads((d / "pretrain" / "config.json").read_text())["pretrain"]["steps"]
    assert json.loads((d / "pretrain" / "results.json").read_text())["steps"] == steps
    assert again["methods"]["internal"]["episodes"] == first["methods"]["internal"]["episodes"]
    assert again["methods"]["internal"]["final_success_median"] == first["methods"]["internal"]["final_success_median"]


def test_kl_weight_schedule():
    """α is 0 during the switch warm-up, ramps linearly over kl_warmup steps, constant without a warm-up."""
    from internal_rl.phases.discover import DiscoverConfig, kl_weight

    cfg = DiscoverConfig(alpha=0.2, kl_warmup=100, switch_warmup=50)
    assert [kl_weight(cfg, s) for s in (0, 50, 100, 150, 1000)] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.2])
    assert kl_weight(DiscoverConfig(alpha=0.2), 0) == 0.2


def test_discover_with_warmups_runs(data_dir, tmp_path):
    """The warm-up options go through the real phase: β ≡ 1 while warming up, then the switching unit."""
    from internal_rl.phases.discover import run_discover

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    cfg = presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), str(tmp_path / "discover"),
                                  kl_warmup=4, switch_warmup=5, log_every=1, progress=False)
    seg = run_discover(cfg)
    rows = list(csv.DictReader(open(tmp_path / "discover" / "metrics.csv")))
    assert [float(r["alpha"]) for r in rows][:5] == [0.0] * 5
    assert [float(r["switches_per_episode"]) > 1.0 for r in rows][:4] == [True] * 4  # β ≡ 1 switches every step
    assert 0.0 <= seg["f1"] <= 1.0


def test_switch_penalty_adds_weighted_mean_beta(data_dir, tmp_path):
    """switch_weight · mean β over valid steps t ≥ 2 is added to the loss, and nothing else changes."""
    import numpy as np

    from internal_rl.control.discovery import discovery_step
    from internal_rl.control.metacontroller import MetaController, MetaControllerConfig
    from internal_rl.data.trajectories import Trajectories

    torch.manual_seed(0)
    model = SequenceModel(presets.model_config("smoke"))
    mc = MetaController(MetaControllerConfig(d_model=model.config.d_model))
    batch = Trajectories.load(data_dir / "data" / "D_star").batch(np.arange(6))
    torch.manual_seed(1)
    base, out = discovery_step(model, mc, batch, 1, 0.1)
    torch.manual_seed(1)
    pen, _ = discovery_step(model, mc, batch, 1, 0.1, switch_weight=0.5)
    m = batch["mask"][:, 1:]
    rate = (out.beta[:, 1:] * m).sum() / m.sum()
    torch.testing.assert_close(pen["loss"], base["loss"] + 0.5 * rate)
    torch.testing.assert_close(pen["nll"], base["nll"])


def test_device_resolution_and_clear_errors(data_dir, tmp_path):
    from internal_rl.phases.common import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("banana", "mps"):
        with pytest.raises(ValueError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        # a phase asked for a GPU it does not have fails before doing any work
        cfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "p"))
        cfg.device, cfg.progress = "cuda", False
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_pretrain(cfg)
        assert not (tmp_path / "p").exists()


def test_oracle_switch_schedule_and_phase(data_dir, tmp_path):
    """--oracle-switch imposes β at the label boundaries, so the phase's own segmentation scores F1 = 1."""
    from internal_rl.control.discovery import oracle_schedule
    from internal_rl.phases.discover import run_discover

    batch = {"subgoals": torch.tensor([[0, 0, 2, 2, 2, 3, -1], [1, 3, 3, 3, 3, 3, 3]]),
             "mask": torch.tensor([[True] * 6 + [False], [True] * 7])}
    expect = torch.tensor([[1, 0, 1, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(oracle_schedule(batch), expect)
    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    cfg = presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), str(tmp_path / "oracle"),
                                  oracle_switch=True, progress=False)
    seg = run_discover(cfg)
    assert seg["oracle_switch"] is True
    assert seg["f1"] == 1.0 and seg["switches_per_episode"] == seg["subgoals_per_episode"]
    # pinpad data: where switches land, read from the observations (each pair's first colour is a landmark)
    assert seg["switches_at_boundaries"] == 1.0 and seg["switches_at_mid_events"] == 0.0
    # three per episode, less those next to the pair's end (adjacent colours), which ±1 cannot tell apart
    assert 2.0 < seg["mid_events_per_episode"] <= 3.0 and seg["f1_mid_events"] == 0.0


def test_demo_command_runs_at_smoke_preset(tmp_path, capsys):
    """The README's first command, at the smoke preset: data → pretrain → probe, results in --out."""
    from internal_rl.cli import main

    main(["demo", "--preset", "smoke", "--out", str(tmp_path / "demo"), "--threads", "1"])
    out = capsys.readouterr().out
    assert "held-out action NLL" in out and "worst pair-choice NLL" in out and "results written under" in out
    for f in ("data/data_stats.json", "pretrain/model.safetensors", "pretrain/results.json", "probe/probes.json"):
        assert (tmp_path / "demo" / f).exists(), f


def test_sweep_pretrain_runs_points_reuses_them_and_rejects_bad_fields(data_dir, tmp_path, monkeypatch):
    from internal_rl.phases import sweep_pretrain as sp

    pre = presets.pretrain_config("smoke", str(data_dir / "data"), "")
    pre.steps, pre.progress = 10, False
    cfg = sp.SweepPretrainConfig(pretrain=pre, probe=presets.probe_config("smoke", "", "", ""),
                                 controllers=presets.controllers_config("smoke", "", "", ""),
                                 param="weight_decay", values=[0.0, 2.0], seeds=[0], out=str(tmp_path), threads=1)
    cfg.controllers.progress, cfg.controllers.layers = False, [1]
    res = sp.run_sweep_pretrain(cfg)
    assert [p["value"] for p in res["points"]] == [0.0, 2.0]
    for p in res["points"]:  # the swept value is what each pretraining run used
        saved = json.loads((tmp_path / f"weight_decay{p['value']:g}_seed0" / "pretrain" / "config.json").read_text())
        assert saved["pretrain"]["weight_decay"] == p["value"]
        assert p["layers"] == [1] and 0.0 <= p["best_post_task_success"] <= 1.0
    rows = json.loads((tmp_path / "sweep_pretrain.json").read_text())["summary"]
    assert [r["value"] for r in rows] == [0.0, 2.0] and all(r["seeds"] == 1 for r in rows)
    assert (tmp_path / "sweep_pretrain.png").stat().st_size > 0

    def no_training(*a, **k):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(sp, "run_pretrain", no_training)
    monkeypatch.setattr(sp, "run_controllers", no_training)
    assert sp.run_sweep_pretrain(cfg)["summary"] == res["summary"]

    assert sp.with_value(pre, "model.depth", 3).model.depth == 3
    for param, value, msg in [("nonexistent", 1.0, "no field"), ("model.encoder", 1.0, "not numeric"),
                              ("model.depth", 2.5, "integer")]:
        with pytest.raises(ValueError, match=msg):
            sp.with_value(pre, param, value)


def test_rl_resume_continues_the_same_run_and_can_only_evaluate(data_dir, tmp_path):
    """Stopping RL and resuming gives the same policy as one uninterrupted run; resuming at the budget
    already reached trains nothing and only evaluates (how a stopped run is scored)."""
    from safetensors.torch import load_file

    from internal_rl.phases.discover import run_discover
    from internal_rl.phases.rl import _Agent, run_rl

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    run_discover(presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"),
                                         str(tmp_path / "discover"), progress=False))

    def rl(out: str, episodes: int, resume: bool = False, critic: bool = False, critic_warmup: int = 0,
           task: str | None = None) -> dict:
        cfg = presets.rl_config("smoke", str(tmp_path / "pretrain"), str(tmp_path / "discover"), str(tmp_path / out))
        cfg.episodes, cfg.resume, cfg.progress, cfg.critic = episodes, resume, False, critic
        cfg.critic_warmup, cfg.task = critic_warmup, task or cfg.task
        return run_rl(cfg)

    whole = rl("whole", 64)
    rl("split", 32)
    split = rl("split", 64, resume=True)
    a, b = load_file(tmp_path / "whole" / "policy.safetensors"), load_file(tmp_path / "split" / "policy.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert split["curve"] == whole["curve"] and split["final_success"] == whole["final_success"]
    again = rl("split", 64, resume=True)  # nothing left to train: evaluation only
    c = load_file(tmp_path / "split" / "policy.safetensors")
    assert all(torch.equal(b[k], c[k]) for k in b) and again["episodes"] == 64
    assert again["curve"] == whole["curve"] and len(again["curve"]) == 64 // 16
    # the GRPO variant: batches of layout groups, advantages within groups; groups must tile the batch
    cfg = presets.rl_config("smoke", str(tmp_path / "pretrain"), str(tmp_path / "discover"), str(tmp_path / "grpo"))
    cfg.group_size, cfg.progress = 4, False
    grpo = run_rl(cfg)
    assert grpo["group_size"] == 4 and grpo["episodes"] == 32 and whole["group_size"] == 1
    assert (tmp_path / "grpo" / "policy.safetensors").exists()
    tied = [float(r["tied_groups"]) for r in csv.DictReader(open(tmp_path / "grpo" / "metrics.csv"))]
    assert len(tied) == 32 // 16 and all(0.0 <= t <= 1.0 for t in tied)
    cfg.group_size = 5
    with pytest.raises(ValueError, match="group_size must divide"):
        run_rl(cfg)
    # the entropy bonus: recorded with the run; a negative one is refused before anything runs
    cfg.group_size, cfg.entropy_coef, cfg.out = 1, 0.05, str(tmp_path / "entropy")
    run_rl(cfg)
    assert json.loads((tmp_path / "entropy" / "config.json").read_text())["rl"]["entropy_coef"] == 0.05
    cfg.entropy_coef, cfg.out = -0.1, str(tmp_path / "entropy_bad")
    with pytest.raises(ValueError, match="entropy_coef must be >= 0"):
        run_rl(cfg)
    assert not (tmp_path / "entropy_bad").exists()
    # a floor on the policy's σ: the run keeps it, logs σ at or above it, and scores the mean z too
    cfg.entropy_coef, cfg.min_std, cfg.out = 0.0, 0.5, str(tmp_path / "floor")
    floor = run_rl(cfg)
    assert 0.0 <= floor["final_success_mean_z"] <= 1.0 and 0.0 <= whole["final_success_mean_z"] <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "floor" / "metrics.csv")))
    assert rows and all(float(r["policy_std"]) >= 0.5 - 1e-6 for r in rows)
    agent = _Agent(cfg)  # the run's policy holds the floor: a head asking for σ = e^-3 gets 0.5
    with torch.no_grad():
        agent.net.head.bias[agent.net.n_z:] = -3.0
        _, logstd = agent.net(torch.randn(2, 3, agent.model.config.d_model))
    torch.testing.assert_close(logstd.exp(), torch.full_like(logstd, 0.5))
    for bad, msg in ((1.5, "min_std must be in"), (-0.5, "min_std must be in")):
        cfg.min_std, cfg.out = bad, str(tmp_path / "floor_bad")
        with pytest.raises(ValueError, match=msg):
            run_rl(cfg)
    cfg.min_std, cfg.method = 0.5, "raw"
    with pytest.raises(ValueError, match="min_std applies to z-space methods"):
        run_rl(cfg)
    assert not (tmp_path / "floor_bad").exists()
    # per-decision advantages from a critic: saved beside the policy, resumed like it, logged, refused for raw
    whole_c = rl("critic_whole", 64, critic=True)
    rl("critic_split", 32, critic=True)
    split_c = rl("critic_split", 64, resume=True, critic=True)
    for name in ("policy", "critic"):
        a = load_file(tmp_path / "critic_whole" / f"{name}.safetensors")
        b = load_file(tmp_path / "critic_split" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert split_c["curve"] == whole_c["curve"] and whole_c["critic"] and whole_c["gae_lambda"] == 0.5
    rows = list(csv.DictReader(open(tmp_path / "critic_whole" / "metrics.csv")))
    assert len(rows) == 64 // 16 and all(float(r["value_loss"]) >= 0.0 for r in rows)
    # a critic joins a run trained without one on resume; its warm-up iterations leave the policy as it was
    # (a one-colour task, which an untrained policy solves now and then: the updates have signal)
    easy = rl("easy", 32, task="3")
    assert easy["curve"][-1]["success"] > 0
    before = load_file(tmp_path / "easy" / "policy.safetensors")
    rl("easy", 64, resume=True, critic=True, critic_warmup=2, task="3")
    after = load_file(tmp_path / "easy" / "policy.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "easy" / "critic.safetensors").exists()
    rows = list(csv.DictReader(open(tmp_path / "easy" / "metrics.csv")))
    assert len(rows) == 64 // 16 and rows[0]["value_loss"] == "" and rows[-1]["value_loss"] != ""
    rl("easy", 80, resume=True, critic=True, critic_warmup=2, task="3")  # warm-up spent: the policy trains
    assert not all(torch.equal(after[k], v) for k, v in load_file(tmp_path / "easy" / "policy.safetensors").items())
    with pytest.raises(ValueError, match="trained with a critic"):
        rl("easy", 96, resume=True, task="3")
    # examples/lost_option_probe.py reads a finished run (with or without a critic) and writes its figures
    script = Path(__file__).parents[1] / "examples" / "lost_option_probe.py"
    done = subprocess.run([sys.executable, str(script), "--rl", str(tmp_path / "easy"), "--out",
                           str(tmp_path / "probe.json"), "--batches", "3", "--batch-size", "16", "--heldout", "1",
                           "--epochs", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["episodes"] == 48 and probe["train_episodes"] == 32
    assert probe["probe"]["decisions"] == probe["index_only"]["decisions"] > 0
    cfg.min_std, cfg.critic = 0.0, True
    with pytest.raises(ValueError, match="critic applies to z-space methods"):
        run_rl(cfg)
    cfg.method, cfg.gae_lambda = "internal", 1.5
    with pytest.raises(ValueError, match="gae_lambda must be in"):
        run_rl(cfg)
    cfg.gae_lambda, cfg.critic, cfg.critic_warmup = 0.5, False, 3
    with pytest.raises(ValueError, match="needs critic"):
        run_rl(cfg)
    cfg.critic, cfg.critic_warmup, cfg.critic_scale = True, 0, "group"  # GRPO-scaled critic advantages
    with pytest.raises(ValueError, match="needs critic and group_size > 1"):
        run_rl(cfg)
    cfg.group_size, cfg.out = 4, str(tmp_path / "critic_group")
    assert run_rl(cfg)["critic_scale"] == "group"
    cfg.critic_scale = "episode"
    with pytest.raises(ValueError, match="critic_scale must be"):
        run_rl(cfg)


@pytest.mark.parametrize("scale", ["batch", "group"])
def test_rl_critic_advantages_reach_ppo_as_configured(data_dir, tmp_path, monkeypatch, scale):
    """With --critic, what ppo_update receives at every iteration is GAE(λ) of the critic's values at collection
    time and the batch's returns, normalised over the batch's decisions or scaled per GRPO group as configured
    (the non-default λ = 0.3 must reach it)."""
    import internal_rl.phases.rl as rl_phase
    from internal_rl.phases.discover import run_discover
    from internal_rl.rl.objective import (
        decision_advantages,
        group_scaled_decision_advantages,
        normalise_decision_advantages,
    )

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    run_discover(presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"),
                                         str(tmp_path / "discover"), progress=False))
    values, updates = [], []
    real_values, real_update = rl_phase.latent_values, rl_phase.ppo_update

    def values_spy(critic, ro, idx):
        v = real_values(critic, ro, idx)
        values.append(v.clone())
        return v

    def update_spy(*args, advantages=None, **kw):
        updates.append((args[3], None if advantages is None else advantages.clone()))
        return real_update(*args, advantages=advantages, **kw)

    monkeypatch.setattr(rl_phase, "latent_values", values_spy)
    monkeypatch.setattr(rl_phase, "ppo_update", update_spy)
    cfg = presets.rl_config("smoke", str(tmp_path / "pretrain"), str(tmp_path / "discover"), str(tmp_path / "rl"))
    cfg.progress, cfg.critic, cfg.gae_lambda, cfg.critic_scale, cfg.episodes = False, True, 0.3, scale, 48
    cfg.group_size, cfg.task = (4 if scale == "group" else 1), "3"  # a one-colour task: some episodes succeed
    rl_phase.run_rl(cfg)
    assert len(values) == len(updates) == 3
    for v, (ro, adv) in zip(values, updates):
        raw = decision_advantages(v, ro.returns.to(v.dtype), ro.mask, 0.3)
        want = (group_scaled_decision_advantages(raw, ro.returns, 4, cfg.delta) if scale == "group"
                else normalise_decision_advantages(raw, ro.mask, cfg.delta))
        torch.testing.assert_close(adv, want)
    assert any(bool(v.abs().sum() > 0) for v in values[1:])  # the critic trains: later values are not V ≡ 0
    assert any(bool(adv.abs().sum() > 0) for _, adv in updates)


def _check_endings(res: dict, task_len: int = 12) -> None:
    """Where evaluation episodes ended agrees with their success rate: every episode ends once, the
    successful ones after all task_len colours, and only failures end on a wrong colour."""
    n, hist, wrong = res["eval_episodes"], res["eval_progress_hist"], res["eval_wrong_colour_hist"]
    successes = round(res["final_success"] * n)
    assert sum(hist) == n and (hist[task_len] if len(hist) > task_len else 0) == successes
    assert len(wrong) == 8 and sum(wrong) <= n - successes
    by_k = res["eval_wrong_colour_progress_hist"]
    assert sum(by_k) == sum(wrong) and len(by_k) == len(hist) and all(f <= h for f, h in zip(by_k, hist))


def test_rl_results_say_where_evaluation_episodes_ended(data_dir, tmp_path, capsys):
    from internal_rl.phases.discover import run_discover
    from internal_rl.phases.rl import run_rl

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    run_discover(presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"),
                                         str(tmp_path / "discover"), progress=False))
    for method, task in (("raw", "0-1"), ("raw", POST_TRAINING_TASK), ("internal", POST_TRAINING_TASK)):
        cfg = presets.rl_config("smoke", str(tmp_path / "pretrain"), str(tmp_path / "discover"),
                                str(tmp_path / f"rl_{method}_{len(task)}"), method)
        cfg.episodes, cfg.eval_episodes, cfg.task, cfg.progress = 16, 64, task, False
        res = run_rl(cfg)
        _check_endings(res, task_len=len(task.split("-")))
        assert sum(res["eval_wrong_colour_hist"]) > 0  # an untrained smoke model mostly enters wrong colours
        assert res["beta_threshold"] == (None if method == "raw" else 0.5)  # raw has no switches
    # the rescue analysis reads a finished z-space run (and refuses a raw one)
    from internal_rl.phases.rescue import RescueConfig, run_rescue

    internal_run = tmp_path / f"rl_internal_{len(POST_TRAINING_TASK)}"
    capsys.readouterr()
    rescue = run_rescue(RescueConfig(rl=str(internal_run), out=str(tmp_path / "rescue"), groups=4, group_size=3))
    bars = capsys.readouterr().err
    assert "rescue 1/2 (reference)" in bars and "rescue 2/2 (candidates)" in bars  # a bar per pass, on by default
    saved = json.loads((tmp_path / "rescue" / "rescue.json").read_text())
    assert saved["groups_consistent"] == 1.0 and saved["rl_run"] == str(internal_run)
    assert saved["failed_layouts"] == rescue["failed_layouts"] and saved["task"] == POST_TRAINING_TASK
    with pytest.raises(ValueError, match="raw-action run"):
        run_rescue(RescueConfig(rl=str(tmp_path / f"rl_raw_{len(POST_TRAINING_TASK)}"), out=str(tmp_path / "r2")))
    with pytest.raises(FileNotFoundError, match="finished `internal-rl rl` run"):
        run_rescue(RescueConfig(rl=str(tmp_path / "nowhere"), out=str(tmp_path / "r3")))
    cfg.action_temperature, cfg.out = 0.0, str(tmp_path / "rl_greedy")
    assert run_rl(cfg)["action_temperature"] == 0.0  # argmax primitive actions inside the option env
    cfg.also_temperatures, cfg.out = [0.0, 1.0], str(tmp_path / "rl_also")
    res = run_rl(cfg)  # trained at τ = 0, so its own evaluation is the τ = 0 one, on the same episodes
    assert res["final_success_at_temperature"]["0.0"] == res["final_success"]
    assert set(res["final_success_at_temperature"]) == {"0.0", "1.0"}
    assert res["beta_threshold"] == 0.5  # the metacontroller's own: the paper's
    cfg.beta_threshold, cfg.out = 0.8, str(tmp_path / "rl_thr")
    assert run_rl(cfg)["beta_threshold"] == 0.8
    for bad in (1.0, -0.2):
        cfg.beta_threshold = bad
        with pytest.raises(ValueError, match="beta_threshold must be in"):
            run_rl(cfg)
    cfg.beta_threshold = 0.0
    cfg.method = "raw"
    with pytest.raises(ValueError, match="action_temperature applies to z-space methods"):
        run_rl(cfg)
    cfg.action_temperature = 1.0
    with pytest.raises(ValueError, match="also_temperatures applies to z-space methods"):
        run_rl(cfg)
    cfg.also_temperatures, cfg.beta_threshold = [], 0.7
    for method in ("raw", "beta1"):
        cfg.method = method
        with pytest.raises(ValueError, match=f"beta_threshold has no effect with method {method}"):
            run_rl(cfg)
    cfg.method, cfg.oracle_switch = "internal", True
    with pytest.raises(ValueError, match="beta_threshold has no effect with oracle_switch"):
        run_rl(cfg)


def test_metrics_logger_fresh_run_replaces_and_resume_truncates(tmp_path):
    """A fresh run into an old run's folder starts new logs; a resumed one keeps rows up to its checkpoint."""
    import csv

    from internal_rl.phases.common import MetricsLogger

    def steps():
        with open(tmp_path / "metrics.csv") as f:
            return [int(float(r["step"])) for r in csv.DictReader(f)]

    log = MetricsLogger(tmp_path)
    for s in range(1, 5):
        log.log(s, loss=1.0 / s)
    log.close()
    old_events = sorted((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert steps() == [1, 2, 3, 4] and old_events
    text = (tmp_path / "metrics.csv").read_text().splitlines()
    text[2] = "2,100.0," + text[2].split(",", 2)[2]  # step 2 was logged 100 s into the run
    (tmp_path / "metrics.csv").write_text("\n".join(text) + "\n")
    log = MetricsLogger(tmp_path, resume_step=2)
    log.log(3, loss=0.3)
    log.close()
    assert steps() == [1, 2, 3]
    with open(tmp_path / "metrics.csv") as f:
        times = [float(r["time"]) for r in csv.DictReader(f)]
    assert times[1] == 100.0 and 100.0 <= times[2] < 160.0  # the resumed run's clock goes on from its last row
    log = MetricsLogger(tmp_path)
    log.log(1, loss=2.0)
    log.close()
    assert steps() == [1]
    assert not set(old_events) & set((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_discover_resume_continues_the_same_run(data_dir, tmp_path, monkeypatch):
    """Discovery stopped at a checkpoint and resumed lands where an uninterrupted run does; its logged rate
    counts only the steps the resumed process ran."""
    import itertools
    import types

    from safetensors.torch import load_file

    from internal_rl.phases import discover
    from internal_rl.phases.discover import run_discover

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)

    def cfg(out: str, steps: int, resume: bool = False):
        return presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), str(tmp_path / out),
                                       steps=steps, ckpt_every=4, log_every=4, progress=False, resume=resume)

    run_discover(cfg("d", 4))
    w4 = load_file(tmp_path / "d" / "metacontroller.safetensors")
    clock = itertools.count()  # one second per reading of the clock: t0, then the log at step 8
    monkeypatch.setattr(discover, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    run_discover(cfg("d", 8, resume=True))
    monkeypatch.undo()
    run_discover(cfg("straight", 8))
    resumed = load_file(tmp_path / "d" / "metacontroller.safetensors")
    straight = load_file(tmp_path / "straight" / "metacontroller.safetensors")
    assert any(not torch.equal(w4[k], resumed[k]) for k in w4)
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], atol=1e-6, rtol=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "d" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [4, 8]
    assert float(rows[1]["steps_per_s"]) == 4.0  # 4 steps in 1 s, not the 8 of the whole run


def test_discover_eval_every_logs_the_heldout_segmentation_and_changes_no_weight(data_dir, tmp_path):
    """--eval-every N scores the held-out episodes every N steps into metrics.csv (the last row equal to
    segmentation.json) without touching training: the weights match a run without it bit for bit."""
    from safetensors.torch import load_file

    from internal_rl.phases.discover import run_discover

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)

    def cfg(out: str, **kw):
        return presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), str(tmp_path / out),
                                       steps=10, progress=False, **kw)

    seg = run_discover(cfg("evaluated", eval_every=4))
    run_discover(cfg("plain"))
    a, b = (load_file(tmp_path / d / "metacontroller.safetensors") for d in ("evaluated", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [r for r in csv.DictReader(open(tmp_path / "evaluated" / "metrics.csv")) if r.get("heldout_f1")]
    assert [int(r["step"]) for r in rows] == [4, 8, 10]
    for k in ("f1", "precision", "recall", "switches_per_episode", "switches_at_mid_events", "heldout_objective"):
        col = k if k.startswith("heldout_") else f"heldout_{k}"
        assert float(rows[-1][col]) == pytest.approx(seg[k], rel=1e-6, abs=1e-9)
    assert len({float(r["heldout_objective"]) for r in rows}) == 3  # scored at each point, not copied
    assert "heldout_f1" not in open(tmp_path / "plain" / "metrics.csv").readline()  # 0: only segmentation.json
    with pytest.raises(ValueError, match="eval_every"):
        run_discover(cfg("bad", eval_every=-1))


def test_discover_restarts_keep_the_lowest_heldout_objective(data_dir, tmp_path, monkeypatch):
    """--restarts K trains K seeds in OUT/restart{i}, copies the lowest held-out objective's run into OUT (its
    metacontroller loads from OUT as from one run), reads finished restarts back, and resumes unfinished ones."""
    from safetensors.torch import load_file

    from internal_rl.phases import discover
    from internal_rl.phases.discover import load_metacontroller, run_discover

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)

    def cfg(**kw):
        return presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), str(tmp_path / "d"),
                                       seed=3, progress=False, **kw)

    seg = run_discover(cfg(restarts=3))
    saved = json.loads((tmp_path / "d" / "restarts.json").read_text())
    objectives = [r["heldout_objective"] for r in saved["restarts"]]
    assert [r["seed"] for r in saved["restarts"]] == [3, 4, 5] and len(set(objectives)) == 3
    kept = saved["kept_restart"]
    assert objectives[kept] == min(objectives) and seg["kept_restart"] == kept
    kept_dir = tmp_path / "d" / f"restart{kept}"
    assert seg["heldout_objective"] == json.loads((kept_dir / "segmentation.json").read_text())["heldout_objective"]
    mine, theirs = load_file(tmp_path / "d" / "metacontroller.safetensors"), load_file(kept_dir / "metacontroller.safetensors")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    load_metacontroller(tmp_path / "d")  # what rl reads
    assert json.loads((tmp_path / "d" / "config.json").read_text())["discover"]["restarts"] == 3
    # finished restarts are read back, not retrained
    monkeypatch.setattr(discover, "run_discover", lambda c: pytest.fail(f"{c.out} was retrained"))
    assert discover.run_discover_restarts(cfg(restarts=3))["heldout_objective"] == seg["heldout_objective"]
    monkeypatch.undo()
    # a restart with a larger budget and --resume continues from its checkpoint
    run_discover(cfg(restarts=2, steps=presets.discover_config("smoke", "", "", "").steps + 4, resume=True))
    rows = list(csv.DictReader(open(tmp_path / "d" / "restart0" / "metrics.csv")))
    assert int(rows[-1]["step"]) == presets.discover_config("smoke", "", "", "").steps + 4
    with pytest.raises(ValueError, match="restarts"):
        run_discover(cfg(restarts=0))


def test_sweep_alpha_runs_both_modes_and_reuses_points(data_dir, tmp_path, monkeypatch):
    """Each (mode, α) point is a discover run on the frozen base or a co-trained one; finished points are reused."""
    from internal_rl.phases import sweep_alpha
    from internal_rl.phases.sweep_alpha import SweepAlphaConfig, run_sweep_alpha

    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    d = presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), "", steps=4,
                                progress=False)
    cfg = SweepAlphaConfig(discover=d, alphas=[0.0, 1.0], out=str(tmp_path / "sweep"))
    res = run_sweep_alpha(cfg)
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert saved["alphas"] == [0.0, 1.0] and (tmp_path / "sweep" / "sweep.png").stat().st_size > 0
    for mode in ("frozen", "cotrained"):
        assert [r["alpha"] for r in saved[mode]] == [0.0, 1.0]
        assert all(r["kl"] >= 0 and r["nll"] > 0 for r in saved[mode])
        seg = json.loads((tmp_path / "sweep" / f"{mode}_alpha1" / "segmentation.json").read_text())
        assert seg["heldout_kl"] == saved[mode][1]["kl"]
        assert seg["heldout_objective"] == pytest.approx(seg["heldout_nll"] + 1.0 * seg["heldout_kl"], rel=1e-6)
    assert saved["frozen"][0]["kl"] > saved["frozen"][1]["kl"]  # a free KL costs rate; α = 1 squeezes it
    monkeypatch.setattr(sweep_alpha, "run_discover", lambda c: pytest.fail("a finished point was run again"))
    assert run_sweep_alpha(cfg)["frozen"] == res["frozen"]
    with pytest.raises(ValueError, match="unknown modes"):
        run_sweep_alpha(SweepAlphaConfig(discover=d, modes=["thawed"], out=str(tmp_path / "x")))


def test_console_command_reports_bad_input_in_one_line(tmp_path):
    """`internal-rl` prints bad input as one error line with exit status 2 (the traceback on request)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "internal_rl.cli", "pretrain", "--preset", "smoke", "--root", str(tmp_path),
           "--amp", "fp8"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "INTERNAL_RL_TRACEBACK": "0"})
    assert out.returncode == 2
    assert out.stderr.strip() == "internal-rl: error: unknown amp mode 'fp8'; choose one of none, bf16, auto"
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "INTERNAL_RL_TRACEBACK": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr and "ValueError: unknown amp mode" in out.stderr


def test_cli_resume_reads_the_runs_own_settings_and_refuses_others(data_dir, tmp_path, capsys):
    """`--resume` alone continues a run with the settings it was started with (here the smoke preset's, although
    the command names none, whose default is quick); a setting that differs from the run's is refused by name,
    and a larger budget is allowed; rl runs of other methods get their own default folders, and resuming a run
    as another method is refused."""
    import shutil

    from internal_rl.cli import main

    root = tmp_path / "r"
    shutil.copytree(data_dir / "data", root / "data")
    main(["pretrain", "--preset", "smoke", "--root", str(root), "--steps", "4", "--no-progress", "--threads", "1"])
    saved = json.loads((root / "pretrain" / "config.json").read_text())["pretrain"]
    main(["pretrain", "--root", str(root), "--resume", "--steps", "6", "--no-progress"])
    resumed = json.loads((root / "pretrain" / "config.json").read_text())["pretrain"]
    assert json.loads((root / "pretrain" / "results.json").read_text())["steps"] == 6
    assert {k: v for k, v in resumed.items() if k not in ("steps", "resume", "progress")} == \
        {k: v for k, v in saved.items() if k not in ("steps", "resume", "progress")}
    main(["pretrain", "--root", str(root), "--resume", "--steps", "3", "--no-progress"])
    assert "nothing to train" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"weight_decay = 0\.03 in the run, 0\.5 now"):
        main(["pretrain", "--root", str(root), "--resume", "--weight-decay", "0.5"])
    with pytest.raises(ValueError, match="model.d_model"):
        main(["pretrain", "--root", str(root), "--resume", "--model.d-model", "48"])

    main(["discover", "--preset", "smoke", "--root", str(root), "--no-progress", "--threads", "1"])
    for layer in ("7", "-2"):
        with pytest.raises(ValueError, match=r"--layer .* outside 0\.\."):
            main(["discover", "--preset", "smoke", "--root", str(root), "--layer", layer, "--out", str(tmp_path / "d")])
    with pytest.raises(ValueError, match=r"--layers entry 9 outside 0\.\."):
        main(["controllers", "--preset", "smoke", "--root", str(root), "--layers", "9"])
    main(["rl", "--preset", "smoke", "--root", str(root), "--no-progress", "--threads", "1"])
    main(["rl", "--preset", "smoke", "--root", str(root), "--method", "raw", "--no-progress", "--threads", "1"])
    assert json.loads((root / "rl" / "results.json").read_text())["method"] == "internal"
    assert json.loads((root / "rl_raw" / "results.json").read_text())["method"] == "raw"
    with pytest.raises(ValueError, match="method = 'internal' in the run, 'raw' now"):
        main(["rl", "--root", str(root), "--resume", "--method", "raw", "--out", str(root / "rl")])
    for flags, what in ((["--episodes", "0"], "episodes"), (["--batch-size", "0"], "batch_size"),
                        (["--task", "0-1-x"], "malformed task")):
        with pytest.raises(ValueError, match=what):
            main(["rl", "--preset", "smoke", "--root", str(root), "--out", str(tmp_path / "x"), *flags])
    with pytest.raises(ValueError, match="steps must be >= 0"):
        main(["pretrain", "--preset", "smoke", "--root", str(root), "--out", str(tmp_path / "y"), "--steps", "-5"])
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        main(["reproduce", "--preset", "smoke", "--seeds", "0", "--out", str(tmp_path / "z")])
    with pytest.raises(ValueError, match="unknown command 'bogus'"):
        main(["bogus"])
    with pytest.raises(ValueError, match="demo takes --preset"):
        main(["demo", "--root", str(tmp_path)])


def test_json_files_are_strict_json(tmp_path):
    """NaN and infinities (e.g. a hazard where no episode got that far) are written as null, never as bare NaN."""
    from internal_rl.phases.common import to_jsonable, write_json

    data = {"h": [0.5, float("nan"), float("inf")], "x": np.float32("nan"), "n": np.float64(2.5)}
    assert to_jsonable(data) == {"h": [0.5, None, None], "x": None, "n": 2.5}
    write_json(tmp_path / "a.json", data)
    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == \
        {"h": [0.5, None, None], "x": None, "n": 2.5}


def test_rank_discovery_runs_orders_by_heldout_objective_without_labels(tmp_path):
    """examples/rank_discovery_runs.py keeps the run with the lowest held-out NLL + α·KL (recomputed for runs
    without the key), whatever their labelled F1, and refuses runs whose objectives do not compare."""
    script = Path(__file__).parents[1] / "examples" / "rank_discovery_runs.py"

    def run_folder(name, seed, nll, kl, f1, model="P", with_key=True, steps=6000):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"discover": {"seed": seed, "model": model, "data": "D"}}))
        seg = {"heldout_nll": nll, "heldout_kl": kl, "alpha": 0.5, "f1": f1, "switches_per_episode": 3.0,
               "layer": 1, "cotrain": False, "steps": steps}
        if with_key:
            seg["heldout_objective"] = nll + 0.5 * kl
        (d / "segmentation.json").write_text(json.dumps(seg))
        return str(d)

    # objectives 0.40, 0.30 (recomputed: no key), 0.35: the middle folder wins although its F1 is the lowest
    runs = [run_folder("a", 0, 0.30, 0.20, 0.9), run_folder("b", 1, 0.20, 0.20, 0.1, with_key=False),
            run_folder("c", 2, 0.25, 0.20, 0.5)]
    out = subprocess.run([sys.executable, str(script), "--runs", *runs, "--out", str(tmp_path / "rank.json")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "rank.json").read_text())
    assert saved["keep"] == runs[1] and [r["seed"] for r in saved["ranking"]] == [1, 2, 0]
    assert [r["objective"] for r in saved["ranking"]] == pytest.approx([0.30, 0.35, 0.40])
    other = run_folder("d", 3, 0.1, 0.1, 1.0, model="other base")
    out = subprocess.run([sys.executable, str(script), "--runs", runs[0], other], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "differ in base" in out.stderr
    longer = run_folder("e", 4, 0.1, 0.1, 0.2, steps=12000)  # trained twice as long: its objective is lower anyway
    out = subprocess.run([sys.executable, str(script), "--runs", runs[0], longer], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "differ in steps" in out.stderr


def test_rank_discovery_runs_bootstrap_and_best_of_k_on_real_runs(data_dir, tmp_path):
    """--bootstrap recomputes each run's held-out objective episode by episode (equal to the one discover
    stored, on the same episodes) and brackets each gap; --best-of reads every K-subset."""
    from internal_rl.phases.discover import run_discover

    script = Path(__file__).parents[1] / "examples" / "rank_discovery_runs.py"
    pcfg = presets.pretrain_config("smoke", str(data_dir / "data"), str(tmp_path / "pretrain"))
    pcfg.progress = False
    run_pretrain(pcfg)
    runs = []
    for seed in (0, 1):
        runs.append(str(tmp_path / f"d{seed}"))
        run_discover(presets.discover_config("smoke", str(tmp_path / "pretrain"), str(data_dir / "data"), runs[-1],
                                             seed=seed, progress=False))
    out = subprocess.run([sys.executable, str(script), "--runs", *runs, "--bootstrap", "200", "--best-of",
                          "--out", str(tmp_path / "rank.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "rank.json").read_text())
    ranking, (gap,) = saved["ranking"], saved["bootstrap"]
    for r in ranking:
        assert r["objective_recomputed"] == pytest.approx(r["objective"], rel=1e-5)
    assert ranking[0]["objective"] <= ranking[1]["objective"]
    assert gap["difference"] == pytest.approx(ranking[1]["objective"] - ranking[0]["objective"], rel=1e-4, abs=1e-7)
    assert gap["ci95"][0] <= gap["difference"] <= gap["ci95"][1] and gap["episodes"] == ranking[0]["episodes"]
    assert [row["subsets"] for row in saved["best_of"]] == [2, 1]
    assert saved["best_of"][1]["f1_median"] == ranking[0]["f1"]  # of both, the lower objective is kept
