"""Segmentation quality: do the metacontroller's switches (β_t > threshold) fall on subgoal boundaries?

A ground-truth boundary is a step t ≥ 1 whose subgoal label differs from step t−1's. A switch is a
step t ≥ 1 with β_t > threshold (β_1 = 1 by construction and is left out of both sides). A switch is
correct if a boundary lies within ±tol steps; a boundary is found if a switch lies within ±tol.
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


def segmentation_metrics(beta: np.ndarray, subgoals: np.ndarray, mask: np.ndarray, threshold: float = 0.5,
                         tol: int = 1) -> dict[str, float]:
    """Precision, recall and F1 of switches vs subgoal boundaries (±tol), β statistics, switch counts."""
    beta, subgoals, mask = np.asarray(beta), np.asarray(subgoals), np.asarray(mask, dtype=bool)
    if not (beta.shape == subgoals.shape == mask.shape):
        raise ValueError(f"beta {beta.shape}, subgoals {subgoals.shape} and mask {mask.shape} must match")
    truth = boundaries(subgoals, mask)
    switch = (beta > threshold) & mask
    switch[:, 0] = False
    tp_pred = (switch & _dilate(truth, tol)).sum()
    tp_true = (truth & _dilate(switch, tol)).sum()
    n_pred, n_true = switch.sum(), truth.sum()
    precision = tp_pred / n_pred if n_pred else 0.0
    recall = tp_true / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    inner = mask.copy()
    inner[:, 0] = False
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "mean_beta_at_boundaries": float(beta[truth].mean()) if n_true else float("nan"),
        "mean_beta_elsewhere": float(beta[inner & ~truth].mean()) if (inner & ~truth).any() else float("nan"),
        "switches_per_episode": float(switch.sum(1).mean() + 1),  # + the forced switch at t=1
        "subgoals_per_episode": float(truth.sum(1).mean() + 1),
        "quasi_binary_fraction": float(((beta < 0.1) | (beta > 0.9))[inner].mean()) if inner.any() else float("nan"),
        "threshold": threshold,
        "tolerance": tol,
        "episodes": int(mask.shape[0]),
    }
