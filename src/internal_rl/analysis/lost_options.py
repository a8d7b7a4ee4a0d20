"""Can the internal-RL policy's input tell which of its options will fail?

A failed post-task episode ends during its last option: that decision is *fatal*; every other decision is
*safe* (its option ended by the switch firing, or the task was finished). A policy can only learn to avoid a
fatal code if what it reads at that decision (the residual streams at switch times so far) carries what makes
the layout hard. This module trains a probe, a causal SSM over those same inputs (the critic's network), to
predict fatal decisions from a trained policy's own rollouts, and scores it by the AUC on held-out episodes,
beside a probe that knows only the decision's index (how far the episode got). An analysis on top of a trained
``internal-rl rl`` run (examples/lost_option_probe.py), not part of the method.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from internal_rl.rl.critic import LatentCritic


def fatal_decisions(mask: Tensor, success: Tensor) -> Tensor:
    """(B, K) bool: the last valid decision of every failed episode (the option during which it ended)."""
    lengths = mask.sum(1)
    k = torch.arange(mask.shape[1], device=mask.device)[None]
    return mask & (k == (lengths - 1)[:, None]) & ~success.bool()[:, None]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting ½ (the Mann–Whitney form of the ROC AUC);
    nan when either side is empty."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, tied scores sharing their mean
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def train_fatal_probe(inputs: Tensor, mask: Tensor, fatal: Tensor, epochs: int = 10, batch: int = 256,
                      lr: float = 1e-3, width: int = 256, seed: int = 0) -> LatentCritic:
    """A causal SSM over the decisions' inputs (B, K, D) whose output is the logit that decision k is fatal,
    trained by binary cross-entropy over the valid decisions."""
    torch.manual_seed(seed)
    probe = LatentCritic(inputs.shape[-1], width)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(inputs.shape[0], generator=g).split(batch):
            k = int(mask[idx].sum(1).max())
            logits = probe(inputs[idx, :k], mask[idx, :k])
            m = mask[idx, :k]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[m], fatal[idx, :k][m].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe.eval()


def index_only_scores(mask: Tensor, fatal: Tensor, train: Tensor) -> Tensor:
    """The baseline: the share of fatal decisions at each decision index among the `train` episodes, as every
    decision's score (B, K): what knowing only how far the episode got predicts."""
    m, f = mask[train].float(), fatal[train].float()
    rate = f.sum(0) / m.sum(0).clamp(min=1)
    return rate[None].expand(mask.shape)


def fatal_aucs(scores: Tensor, mask: Tensor, fatal: Tensor, rows: Tensor, min_count: int = 5) -> dict:
    """AUC of `scores` (higher: more likely fatal) on the episodes `rows`: pooled over every valid decision, and
    within each decision index with at least `min_count` fatal and safe decisions (`by_decision`, 1-based),
    plus their mean weighted by the fatal decisions (`within_index`: what the index alone cannot explain)."""
    s, m, f = scores[rows].detach().numpy(), mask[rows].numpy(), fatal[rows].numpy()
    out = {"pooled": auc(s[f], s[m & ~f]), "fatal": int(f.sum()), "decisions": int(m.sum()), "by_decision": []}
    weights, values = [], []
    for k in range(m.shape[1]):
        fk, sk = f[:, k], m[:, k] & ~f[:, k]
        if fk.sum() >= min_count and sk.sum() >= min_count:
            a = auc(s[fk, k], s[sk, k])
            out["by_decision"].append({"decision": k + 1, "alive": int(m[:, k].sum()), "fatal": int(fk.sum()),
                                       "auc": a})
            weights.append(fk.sum())
            values.append(a)
    out["within_index"] = float(np.average(values, weights=weights)) if weights else float("nan")
    return out
