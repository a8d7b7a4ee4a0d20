import numpy as np
import pytest
from einops import rearrange

from internal_rl.analysis.segmentation import (
    beta_histogram,
    segmentation_by_threshold,
    segmentation_metrics,
    switch_sites,
)


def max_matching(sw, bd, tol):
    """Maximum bipartite matching by augmenting paths (Kuhn), a different algorithm from the module's."""
    owner = {}

    def augment(i, seen):
        for s in sw:
            if abs(s - bd[i]) <= tol and s not in seen:
                seen.add(s)
                if s not in owner or augment(owner[s], seen):
                    owner[s] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(bd)))


def reference_f1(beta, subgoals, mask, thr=0.5, tol=1, one_to_one=True):
    """Loop reference: switches and boundaries as index lists, matched within ±tol (one to one, or any match)."""
    tp_p = n_p = tp_t = n_t = 0
    for b, g, m in zip(beta, subgoals, mask):
        L = int(m.sum())
        sw = [t for t in range(1, L) if b[t] > thr]
        bd = [t for t in range(1, L) if g[t] != g[t - 1]]
        n_p += len(sw)
        n_t += len(bd)
        if one_to_one:
            k = max_matching(sw, bd, tol)
            tp_p, tp_t = tp_p + k, tp_t + k
        else:
            tp_p += sum(any(abs(s - x) <= tol for x in bd) for s in sw)
            tp_t += sum(any(abs(s - x) <= tol for s in sw) for x in bd)
    p = tp_p / n_p if n_p else 0
    r = tp_t / n_t if n_t else 0
    return 2 * p * r / (p + r) if p + r else 0


def test_perfect_and_shifted_switches():
    g = np.array([[0, 0, 0, 2, 2, 2, 1, 1, 1, 1]])
    m = np.ones_like(g, dtype=bool)
    beta = np.zeros(g.shape)
    beta[0, [0, 3, 6]] = 1
    r = segmentation_metrics(beta, g, m)
    assert r["f1"] == 1 and r["switches_per_episode"] == 3 and r["subgoals_per_episode"] == 3
    shifted = np.zeros(g.shape)
    shifted[0, [4, 8]] = 1  # one within tolerance, one not
    r = segmentation_metrics(shifted, g, m)
    assert r["precision"] == 0.5 and r["recall"] == 0.5
    double = np.zeros(g.shape)
    double[0, [2, 3, 4, 6]] = 1  # three switches around the boundary at 3: one hit, two false alarms
    r = segmentation_metrics(double, g, m)
    assert r["precision"] == 0.5 and r["recall"] == 1.0 and r["f1_any_match"] == 1.0


def test_matches_loop_reference_with_padding():
    rng = np.random.default_rng(0)
    N, T = 40, 30
    g = np.cumsum(rng.random((N, T)) < 0.15, axis=1) % 4
    mask = np.arange(T)[None] < rng.integers(5, T, N)[:, None]
    beta = rng.random((N, T))
    r = segmentation_metrics(beta, g, mask)
    assert r["f1"] == pytest.approx(reference_f1(beta, g, mask))
    assert r["f1_any_match"] == pytest.approx(reference_f1(beta, g, mask, one_to_one=False))
    assert r["f1"] < r["f1_any_match"]  # random β double-switches around boundaries
    # padded steps change nothing
    beta2 = beta.copy()
    beta2[~mask] = 1.0
    g2 = g.copy()
    g2[~mask] = 3 - g2[~mask]
    assert segmentation_metrics(beta2, g2, mask)["f1"] == pytest.approx(r["f1"])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must match"):
        segmentation_metrics(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool))


