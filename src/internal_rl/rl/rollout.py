"""Batched evaluation rollouts of a (possibly controlled) base model in gridworld-pinpad.

All N episodes advance in lockstep with one KV cache; finished episodes keep stepping as no-ops
(the env ignores their actions) so the batch never has to be reshaped.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from internal_rl.envs.pinpad import BatchedPinPad, PinPadConfig, ending_histograms
from internal_rl.models.sequence_model import SequenceModel

StepControl = Callable[[Tensor, BatchedPinPad], Tensor]
"""control(e_t (N, D), env) -> ê_t: may read the env's ground-truth state (for oracle controllers)."""


def check_temperature(temperature: float) -> float:
    """A primitive-action temperature must be a finite number ≥ 0 (0 = argmax)."""
    if not (temperature >= 0 and temperature < float("inf")):
        raise ValueError(f"action temperature must be a finite number >= 0 (0 = argmax), got {temperature}")
    return float(temperature)


def tempered_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """softmax(logits / τ) over the last axis; τ = 0 puts all mass on the argmax (first index on ties)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits.float() / temperature, -1)


def sample_actions(logits: Tensor, generator: torch.Generator | None, temperature: float = 1.0) -> Tensor:
    """Sample discrete actions from softmax(logits / temperature) (N, A); the argmax at τ = 0.

    τ = 1 samples the model's own distribution (the paper's rollouts); τ < 1 sharpens it, an analysis
    knob for how much of a failure rate is sampling noise of the frozen base.
    """
    if check_temperature(temperature) == 0:
        return logits.argmax(-1)
    return torch.multinomial(tempered_probs(logits, temperature), 1, generator=generator)[:, 0]


@torch.no_grad()
def evaluate(model: SequenceModel, tasks: str | list[str] | None, episodes: int, seed: int,
             control: StepControl | None = None, layer: int | None = None, batch_size: int = 256,
             env_config: PinPadConfig | None = None, temperature: float = 1.0) -> dict:
    """Success rate of the model acting in fresh layouts of `tasks` (None: pretraining tasks), sampling its
    actions at `temperature` (1: as trained; 0: argmax).

    Also says where episodes end: `progress_hist[k]` counts episodes that ended (or were truncated)
    after k correct colours, `wrong_colour_hist[c]` the failed ones that ended by entering colour c.
    """
    model.eval()
    p = next(model.parameters())
    successes, lengths, progress, wrong = [], [], [], []
    for b, start in enumerate(range(0, episodes, batch_size)):
        n = min(batch_size, episodes - start)
        env = BatchedPinPad(n, env_config, seed=seed + 7919 * b)
        obs = env.reset(tasks if tasks is None or isinstance(tasks, str) else tasks[start:start + n])
        g = torch.Generator(device=p.device).manual_seed(seed + 104729 * b)
        cache = model.new_cache(n, env.config.max_steps)
        prev = torch.full((n,), -1, dtype=torch.long, device=p.device)
        for _ in range(env.config.max_steps):
            x = torch.from_numpy(obs).to(p.device, p.dtype)
            e = model.lower_step(x, cache, prev if model.prev_action is not None else None, layer)
            if control is not None:
                e = control(e, env)
            out = model.upper_step(e, cache, layer, predict_obs=False)
            a = sample_actions(out.action_logits, g, temperature)
            obs, _, term, trunc, _ = env.step(a.cpu().numpy())
            prev = a
            if np.all(term | trunc):
                break
        successes.append(env.success.copy())
        lengths.append(env.step_count.copy())
        progress.append(env.progress.copy())
        wrong.append(env.wrong_colour)
    s = np.concatenate(successes)
    return {"success": float(s.mean()), "episodes": int(s.size), "mean_length": float(np.concatenate(lengths).mean()),
            **ending_histograms(np.concatenate(progress), np.concatenate(wrong), env.config.n_colors)}
