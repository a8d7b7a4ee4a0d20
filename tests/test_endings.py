"""Hazard per task position against a plain loop over episodes."""

import numpy as np
import pytest

from internal_rl.analysis.endings import hazards
from internal_rl.envs.pinpad import ending_histograms


def test_hazards_match_a_loop_over_episodes():
    rng = np.random.default_rng(0)
    L = 6
    progress = rng.integers(0, L + 1, size=500)  # L: success
    success = progress == L
    wrong = np.where(~success & (rng.random(500) < 0.7), rng.integers(0, 8, 500), -1)  # the rest: truncated
    hist = ending_histograms(progress, wrong)
    want_all, want_wrong = [], []
    for k in range(L):
        reached = [i for i in range(500) if progress[i] >= k]
        want_all.append(sum(progress[i] == k for i in reached) / len(reached))
        want_wrong.append(sum(progress[i] == k and wrong[i] >= 0 for i in reached) / len(reached))
    np.testing.assert_allclose(hazards(hist["progress_hist"], L), want_all)
    np.testing.assert_allclose(hazards(hist["progress_hist"], L, hist["wrong_colour_progress_hist"]), want_wrong)


def test_hazards_of_unreached_positions_are_nan_and_bad_input_raises():
    h = hazards([2, 2], task_len=4)  # every episode ended by position 1
    assert h[:2].tolist() == [0.5, 1.0] and np.isnan(h[2:]).all()
    with pytest.raises(ValueError, match="0..2"):
        hazards([1, 1, 1, 1], task_len=2)
    with pytest.raises(ValueError, match="more endings"):
        hazards([1, 1, 1], task_len=2, ended_hist=[2, 0])


def test_endings_phase_reads_rl_controllers_and_codes_runs(tmp_path):
    import json

    from internal_rl.cli import main

    rl, ctrl, codes = tmp_path / "rl", tmp_path / "ctrl", tmp_path / "codes"
    for d in (rl, ctrl, codes):
        d.mkdir()
    (rl / "results.json").write_text(json.dumps({"eval_progress_hist": [1, 1, 2]}))
    (rl / "config.json").write_text(json.dumps({"rl": {"task": "0-1"}}))
    post = [0] * 12 + [4]  # the post-training task, 12 colours
    (ctrl / "controllers.json").write_text(json.dumps({
        "layers": [1, 2], "post_task_success": [0.0, 0.5],
        "post_task_progress_hist": [[4] + [0] * 12, [2] + [0] * 11 + [2]]}))
    (codes / "codes.json").write_text(json.dumps({"task": "0-1-2-3-4-5-6-7-0-1-2-3", "chaining": [
        {"tasks": "pretraining", "scale": 1.0, "colours_visited_histogram": [9]},
        {"tasks": "post", "scale": 1.0, "colours_visited_histogram": post}]}))
    main(["endings", "--runs", str(rl), str(ctrl / "controllers.json"), str(codes), "--out", str(tmp_path / "e")])
    res = json.loads((tmp_path / "e" / "endings.json").read_text())["runs"]
    assert [r["label"] for r in res] == ["rl", "ctrl", "codes"] and (tmp_path / "e" / "endings.png").exists()
    np.testing.assert_allclose(res[0]["hazard"], [0.25, 1 / 3])
    assert res[0]["success"] == 0.5 and res[0]["episodes"] == 4
    assert res[1]["hazard"][0] == 0.5 and res[1]["success"] == 0.5 and "layer 2" in res[1]["source"]
    assert res[2]["hazard"] == [0.0] * 12 and res[2]["success"] == 1.0
    with pytest.raises(FileNotFoundError, match="no results.json"):
        main(["endings", "--runs", str(tmp_path / "e"), "--out", str(tmp_path / "e2")])
    pre = tmp_path / "pretrain"  # a pretraining folder also holds results.json: named as not an rl run
    pre.mkdir()
    (pre / "results.json").write_text(json.dumps({"steps": 3}))
    (pre / "config.json").write_text(json.dumps({"model": {}, "pretrain": {}}))
    with pytest.raises(ValueError, match="is not an `rl` run"):
        main(["endings", "--runs", str(pre), "--out", str(tmp_path / "e4")])
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        main(["endings", "--runs", str(rl), str(codes), "--labels", "a", "--out", str(tmp_path / "e3")])