def test_nll_by_colours_visited_counts_every_step_once():
    import torch

    from internal_rl.analysis.progress_nll import nll_by_colours_visited
    from internal_rl.data.pinpad_dataset import generate_pinpad
    from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig

    data = generate_pinpad(20, eps=0.0, seed=0, progress=False)
    torch.manual_seed(0)
    model = SequenceModel(SequenceModelConfig(d_model=16, depth=1, n_heads=1, head_dim=16, mlp_hidden=16))
    rows = nll_by_colours_visited(model, data, max_visits=7)
    # pretraining tasks visit 6 colours; the last visit ends the episode, so steps see 0..5 visits
    assert [r["colours_visited"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert sum(r["steps"] for r in rows) == int(data.lengths.sum())
    assert all(r["nll"] > 0 for r in rows)


def test_segmentation_by_threshold_separates_bumps_from_boundaries():
    """β near 1 at the true boundaries and bumps of 0.55 inside subgoals: the paper's cut (0.5) counts the
    bumps as switches, 0.6 and up do not, 0.97 misses the boundaries at 0.95 and 0.93; each row matches the loop."""
    g = np.array([[0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1], [3, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 0]])
    m = np.ones_like(g, dtype=bool)
    m[1, 10:] = False  # padding: its β must not count
    beta = np.full(g.shape, 0.1)
    beta[:, 0] = 1.0
    beta[0, [4, 8]] = [0.99, 0.95]
    beta[1, [3, 7]] = [0.98, 0.93]
    beta[0, 2] = beta[1, 5] = 0.55
    beta[1, 10] = 0.99
    rows = segmentation_by_threshold(beta, g, m, thresholds=(0.5, 0.6, 0.9, 0.97))
    assert [r["threshold"] for r in rows] == [0.5, 0.6, 0.9, 0.97]
    assert [r["f1"] for r in rows] == pytest.approx([0.8, 1.0, 1.0, 2 / 3])
    assert [r["switches_per_episode"] for r in rows] == [4.0, 3.0, 3.0, 2.0]
    for r in rows:
        assert r["f1"] == pytest.approx(reference_f1(beta, g, m, thr=r["threshold"]))
        assert r["precision"] == segmentation_metrics(beta, g, m, r["threshold"])["precision"]


def test_beta_histogram_counts_valid_steps_after_the_first():
    beta = np.array([[1.0, 0.05, 0.55, 0.97, 0.2], [1.0, 0.99, 0.12, 0.6, 0.6]])
    m = np.ones_like(beta, dtype=bool)
    m[1, 3:] = False  # padding: not counted
    assert beta_histogram(beta, m) == [1, 1, 1, 0, 0, 1, 0, 0, 0, 2]
    assert beta_histogram(beta, m, bins=2) == [3, 3]
    with pytest.raises(ValueError, match="must match"):
        beta_histogram(beta, m[:, :3])


def _expert_rollouts_with_progress(n, eps, seed):
    """Expert episodes as a Trajectories, with the env's own count of task colours visited before each action
    (`BatchedPinPad.progress`, −1 on padding), read while replaying them."""
    from internal_rl.data.trajectories import Trajectories
    from internal_rl.envs.pinpad import BatchedPinPad, PinPadConfig
    from internal_rl.experts.pinpad_expert import ShortestPathExpert

    cfg = PinPadConfig()
    env, expert, rng = BatchedPinPad(n, cfg, seed=seed), ShortestPathExpert(eps), np.random.default_rng(seed + 1)
    obs, actions, subgoals, progress = [env.reset()], [], [], []
    lengths = np.zeros(n, dtype=np.int64)
    while not env.done.all():
        live = ~env.done
        a = expert.act(env, rng)
        actions.append(np.where(live, a, 0))
        subgoals.append(np.where(live, env.subgoal, -1))
        progress.append(np.where(live, env.progress, -1))
        obs.append(env.step(a)[0])
        lengths += live
    stack = lambda x: rearrange(np.stack(x), "t n ... -> n t ...")  # noqa: E731
    data = Trajectories.from_float_obs(stack(obs), stack(actions), lengths, stack(subgoals), list(env.tasks))
    return data, stack(progress)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_nll_by_colours_visited_matches_a_per_step_loop(eps):
    """Each bucket k holds exactly the steps taken after k task colours were visited, as the env counts them
    while replaying the episodes (ε = 0.3: noisy moves into walls, also while standing on a colour just
    visited, visit nothing), and its NLL is the mean of −log p(a_t) from a float64 loop over steps, each
    episode run alone (no padding), for a model whose action head is scaled so the NLL differs by step."""
    import torch

    from internal_rl.analysis.progress_nll import nll_by_colours_visited
    from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig

    data, progress = _expert_rollouts_with_progress(12, eps, seed=4)
    torch.manual_seed(0)
    model = SequenceModel(SequenceModelConfig(d_model=16, depth=1, n_heads=1, head_dim=16, mlp_hidden=16,
                                              prev_action_input=True))
    with torch.no_grad():
        model.action_head.weight.mul_(20.0)
    per_count = {}
    for i in range(len(data)):
        L = int(data.lengths[i])
        b = data.batch(np.array([i]), "cpu")
        acts = b["actions"][0, :L].tolist()
        prev = torch.tensor([[-1] + acts[:-1]])
        with torch.no_grad():
            logits = model(b["obs"][:, :L], prev).action_logits[0].double()
        for t in range(L):
            nll = -(logits[t, acts[t]] - torch.logsumexp(logits[t], 0)).item()
            per_count.setdefault(int(progress[i, t]), []).append(nll)
    assert sorted(per_count) == [0, 1, 2, 3, 4, 5]
    rows = nll_by_colours_visited(model, data, max_visits=7)
    assert [r["colours_visited"] for r in rows] == sorted(per_count)
    assert [r["steps"] for r in rows] == [len(per_count[k]) for k in sorted(per_count)]
    assert [r["nll"] for r in rows] == pytest.approx([np.mean(per_count[k]) for k in sorted(per_count)], rel=1e-5)
    nlls = [r["nll"] for r in rows]
    assert max(nlls) - min(nlls) > 0.05  # buckets differ, so steps put in the wrong one change a mean


def test_switch_sites_tell_a_phase_shifted_segmentation_from_noise():
    # three subgoals; each has a landmark (the pair's first colour) two steps before its end
    g = np.array([[0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1]])
    events = np.zeros(g.shape, bool)
    events[0, [2, 4, 6, 8, 10]] = True  # 4 and 8 are boundaries too (entering the pair's last colour)
    m = np.ones_like(g, dtype=bool)
    aligned, shifted, noise = (np.zeros(g.shape) for _ in range(3))
    aligned[0, [0, 4, 8]] = 1
    shifted[0, [0, 2, 6, 10]] = 1
    noise[0, [0, 1, 5, 9]] = 1  # at tol 0 neither a landmark nor a boundary
    r = switch_sites(aligned, g, m, events)
    assert r["switches_at_boundaries"] == 1 and r["switches_at_mid_events"] == 0 and r["f1_mid_events"] == 0
    assert np.isnan(r["beta_off_boundary_q50"])  # no switch off the boundaries
    r = switch_sites(shifted * 0.75, g, m, events)
    assert r["beta_off_boundary_q10"] == r["beta_off_boundary_q90"] == 0.75
    r = switch_sites(shifted, g, m, events)
    assert segmentation_metrics(shifted, g, m)["f1"] == 0
    assert r["switches_at_mid_events"] == 1 and r["f1_mid_events"] == 1 and r["mid_events_per_episode"] == 3
    assert r["mean_beta_at_mid_events"] == 1
    r = switch_sites(noise, g, m, events, tol=0)
    assert r["switches_elsewhere"] == 1 and r["f1_mid_events"] == 0
    near = np.zeros(g.shape, bool)
    near[0, [3, 6]] = True  # 3 sits next to the boundary at 4: within ±1 it is that boundary, not a landmark
    assert switch_sites(aligned, g, m, near)["mid_events_per_episode"] == 1
    with pytest.raises(ValueError, match="must match"):
        switch_sites(aligned, g, m, events[:, :-1])


def test_discover_warns_of_a_shifted_segmentation_only_when_most_switches_sit_at_first_colours():
    from internal_rl.phases.discover import shifted_segmentation_hint

    g = np.array([[0, 0, 0, 0, 2, 2, 2, 2, 1, 1, 1, 1]])
    events = np.zeros(g.shape, bool)
    events[0, [2, 4, 6, 8, 10]] = True
    m = np.ones_like(g, dtype=bool)
    shifted, aligned = np.zeros(g.shape), np.zeros(g.shape)
    shifted[0, [0, 2, 6, 10]] = 1
    aligned[0, [0, 4, 8]] = 1
    hint = shifted_segmentation_hint(switch_sites(shifted, g, m, events))
    assert hint is not None and hint.startswith("100% of switches") and "--restarts" in hint
    assert shifted_segmentation_hint(switch_sites(aligned, g, m, events)) is None
    assert shifted_segmentation_hint({"switches_at_mid_events": 0.5}) is None  # half is not most
    assert shifted_segmentation_hint({"switches_at_mid_events": float("nan")}) is None  # no switches
    assert shifted_segmentation_hint({"f1": 0.0}) is None  # data without landmarks (not gridworld-pinpad)


def test_switch_sites_match_a_loop_reference_with_padding():
    rng = np.random.default_rng(1)
    N, T, tol = 30, 25, 1
    g = np.cumsum(rng.random((N, T)) < 0.15, axis=1) % 4
    events = rng.random((N, T)) < 0.2
    mask = np.arange(T)[None] < rng.integers(5, T, N)[:, None]
    beta = rng.random((N, T))
    counts = {"b": 0, "m": 0, "e": 0}
    off = []  # β at switches farther than tol from every boundary
    for b, gg, ev, mm in zip(beta, g, events, mask):
        L = int(mm.sum())
        bd = [t for t in range(1, L) if gg[t] != gg[t - 1]]
        mid = [t for t in range(1, L) if ev[t] and all(abs(t - x) > tol for x in bd)]
        for t in (t for t in range(1, L) if b[t] > 0.5):
            key = "b" if any(abs(t - x) <= tol for x in bd) else "m" if any(abs(t - x) <= tol for x in mid) else "e"
            counts[key] += 1
            if key != "b":
                off.append(b[t])
    n = sum(counts.values())
    r = switch_sites(beta, g, mask, events, tol=tol)
    assert r["switches_at_boundaries"] == pytest.approx(counts["b"] / n)
    assert r["switches_at_mid_events"] == pytest.approx(counts["m"] / n)
    assert r["switches_elsewhere"] == pytest.approx(counts["e"] / n)
    off = sorted(off)  # percentiles by linear interpolation between order statistics, as numpy's default
    for q in (10, 50, 90):
        pos = q / 100 * (len(off) - 1)
        lo = int(pos)
        ref = off[lo] + (pos - lo) * (off[min(lo + 1, len(off) - 1)] - off[lo])
        assert r[f"beta_off_boundary_q{q}"] == pytest.approx(ref)
    assert 0.5 < r["beta_off_boundary_q10"] <= r["beta_off_boundary_q50"] <= r["beta_off_boundary_q90"] <= 1
    # F1 against the landmarks is the boundary F1 of a labelling whose boundaries are those landmarks
    mid = np.zeros((N, T), bool)
    for i in range(N):
        L = int(mask[i].sum())
        bd = [t for t in range(1, L) if g[i, t] != g[i, t - 1]]
        mid[i, [t for t in range(1, L) if events[i, t] and all(abs(t - x) > tol for x in bd)]] = True
    relabel = np.cumsum(mid, 1)
    assert r["f1_mid_events"] == pytest.approx(reference_f1(beta, relabel, mask, tol=tol))
    # padded steps change nothing
    beta2, events2 = beta.copy(), events.copy()
    beta2[~mask], events2[~mask] = 1.0, True
    assert switch_sites(beta2, g, mask, events2, tol=tol) == pytest.approx(r)
