"""Does the discovered z-space hold the subgoal controllers? The learned-code analogue of paper App. C.3.

Codes: the code z_t at every switch (β_t > threshold) of held-out D* episodes, grouped by the ground-truth
subgoal pursued at t; each subgoal's code is the mean of its group. Chaining: run the option-level
environment and, whenever the switching unit asks for a decision, hand it the code of the subgoal the env
says comes next (labels used for analysis only, never by a model). Success on the pretraining tasks says
the codes steer in distribution; success on the post-training task says whether they steer across the
subgoal transitions pretraining never showed, which internal RL needs from its z-space.
"""

from __future__ import annotations

import numpy as np
import torch

from internal_rl.control.discovery import discovery_step
from internal_rl.control.metacontroller import MetaController
from internal_rl.envs.pinpad import ending_histograms
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.rl.option_env import OptionCore


@torch.no_grad()
def subgoal_codes(model: SequenceModel, mc: MetaController, layer: int, batch: dict, n_subgoals: int,
                  oracle_switch: bool = False) -> dict:
    """Mean code per subgoal over the switch steps of `batch` (a Trajectories batch, z̃ = μ, no sampling).

    `oracle_switch`: switch at the true subgoal boundaries (for metacontrollers discovered with --oracle-switch,
    whose switching unit was never trained).

    Returns {"codes": (K, n_z) array (NaN rows for subgoals never switched to), "counts": (K,),
    "spread": (K,) mean per-dimension std within each group, "distances": (K, K) between the means}.
    """
    _, out = discovery_step(model, mc, batch, layer, alpha=0.0, sample=False, oracle_switch=oracle_switch)
    switched = ((out.beta > mc.config.beta_threshold) & batch["mask"]).cpu().numpy()
    z, labels = out.z.float().cpu().numpy(), batch["subgoals"].cpu().numpy()
    if labels.min(initial=0) < -1 or labels.max(initial=0) >= n_subgoals:
        raise ValueError(f"subgoal labels must lie in 0..{n_subgoals - 1} (−1 for padding)")
    codes = np.full((n_subgoals, z.shape[-1]), np.nan)
    counts, spread = np.zeros(n_subgoals, dtype=np.int64), np.full(n_subgoals, np.nan)
    for k in range(n_subgoals):
        group = z[switched & (labels == k)]
        counts[k] = len(group)
        if len(group):
            codes[k], spread[k] = group.mean(0), group.std(0).mean()
    distances = np.linalg.norm(codes[:, None] - codes[None], axis=-1)
    return {"codes": codes, "counts": counts, "spread": spread, "distances": distances}


@torch.no_grad()
def chain_codes(model: SequenceModel, mc: MetaController, layer: int, codes: np.ndarray, task: str | None,
                episodes: int, seed: int = 0, scale: float = 1.0, oracle_switch: bool = False) -> dict:
    """Success of handing the env's next subgoal's code (times `scale`) to the option env at every decision.

    `task`: a task string, or None for a pretraining task sampled per episode. Returns success, the
    histogram of colours visited in order when each episode ended, of the wrong colour entered by the
    episodes that failed, and decisions per episode.
    `oracle_switch`: decide when the env's subgoal changes instead of when β fires.
    """
    if np.isnan(codes).any():
        raise ValueError("a subgoal has no code (no switch to it in the data): chaining needs every subgoal")
    core = OptionCore(model, mc, layer, episodes, task=task, seed=seed, oracle_switch=oracle_switch)
    core.reset(seed)
    table = torch.as_tensor(codes * scale, dtype=core.dtype, device=core.device)
    need = torch.ones(episodes, dtype=torch.bool, device=core.device)
    z = torch.zeros(episodes, mc.config.n_z, dtype=core.dtype, device=core.device)
    decisions = np.zeros(episodes)
    env = core.env
    while True:
        next_subgoal = torch.as_tensor(env.subgoal.copy(), device=core.device)
        z = torch.where(need[:, None], table[next_subgoal], z)
        decisions += need.cpu().numpy()
        _, done, need = core.advance(z, need)
        if bool(done.all()):
            break
    return {"success": float(env.success.mean()),
            "colours_visited_histogram": np.bincount(env.progress, minlength=int(env.task_len.max()) + 1).tolist(),
            "wrong_colour_histogram": ending_histograms(env.progress, env.wrong_colour,
                                                        env.config.n_colors)["wrong_colour_hist"],
            "decisions_per_episode": float(decisions.mean()), "episodes": episodes}
