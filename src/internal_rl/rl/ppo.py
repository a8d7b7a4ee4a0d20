"""Critic-free PPO as in the paper (App. D.3): one advantage per episode, clipped joint-density ratio.

    A_τ = (R(τ) − mean_batch R) / (std_batch R + δ),   shared by every decision of episode τ
    L = −mean_decisions min(ρ A, clip(ρ, 1−ε, 1+ε) A),   ρ = π_new(z|·) / π_old(z|·)  (joint density)
      − c_H · mean_decisions H(π_new(·|·))   (entropy bonus; the paper's default c_H = 0, off)

The two formulas live in rl/objective.py (no environment imports, so the seed API's ``policy_loss``
loads them alone). Rollout collection for the two kinds of decision-maker lives here: the latent policy acting
through the option-level core (internal RL, β≡1 ablation, co-trained) and the base model acting on
primitive actions (the raw-action baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from internal_rl.envs.pinpad import BatchedPinPad
from internal_rl.models.sequence_model import SequenceModel, prev_actions_of
from internal_rl.rl.critic import LatentCritic, critic_targets, value_loss
from internal_rl.rl.objective import clipped_surrogate, episode_advantages, update_diagnostics
from internal_rl.rl.option_env import OptionCore
from internal_rl.rl.policy import LatentPolicy, gaussian_entropy, gaussian_logp


@dataclass
class Rollouts:
    """A batch of episodes as padded decision sequences (B, K, ...) plus per-episode outcomes."""

    inputs: Tensor
    """What the policy read at each decision: e at switch times (B, K, D), or observations (B, K+1, obs_dim)."""
    actions: Tensor
    """Decisions taken: z (B, K, n_z), or primitive actions (B, K)."""
    old_logp: Tensor
    """log π_old of each decision (B, K)."""
    mask: Tensor
    """(B, K) valid decisions."""
    returns: Tensor
    success: Tensor
    env_steps: Tensor
    """Primitive env steps per episode (B,)."""
    progress: Tensor | None = None
    """Correct colours visited per episode (B,), for analysis."""
    wrong_colour: Tensor | None = None
    """The colour a failed episode ended by entering, −1 for the others (B,), for analysis."""
    policy_std: Tensor | None = None
    """z-space policies: the mean σ of π(z|·) over z's dimensions at each decision (B, K), 0 at padding; how
    much the policy still explores (the prior's σ is 1)."""


def _outcomes(env: BatchedPinPad) -> tuple[Tensor | None, ...]:
    """success, env_steps, progress and wrong_colour of every episode, copied out of the env (the last two
    only where the env tracks them: gridworld-pinpad does, BabyAI does not)."""
    fields = (env.success, env.step_count, getattr(env, "progress", None), getattr(env, "wrong_colour", None))
    return tuple(None if x is None else torch.from_numpy(np.array(x)) for x in fields)


@torch.no_grad()
def collect_latent(core: OptionCore, policy: LatentPolicy, seed: int, mean_z: bool = False) -> Rollouts:
    """Run every episode of `core` to the end, asking `policy` for z whenever an episode's switch fires.
    `mean_z`: act with the policy's mean instead of a draw (evaluation; log-probs are still of the z used)."""
    policy.eval()
    e = core.reset(seed)
    n, T, D, dev = core.n, core.env.config.max_steps, e.shape[1], core.device
    g = torch.Generator().manual_seed(seed + 1)  # on the CPU: the same draws on any device
    cap = min(T, 8)  # decision slots; doubled as episodes make more decisions (an episode makes at most T)
    E = torch.zeros(n, cap, D, device=dev)
    Z = torch.zeros(n, cap, policy.n_z, device=dev)
    LP = torch.zeros(n, cap, device=dev)
    S = torch.zeros(n, cap, device=dev)
    K = torch.zeros(n, dtype=torch.long, device=dev)
    state = policy.initial_state(n)
    returns = torch.zeros(n, device=dev)
    need = core.need.clone()
    rows = torch.arange(n, device=dev)
    z = torch.zeros(n, policy.n_z, device=dev)
    while not bool(core.done.all()):
        if bool(need.any()):  # only episodes whose switch fired make a decision (and advance the policy)
            r = rows[need]
            if int(K[r].max()) >= E.shape[1]:
                E, Z, LP, S = (torch.cat([x, torch.zeros_like(x)], 1)[:, :T] for x in (E, Z, LP, S))
            e_r = core.e[r].float()
            mean, logstd, new_sub = policy.step(e_r, [type(s)(*(t[r] for t in s)) for s in state])
            noise = torch.randn(mean.shape, generator=g).to(dev)  # drawn either way: the same stream of draws
            z_r = mean if mean_z else mean + logstd.exp() * noise
            for s, ns in zip(state, new_sub):
                for t, nt in zip(s, ns):
                    t[r] = nt
            E[r, K[r]] = e_r
            Z[r, K[r]] = z_r
            LP[r, K[r]] = gaussian_logp(z_r, mean, logstd)
            S[r, K[r]] = logstd.exp().mean(-1)
            K[r] += 1
            z[r] = z_r
        reward, _, need = core.advance(z, need)
        returns += reward
    kmax = max(int(K.max()), 1)
    mask = torch.arange(kmax, device=dev)[None] < K[:, None]
    env = core.env
    return Rollouts(E[:, :kmax], Z[:, :kmax], LP[:, :kmax], mask, returns, *_outcomes(env), policy_std=S[:, :kmax])


def _length_groups(lengths: Tensor):
    """(rows, k) for episodes grouped by their number of decisions (up to 1, 2, 4, 8, ...), k the group's longest:
    a causal network over decisions can run each group trimmed to k instead of the batch's longest."""
    lo = 0
    while lo < int(lengths.max()):
        hi = max(1, 2 * lo)
        rows = ((lengths > lo) & (lengths <= hi)).nonzero()[:, 0]
        if len(rows):
            yield rows, int(lengths[rows].max())
        lo = hi


def latent_logp(policy: LatentPolicy, ro: Rollouts, idx: Tensor,
                with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """log π(z|·) of stored decisions (B, K), recomputed in parallel over each episode's decisions; 0 at padding.
    ``with_entropy``: also the entropy of π(·|·) at each decision (B, K), 0 at padding (the entropy bonus).

    Decision slots are padded to the batch's longest episode (often three to five times the mean), and the
    policy is causal, so episodes are grouped by length (`_length_groups`) and each group runs trimmed to its
    own longest: the same log-probabilities, without the padding's matrix products.
    """
    mask = ro.mask[idx]
    out = torch.zeros(mask.shape, dtype=ro.inputs.dtype, device=mask.device)
    ent = torch.zeros_like(out) if with_entropy else None
    for rows, k in _length_groups(mask.sum(dim=1)):
        sel = idx[rows]
        mean, logstd = policy(ro.inputs[sel, :k], ro.mask[sel, :k])
        out[rows, :k] = gaussian_logp(ro.actions[sel, :k], mean, logstd)
        if ent is not None:
            ent[rows, :k] = gaussian_entropy(logstd)
    zero = torch.zeros((), dtype=out.dtype, device=out.device)
    logp = torch.where(mask, out, zero)
    return (logp, torch.where(mask, ent, zero)) if ent is not None else logp


def latent_values(critic: LatentCritic, ro: Rollouts, idx: Tensor) -> Tensor:
    """The critic's V at every stored decision (B, K) of episodes `idx`, grouped by length like `latent_logp`;
    0 at padding."""
    mask = ro.mask[idx]
    out = torch.zeros(mask.shape, dtype=ro.inputs.dtype, device=mask.device)
    for rows, k in _length_groups(mask.sum(dim=1)):
        sel = idx[rows]
        out[rows, :k] = critic(ro.inputs[sel, :k], ro.mask[sel, :k])
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))


