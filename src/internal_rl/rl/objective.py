"""The objective of the paper's critic-free PPO (App. D.3), free of environments and rollouts.

    A_τ = (R(τ) − mean_batch R) / (std_batch R + δ),   shared by every decision of episode τ
    L = −mean_decisions min(ρ A, clip(ρ, 1−ε, 1+ε) A),   ρ = π_new(z|·) / π_old(z|·)  (joint density)

With a learned critic V over the decisions (an option, not the paper's), each decision k of an episode gets its
own advantage instead, by GAE with γ = 1 and the episode's return as the reward of its last decision:

    δ_k = V_{k+1} − V_k  (k < K),   δ_K = R − V_K,   A_k = Σ_{l ≥ k} λ^{l−k} δ_l

(λ = 1: R − V_k, every decision judged against its own state's value; λ = 0: V_{k+1} − V_k, one decision's own
effect on the value). Normalised over the batch's valid decisions like the episode advantages, or (GRPO groups)
scaled by each group's return std, groups whose returns all tie contributing nothing as in GRPO.

rl/ppo.py trains with it; the seed API's ``MetaController.policy_loss`` uses it without importing the
environments that rl/ppo.py collects rollouts from.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clipped_surrogate", "decision_advantages", "episode_advantages", "group_scaled_decision_advantages",
           "normalise_decision_advantages", "tied_group_share", "update_diagnostics"]


def _check_group_size(returns: Tensor, group_size: int) -> None:
    if group_size < 1 or returns.numel() % group_size:
        raise ValueError(f"group_size must be a positive divisor of the {returns.numel()} episodes, got {group_size}")


def episode_advantages(returns: Tensor, delta: float = 1e-3, group_size: int = 1) -> Tensor:
    """Batch-normalised episode returns (paper: δ ≈ 1e-3); with group_size G > 1, each run of G consecutive
    episodes (a GRPO group: one layout) is normalised by its own mean and std instead."""
    _check_group_size(returns, group_size)
    groups = returns.reshape(-1, group_size) if group_size > 1 else returns.reshape(1, -1)
    mean, std = groups.mean(1, keepdim=True), groups.std(1, unbiased=False, keepdim=True)
    return ((groups - mean) / (std + delta)).reshape(returns.shape)


def tied_group_share(returns: Tensor, group_size: int) -> float:
    """Share of groups of `group_size` consecutive episodes whose returns all tie: their advantages are 0, so
    they teach the policy nothing (GRPO: a layout every draw of z solves, or one none does)."""
    _check_group_size(returns, group_size)
    groups = returns.reshape(-1, group_size)
    return float((groups.amax(1) == groups.amin(1)).float().mean())


def decision_advantages(values: Tensor, returns: Tensor, mask: Tensor, lam: float) -> Tensor:
    """GAE(γ = 1, λ) per decision (B, K) from the critic's values at every decision (B, K), the episode returns
    (B,) (the reward of each episode's last decision) and the valid decisions `mask` (B, K), a prefix per row;
    0 at padding. The critic's values are constants here (no gradient flows into the policy's advantages)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"gae_lambda must be in [0, 1], got {lam}")
    if values.shape != mask.shape or returns.shape != values.shape[:1]:
        raise ValueError(f"values {tuple(values.shape)}, mask {tuple(mask.shape)} and returns "
                         f"{tuple(returns.shape)} must be (B, K), (B, K) and (B,)")
    values = values.detach()
    m = mask.to(values.dtype)
    # V_{k+1}: the next valid decision's value, else the return (after the last decision) or 0 (padding)
    nxt_valid = torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], 1)
    nxt_v = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)
    last = m * (1 - nxt_valid)
    delta = (nxt_valid * nxt_v + last * returns[:, None] - values) * m
    adv = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for k in range(values.shape[1] - 1, -1, -1):  # K is the decisions per episode: tens at most
        running = delta[:, k] + lam * nxt_valid[:, k] * running
        adv[:, k] = running
    return adv * m


def normalise_decision_advantages(adv: Tensor, mask: Tensor, delta: float = 1e-3) -> Tensor:
    """(A − mean) / (std + δ) over the valid decisions of the batch; 0 at padding."""
    v = adv[mask]
    mean, std = v.mean(), v.std(unbiased=False)
    return torch.where(mask, (adv - mean) / (std + delta), torch.zeros_like(adv))


def group_scaled_decision_advantages(adv: Tensor, returns: Tensor, group_size: int, delta: float = 1e-3) -> Tensor:
    """Per-decision advantages (B, K) divided by the return std of their episode's GRPO group (+ δ), and 0 in
    groups whose returns all tie: the groups GRPO learns from keep its scale, with the credit of each episode
    spread over its decisions by the critic instead of shared."""
    _check_group_size(returns, group_size)
    groups = returns.reshape(-1, group_size)
    std = groups.std(1, unbiased=False)
    tied = groups.amax(1) == groups.amin(1)
    scale = torch.where(tied, torch.zeros_like(std), 1.0 / (std + delta))
    return adv * scale.repeat_interleave(group_size)[:, None].to(adv.dtype)


def clipped_surrogate(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, clip: float) -> Tensor:
    """PPO clipped objective (negated, mean over valid decisions); adv (B,), one per episode broadcast over its
    decisions, or (B, K), one per decision. Padding may hold anything (even NaN): it is selected out, not
    multiplied by zero."""
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    ratio = torch.where(mask, logp - old_logp, zero).exp()
    a = adv[:, None] if adv.dim() == 1 else adv
    obj = torch.where(mask, torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a), zero)
    return -obj.sum() / mask.sum().clamp(min=1).to(obj.dtype)


@torch.no_grad()
def update_diagnostics(logp: Tensor, old_logp: Tensor, mask: Tensor, clip: float) -> tuple[float, float]:
    """(approx_kl, clip_fraction) over the valid decisions: KL(π_old ‖ π_new) estimated as mean((ρ − 1) − log ρ)
    (non-negative, unbiased), and the share of decisions whose ratio ρ lies outside [1 − ε, 1 + ε]. How far
    an update moved the policy: a KL near 0 with no clipping says the policy has stopped changing."""
    log_ratio = torch.where(mask, logp - old_logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).float()
    ratio = log_ratio.exp()
    m = mask.float()
    n = m.sum().clamp(min=1)
    kl = (((ratio - 1) - log_ratio) * m).sum() / n
    clipped = (((ratio - 1).abs() > clip).float() * m).sum() / n
    return float(kl), float(clipped)
