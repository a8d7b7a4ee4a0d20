"""`reproduce --overrides PHASE.FIELD=VALUE`: typed parsing, nested fields, clear errors, and that a
reproduction really runs its phases with the changed configs and refuses a folder made with other settings."""

import json

import pytest

from internal_rl.experiments import presets
from internal_rl.experiments.overrides import apply_overrides, parse_overrides
from internal_rl.experiments.reproduce import ReproduceConfig, check_overrides, run_reproduce


def _apply(phase, cfg, *items):
    return apply_overrides(phase, cfg, parse_overrides(list(items)))


def test_values_are_parsed_by_the_fields_type():
    rl = _apply("rl", presets.rl_config("quick", "m", "d", "o"), "rl.group_size=16", "rl.lr=1e-4",
                "rl.also_temperatures=0,0.5", "rl.progress=false", "rl.task=0-1-2-3")
    assert (rl.group_size, rl.lr, rl.also_temperatures, rl.progress, rl.task) == (16, 1e-4, [0.0, 0.5], False, "0-1-2-3")
    assert isinstance(rl.group_size, int) and all(isinstance(t, float) for t in rl.also_temperatures)
    pre = presets.pretrain_config("quick", "d", "o")
    changed = _apply("pretrain", pre, "pretrain.model.attn_window=24", "pretrain.model.attn_window_layers=0,1",
                     "pretrain.weight_decay=1")
    assert (changed.model.attn_window, changed.model.attn_window_layers, changed.weight_decay) == (24, (0, 1), 1.0)
    assert pre.model.attn_window != 24  # the preset's config itself is not mutated
    assert _apply("pretrain", changed, "pretrain.model.attn_window_layers=none").model.attn_window_layers is None
    assert _apply("discover", presets.discover_config("quick", "", "", ""), "discover.alpha=0.1").alpha == 0.1
    other = _apply("discover", presets.discover_config("quick", "", "", ""), "rl.group_size=4")
    assert other == presets.discover_config("quick", "", "", "")  # another phase's override leaves it alone


@pytest.mark.parametrize("item, message", [
    ("rl.group_size", "expected PHASE.FIELD=VALUE"),
    ("group_size=16", "expected PHASE.FIELD=VALUE"),
    ("ppo.lr=1", "unknown phase 'ppo'"),
    ("rl.grup_size=16", "has no field 'grup_size'; fields: .*group_size"),
    ("rl.group_size=sixteen", "expected int, got 'sixteen'"),
    ("rl.progress=maybe", "expected true or false"),
    ("rl.seed=3", "reproduce sets 'seed' itself"),
    ("rl.out=/tmp/x", "reproduce sets 'out' itself"),
    ("pretrain.model=big", "group of fields"),
    ("rl.method=raw", "defines the compared methods"),
    ("discover.cotrain=true", "defines the compared methods"),
    ("pretrain.lr.x=1", "lr has no sub-fields"),
])
def test_bad_overrides_fail_with_a_clear_message_before_anything_runs(item, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        check_overrides("smoke", [item])
    with pytest.raises(ValueError, match=message):
        run_reproduce(ReproduceConfig(preset="smoke", seeds=1, out=str(tmp_path / "r"), overrides=[item]))
    assert not (tmp_path / "r").exists()


def test_the_configs_own_checks_run_on_the_changed_configs():
    with pytest.raises(ValueError, match="group_size must divide batch_size 16"):
        check_overrides("smoke", ["rl.group_size=5"])
    with pytest.raises(ValueError, match="attn_window must be"):
        check_overrides("smoke", ["pretrain.model.attn_window=-1"])
    with pytest.raises(ValueError, match="action_temperature applies to z-space methods"):
        check_overrides("smoke", ["rl.action_temperature=0"])  # raw is among the methods
    check_overrides("smoke", ["rl.action_temperature=0"], methods=["internal", "beta1"])


def test_reproduce_runs_the_phases_with_the_overrides_and_guards_its_folder(tmp_path):
    over = ["rl.group_size=4", "discover.steps=6", "rl.episodes=48"]
    res = run_reproduce(ReproduceConfig(preset="smoke", seeds=1, out=str(tmp_path), methods=["internal"],
                                        overrides=over, progress=False))
    rl = json.loads((tmp_path / "seed0" / "rl_internal" / "config.json").read_text())["rl"]
    assert rl["group_size"] == 4 and rl["episodes"] == 48 and rl["seed"] == 0 and rl["progress"] is False
    assert rl["batch_size"] == presets.rl_config("smoke", "", "", "").batch_size  # the rest is the preset's
    header = (tmp_path / "seed0" / "rl_internal" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"approx_kl", "clip_fraction", "policy_std", "success", "loss"} <= set(header)
    assert json.loads((tmp_path / "seed0" / "discover" / "config.json").read_text())["discover"]["steps"] == 6
    assert res["methods"]["internal"]["episodes"] == 48 and res["overrides"] == over
    assert "`rl.group_size=4`" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "reproduce.json").read_text()) == {"preset": "smoke", "overrides": over}
    with pytest.raises(ValueError, match="choose another --out"):
        run_reproduce(ReproduceConfig(preset="smoke", seeds=1, out=str(tmp_path), methods=["internal"]))
    again = run_reproduce(ReproduceConfig(preset="smoke", seeds=1, out=str(tmp_path), methods=["internal"],
                                          overrides=over))  # the same settings: every phase read back
    assert again["methods"] == res["methods"]
    assert res["phases_read_back"] == 0 and again["phases_read_back"] == 6  # data, pretrain, probe, controllers,
    assert "6 phases finished by an earlier invocation" in (tmp_path / "results.md").read_text()  # discover, rl