def critic_update(critic: LatentCritic, optimizer: torch.optim.Optimizer, ro: Rollouts, epochs: int,
                  minibatches: int, max_grad_norm: float, generator: torch.Generator) -> float:
    """Regress V on the returns (`critic_targets`) in `epochs` passes of `minibatches` episode minibatches;
    the mean squared error of the last epoch."""
    critic.train()
    targets = critic_targets(ro.returns.to(ro.inputs.dtype), ro.mask)
    n = ro.returns.shape[0]
    for _ in range(epochs):
        losses = []  # the last epoch's
        perm = torch.randperm(n, generator=generator).to(ro.returns.device)
        for idx in perm.chunk(minibatches):
            loss = value_loss(latent_values(critic, ro, idx), targets[idx], ro.mask[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(critic.parameters(), max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses))


@torch.no_grad()
def collect_raw(model: SequenceModel, env: BatchedPinPad, task: str, seed: int, group_size: int = 1) -> Rollouts:
    """The base model samples primitive actions; every step is a decision (raw-action baseline).
    `group_size` G: consecutive episodes in groups of G share a layout (GRPO)."""
    model.eval()
    n, T = env.num_envs, env.config.max_steps
    obs = env.reset(task, seed=seed, group_size=group_size)
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed + 1)  # on the CPU: the same draws on any device
    cache = model.new_cache(n, T)
    obs_buf = torch.zeros(n, T + 1, obs.shape[1], device=dev)
    A = torch.zeros(n, T, dtype=torch.long, device=dev)
    LP = torch.zeros(n, T, device=dev)
    alive = torch.zeros(n, T, dtype=torch.bool, device=dev)
    prev = torch.full((n,), -1, dtype=torch.long, device=dev)
    returns = torch.zeros(n, device=dev)
    for t in range(T):
        x = torch.from_numpy(obs).to(dev)
        obs_buf[:, t] = x
        out = model.step(x, cache, prev if model.prev_action is not None else None)
        logp = torch.log_softmax(out.action_logits.float(), -1)
        a = torch.multinomial(logp.exp().cpu(), 1, generator=g)[:, 0]
        alive[:, t] = ~torch.from_numpy(env.done).to(dev)
        obs, r, term, trunc, _ = env.step(a.numpy())
        a = a.to(dev)
        A[:, t], LP[:, t] = a, logp.gather(1, a[:, None])[:, 0]
        returns += torch.from_numpy(r).to(dev)
        prev = a
        if np.all(term | trunc):
            break
    K = alive.sum(1)
    kmax = max(int(K.max()), 1)
    obs_buf[torch.arange(n, device=dev), K] = torch.from_numpy(obs).to(dev)
    return Rollouts(obs_buf[:, : kmax + 1], A[:, :kmax], LP[:, :kmax], alive[:, :kmax], returns, *_outcomes(env))


