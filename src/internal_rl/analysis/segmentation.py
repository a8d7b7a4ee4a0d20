"""Segmentation quality: do the metacontroller's switches (β_t > threshold) fall on subgoal boundaries?

A ground-truth boundary is a step t ≥ 1 whose subgoal label differs from step t−1's. A switch is a
step t ≥ 1 with β_t > threshold (β_1 = 1 by construction and is left out of both sides). Switches and
boundaries are matched one to one within ±tol steps (a maximum matching), so two switches around one
boundary count one hit and one false alarm; precision = matched / switches, recall = matched / boundaries.
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
    switch = (beta > threshold) & mask
    switch[:, 0] = False
    n_pred, n_true = switch.sum(), truth.sum()
    matched = sum(_matched(np.flatnonzero(s), np.flatnonzero(b), tol) for s, b in zip(switch, truth))
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_true if n_true else 0.0
    f1 = _f1(precision, recall)
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
