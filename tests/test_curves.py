"""`internal-rl curves`: take-off, final batch success and seed pooling read back from metrics.csv."""

import csv
import json

import pytest

from internal_rl.cli import main


def _run(folder, successes, batch=100, evaluated_at=None, final=0.0, mean_z=None):
    folder.mkdir()
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "time", "success", "episodes", "env_steps", "loss"])
        w.writeheader()
        for i, s in enumerate(successes, 1):
            w.writerow({"step": i, "time": i, "success": s, "episodes": i * batch, "env_steps": i * batch * 10,
                        "loss": 0.0})
    if evaluated_at is not None:
        res = {"episodes": evaluated_at, "final_success": final, "eval_episodes": 64}
        if mean_z is not None:
            res["final_success_mean_z"] = mean_z
        (folder / "results.json").write_text(json.dumps(res))


def test_curves_phase_summarises_and_pools_seeds(tmp_path):
    _run(tmp_path / "a0", [0.0, 0.01, 0.2, 0.5, 0.7], evaluated_at=500, final=0.75, mean_z=0.8)
    _run(tmp_path / "a1", [0.0, 0.0, 0.0, 0.06, 0.3, 0.4], evaluated_at=300, final=0.1)  # stale evaluation
    _run(tmp_path / "b", [0.0, 0.0, 0.0])
    main(["curves", "--runs", str(tmp_path / "a0"), str(tmp_path / "a1"), str(tmp_path / "b"),
          "--labels", "A", "A", "B", "--last", "2", "--out", str(tmp_path / "c")])
    res = json.loads((tmp_path / "c" / "curves.json").read_text())
    a0, a1, b = res["runs"]
    assert (a0["takeoff_episodes"], a0["takeoff_env_steps"]) == (300, 3000)
    assert a1["takeoff_episodes"] == 400 and b["takeoff_episodes"] is None
    assert a0["last_batch_success"] == pytest.approx(0.6) and a1["last_batch_success"] == pytest.approx(0.35)
    assert (a0["episodes"], a0["env_steps"], a0["iterations"]) == (500, 5000, 5)
    assert a0["final_success"] == 0.75 and a1["final_success"] is None and "from 300 episodes" in a1["note"]
    assert b["final_success"] is None and "no results.json" in b["note"]
    A = res["methods"]["A"]
    assert A["seeds"] == 2 and A["last_batch_success_median"] == pytest.approx(0.475)
    assert A["final_success_median"] == 0.75 and A["evaluated_seeds"] == 1
    assert a0["final_success_mean_z"] == 0.8 and A["final_success_mean_z_median"] == 0.8
    assert res["methods"]["B"]["final_success_median"] is None
    assert (tmp_path / "c" / "curves.png").exists()


def test_curves_phase_bad_input_raises(tmp_path):
    _run(tmp_path / "a", [0.1])
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        main(["curves", "--runs", str(tmp_path / "a"), str(tmp_path / "a"), "--labels", "x", "--out", str(tmp_path / "c")])
    with pytest.raises(FileNotFoundError, match="metrics.csv not found"):
        main(["curves", "--runs", str(tmp_path), "--out", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="at least one"):
        main(["curves", "--out", str(tmp_path / "c")])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metrics.csv").write_text("step,time,loss\n1,1,0\n")
    with pytest.raises(ValueError, match="no column episodes, env_steps, success"):
        main(["curves", "--runs", str(tmp_path / "d"), "--out", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="last must be at least 1"):
        main(["curves", "--runs", str(tmp_path / "a"), "--last", "0", "--out", str(tmp_path / "c")])