def raw_logp(model: SequenceModel, ro: Rollouts, idx: Tensor,
             with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """log π(a_t|o_1..t) of stored primitive actions, recomputed with the full-sequence forward;
    ``with_entropy``: also the entropy of the categorical π(·|o_1..t) per step (B, K)."""
    actions = ro.actions[idx]
    T = actions.shape[1]
    pa = prev_actions_of(actions) if model.prev_action is not None else None
    out = model(ro.inputs[idx][:, :T], pa)
    logp = model.action_logp(out, actions)
    if not with_entropy:
        return logp
    if not model.config.discrete:
        raise ValueError("the raw-action entropy bonus is written for discrete actions")
    lp = torch.log_softmax(out.action_logits.float(), dim=-1)
    return logp, -(lp.exp() * lp).sum(-1)


def ppo_update(logp_fn, params, optimizer: torch.optim.Optimizer, ro: Rollouts, epochs: int, minibatches: int,
               clip: float, delta: float, max_grad_norm: float, generator: torch.Generator,
               group_size: int = 1, entropy_coef: float = 0.0, advantages: Tensor | None = None) -> dict[str, float]:
    """Run `epochs` passes of clipped PPO over the rollouts in `minibatches` episode minibatches; advantages
    are normalised over the batch, or within GRPO groups of `group_size` consecutive episodes, unless given as
    `advantages` (B, K), one per decision (a critic's: `decision_advantages`).
    `entropy_coef` c_H > 0 subtracts c_H × the mean entropy of the policy over the valid decisions from the
    loss (then `logp_fn(ro, idx, True)` must return (log-probs, entropies)); 0, the paper's, leaves it out."""
    if entropy_coef < 0:
        raise ValueError(f"entropy_coef must be >= 0, got {entropy_coef}")
    adv = episode_advantages(ro.returns, delta, group_size)
    if not bool(adv.any()):  # every episode (of every group) scored alike: no signal, skip the update
        return {"loss": 0.0, "skipped": 1.0}
    if advantages is not None:
        if advantages.shape != ro.mask.shape:
            raise ValueError(f"advantages must be (B, K) = {tuple(ro.mask.shape)}, got {tuple(advantages.shape)}")
        adv = advantages
    n = ro.returns.shape[0]
    losses, entropies = [], []
    kls, clipped = [], []  # measured in the last epoch only (each value is a host sync)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator).to(ro.returns.device)
        for idx in perm.chunk(minibatches):
            if entropy_coef:
                logp, ent = logp_fn(ro, idx, True)
            else:
                logp = logp_fn(ro, idx)
            loss = clipped_surrogate(logp, ro.old_logp[idx], adv[idx], ro.mask[idx], clip)
            if epoch == epochs - 1:
                kl, frac = update_diagnostics(logp, ro.old_logp[idx], ro.mask[idx], clip)
                kls.append(kl)
                clipped.append(frac)
            if entropy_coef:
                m = ro.mask[idx].to(ent.dtype)
                mean_ent = (ent * m).sum() / m.sum().clamp(min=1)
                loss = loss - entropy_coef * mean_ent
                entropies.append(mean_ent.item())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
    stats = {"loss": float(np.mean(losses)), "skipped": 0.0,
             # the last epoch's minibatches: how far this update moved the policy from the one that collected
             "approx_kl": float(np.mean(kls)), "clip_fraction": float(np.mean(clipped))}
    if entropies:
        stats["entropy"] = float(np.mean(entropies))
    return stats
