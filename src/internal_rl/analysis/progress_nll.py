"""Held-out action NLL split by task progress: how many colours the agent has visited so far.

In gridworld-pinpad the target after visiting one colour of a pair is fully determined (its partner),
so a model that has learned in-context subgoal inference has a much lower NLL there than before the
first colour of a pair (where the next pair is genuinely ambiguous). A flat profile means the model
navigates "to some colour" without using the history.

`post_task_nll_by_colours_visited` asks the same question on expert episodes of the post-training
task, whose pair-to-pair transitions never occur in pretraining: a low NLL at odd counts there means
the model applies the within-pair rule ("go to the partner of the colour just visited") even after an
unseen transition, a cheap teacher-forced sign of the compositional structure that ground-truth
controllers need (docs/RESULTS.md). High NLL at even counts is expected (the next pair is novel), but
not how high: `pair_choice_nll_max` is the worst of them, and on the quick recipe the bases whose
ground-truth controllers could not steer the post-training task were the ones where it reached 2 nats or
more (the model all but rules out the expert's next pair; docs/RESULTS.md, Session 16).
"""

from __future__ import annotations

import numpy as np
import torch

from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import PinPadConfig, colour_entries
from internal_rl.models.sequence_model import SequenceModel, prev_actions_of


@torch.no_grad()
def nll_by_colours_visited(model: SequenceModel, data: Trajectories, episodes: int = 1000, grid: int = 7,
                           n_colors: int = 8, max_visits: int = 6) -> list[dict]:
    """[{colours_visited: k, steps, nll}] over valid steps of the first `episodes` held-out episodes; k counts
    the moves onto a colour among o_0..o_t (the task colours visited before a_t, as the env's `progress`)."""
    model.eval()
    b = data.batch(np.arange(min(episodes, len(data))), next(model.parameters()).device)
    T = b["actions"].shape[1]
    pa = prev_actions_of(b["actions"]) if model.prev_action is not None else None
    nll = -model.action_logp(model(b["obs"][:, :T], pa), b["actions"])
    # A visit is a move onto a colour (colour_entries: standing on it again after a no-op does not count it twice)
    n_walls = b["obs"].shape[-1] // (grid * grid) - n_colors - 1
    entries = colour_entries(b["obs"][:, :T].cpu().numpy(), PinPadConfig(grid=grid, n_colors=n_colors, n_walls=n_walls))
    visited = torch.cumsum(torch.from_numpy(entries).long(), 1).to(b["mask"].device)
    rows = []
    for k in range(max_visits):
        sel = b["mask"] & (visited == k)
        if sel.any():
            rows.append({"colours_visited": k, "steps": int(sel.sum()), "nll": float(nll[sel].mean())})
    return rows


@torch.no_grad()
def post_task_nll_by_colours_visited(model: SequenceModel, episodes: int = 400, seed: int = 123) -> list[dict]:
    """`nll_by_colours_visited` on fresh expert episodes of the post-training task (12 colours)."""
    from internal_rl.data.pinpad_dataset import generate_pinpad
    from internal_rl.envs.pinpad import POST_TRAINING_TASK

    post = generate_pinpad(episodes, tasks=[POST_TRAINING_TASK], seed=seed, progress=False)
    return nll_by_colours_visited(model, post, episodes=episodes, max_visits=12)


def within_pair_mean(rows: list[dict]) -> float:
    """Step-weighted mean NLL over odd colour counts (the target is the pair partner)."""
    odd = [r for r in rows if r["colours_visited"] % 2 == 1]
    return sum(r["nll"] * r["steps"] for r in odd) / max(1, sum(r["steps"] for r in odd))


def pair_choice_nlls(rows: list[dict]) -> list[float]:
    """Mean NLL at even colour counts from 2 on, in order: the steps that head for the next pair after a
    completed one (on the post-training task, every such transition is one pretraining never shows)."""
    return [r["nll"] for r in rows if r["colours_visited"] % 2 == 0 and r["colours_visited"] >= 2]


def pair_choice_nll_max(rows: list[dict]) -> float:
    """The worst of `pair_choice_nlls`."""
    even = pair_choice_nlls(rows)
    if not even:
        raise ValueError("pair_choice_nll_max needs rows with an even colours_visited count of 2 or more")
    return max(even)
