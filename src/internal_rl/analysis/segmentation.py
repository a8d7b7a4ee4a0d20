"""Segmentation quality: do the metacontroller's switches (β_t > threshold) fall on subgoal boundaries?

A ground-truth boundary is a step t ≥ 1 whose subgoal label differs from step t−1's. A switch is a
step t ≥ 1 with β_t > threshold (β_1 = 1 by construction and is left out of both sides). Switches and
boundaries are matched one to one within ±tol steps (a maximum matching), so two switches around one
boundary count one hit and one false alarm; precision = matched / switches, recall = matched / boundaries.
`switch_sites` says where the missed ones land instead (at landmarks inside subgoals, or nowhere in
particular), which separates a consistent but phase-shifted segmentation from noise.
`f1_any_match` keeps the looser count used before session 12 (a switch is correct if any boundary lies
within ±tol, a boundary found if any switch does), which double switching can inflate.
"""

from __future__ import annotations

import numpy as np


def boundaries(subgoals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, T) bool: t ≥ 1 valid and subgoal[t] != subgoal[t−1]."""
    b = np.zeros_like(mask, dtype=bool)
    b[:, 1:] = (subgoals[:, 1:] != subgoals[:, :-1]) & mask[:, 1:]
    return b


def _dilate(x: np.ndarray, tol: int) -> np.ndarray:
    """x or any neighbour within ±tol along time."""
    out = x.copy()
    for d in range(1, tol + 1):
        out[:, d:] |= x[:, :-d]
        out[:, :-d] |= x[:, d:]
    return out


def _matched(switches: np.ndarray, bounds: np.ndarray, tol: int) -> int:
    """Size of a maximum one-to-one matching of sorted switch and boundary steps within ±tol: each boundary,
    in order, takes the earliest unused switch at or after b − tol (optimal for equal-width windows)."""
    j = matched = 0
    for b in bounds:
        while j < len(switches) and switches[j] < b - tol:
            j += 1
        if j < len(switches) and switches[j] <= b + tol:
            matched += 1
            j += 1
    return matched


def segmentation_metrics(beta: np.ndarray, subgoals: np.ndarray, mask: np.ndarray, threshold: float = 0.5,
                         tol: int = 1) -> dict[str, float]:
    """Precision, recall and F1 of switches vs subgoal boundaries (±tol), β statistics, switch counts."""
    beta, subgoals, mask = np.asarray(beta), np.asarray(subgoals), np.asarray(mask, dtype=bool)
    if not (beta.shape == subgoals.shape == mask.shape):
        raise ValueError(f"beta {beta.shape}, subgoals {subgoals.shape} and mask {mask.shape} must match")
    truth = boundaries(subgoals, mask)
    switch = _switches(beta, mask, threshold)
    n_pred, n_true = switch.sum(), truth.sum()
    precision, recall, f1 = _match_scores(switch, truth, tol)
    any_p = (switch & _dilate(truth, tol)).sum() / n_pred if n_pred else 0.0
    any_r = (truth & _dilate(switch, tol)).sum() / n_true if n_true else 0.0
    inner = mask.copy()
    inner[:, 0] = False
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "f1_any_match": float(_f1(any_p, any_r)),
        "mean_beta_at_boundaries": float(beta[truth].mean()) if n_true else float("nan"),
        "mean_beta_elsewhere": float(beta[inner & ~truth].mean()) if (inner & ~truth).any() else float("nan"),
        "switches_per_episode": float(switch.sum(1).mean() + 1),  # + the forced switch at t=1
        "subgoals_per_episode": float(truth.sum(1).mean() + 1),
        "quasi_binary_fraction": float(((beta < 0.1) | (beta > 0.9))[inner].mean()) if inner.any() else float("nan"),
        "threshold": threshold,
        "tolerance": tol,
        "episodes": int(mask.shape[0]),
    }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _switches(beta: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray:
    """(N, T) bool: valid steps t ≥ 1 with β_t > threshold (the forced switch at t = 1 left out)."""
    switch = (beta > threshold) & mask
    switch[:, 0] = False
    return switch


def _match_scores(switch: np.ndarray, targets: np.ndarray, tol: int) -> tuple[float, float, float]:
    """Precision, recall, F1 of a one-to-one matching of switches to target steps within ±tol, per episode."""
    n_pred, n_true = switch.sum(), targets.sum()
    matched = sum(_matched(np.flatnonzero(s), np.flatnonzero(b), tol) for s, b in zip(switch, targets))
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_true if n_true else 0.0
    return float(precision), float(recall), float(_f1(precision, recall))


def switch_sites(beta: np.ndarray, subgoals: np.ndarray, mask: np.ndarray, events: np.ndarray,
                 threshold: float = 0.5, tol: int = 1) -> dict[str, float]:
    """Where the switches land when they miss the boundaries: `events` (N, T) bool marks landmark steps
    inside subgoals (in gridworld-pinpad, visits to the first colour of a pair, `envs.pinpad.colour_entries`
    minus the boundaries). A run can segment every episode consistently yet at the wrong phase, switching at
    those landmarks instead of at the subgoal boundaries; F1 against the boundaries alone cannot tell that
    from noise. Each switch counts once, at a boundary (±tol) first, else at an event (±tol), else elsewhere;
    `f1_mid_events` scores the switches against the events farther than ±tol from every boundary (the
    "mid events") as `f1` does against the boundaries. `beta_off_boundary_q10/q50/q90` are percentiles of β at
    the switches farther than ±tol from every boundary: just over the cut they are bumps that a higher cut
    removes, near 1 they are switches the metacontroller means."""
    beta, subgoals, mask = np.asarray(beta), np.asarray(subgoals), np.asarray(mask, dtype=bool)
    events = np.asarray(events, dtype=bool)
    if not (beta.shape == subgoals.shape == mask.shape == events.shape):
        raise ValueError(f"beta {beta.shape}, subgoals {subgoals.shape}, mask {mask.shape} and events "
                         f"{events.shape} must match")
    truth = boundaries(subgoals, mask)
    near_truth = _dilate(truth, tol)
    mid = events & mask & ~near_truth  # landmarks within ±tol of a boundary are not told apart from it
    mid[:, 0] = False
    switch = _switches(beta, mask, threshold)
    near_mid = _dilate(mid, tol)
    n = switch.sum()
    at_boundary = (switch & near_truth).sum()
    at_mid = (switch & ~near_truth & near_mid).sum()
    precision, recall, f1 = _match_scores(switch, mid, tol)
    off = beta[switch & ~near_truth]
    q10, q50, q90 = np.quantile(off, [0.1, 0.5, 0.9]) if off.size else (float("nan"),) * 3
    return {
        "switches_at_boundaries": float(at_boundary / n) if n else float("nan"),
        "switches_at_mid_events": float(at_mid / n) if n else float("nan"),
        "switches_elsewhere": float((n - at_boundary - at_mid) / n) if n else float("nan"),
        "f1_mid_events": f1,
        "precision_mid_events": precision,
        "recall_mid_events": recall,
        "mean_beta_at_mid_events": float(beta[mid].mean()) if mid.any() else float("nan"),
        "mid_events_per_episode": float(mid.sum(1).mean()),
        "beta_off_boundary_q10": float(q10),
        "beta_off_boundary_q50": float(q50),
        "beta_off_boundary_q90": float(q90),
    }


SWEEP_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def segmentation_by_threshold(beta: np.ndarray, subgoals: np.ndarray, mask: np.ndarray,
                              thresholds: tuple[float, ...] = SWEEP_THRESHOLDS, tol: int = 1) -> list[dict[str, float]]:
    """Switch precision, recall, F1 and switches per episode at each β threshold: soft β can bump to about
    0.5 inside a subgoal while true boundaries sit near 1, and this says where the cut separates them."""
    keys = ("threshold", "f1", "precision", "recall", "switches_per_episode")
    return [{k: segmentation_metrics(beta, subgoals, mask, t, tol)[k] for k in keys} for t in thresholds]


def beta_histogram(beta: np.ndarray, mask: np.ndarray, bins: int = 10) -> list[int]:
    """Counts of β over valid steps after the forced switch at t = 1, in `bins` equal bins of [0, 1]: read
    without labels, the gap between bumps inside subgoals and the switches near 1 shows where to cut."""
    beta, mask = np.asarray(beta), np.asarray(mask, dtype=bool)
    if beta.shape != mask.shape:
        raise ValueError(f"beta {beta.shape} and mask {mask.shape} must match")
    return np.histogram(beta[:, 1:][mask[:, 1:]], bins=bins, range=(0.0, 1.0))[0].tolist()
