"""The BabyAI expert: minigrid's own bot (``minigrid.utils.baby_ai_bot.BabyAIBot``) driving ``BatchedBabyAI``.

One bot per episode, created right after the env's reset (the bot parses the mission into a *stack of
subgoals* and replans every step). ``BabyAIBotExpert.act(env)`` asks every live episode's bot for its
action and returns, with it, a ground-truth **subgoal id** for analysis (never a model input):

    subgoal id = index of the mission clause being carried out, in execution order (0, 1, ...).

It is read off the bot's stack: the bot starts with one subgoal per clause (for "go to" clauses, a
``GoNextToSubgoal``), stacked so the first clause is on top; it only ever pops the top, and the helper
subgoals it pushes (exploring, opening a door on the way) sit above the clause they serve. So after
``replan`` the clause being pursued is ``n_clauses − (initial clause subgoals still on the stack)``;
the id increments exactly when the bot completes a clause (pops its subgoal), which is the boundary
that ``analysis.segmentation`` compares the metacontroller's switches with. For go-to levels this is
the same as the index of the stack's bottom-most pending ``GoNextToSubgoal``. The kind of the stack's
top subgoal (e.g. ``GoNextToSubgoal`` vs ``ExploreSubgoal``) is returned too (``top_kinds``) but not
stored in datasets.

ε-noise (for robustness data): with probability ε an episode takes a random move (left, right or
forward: never pickup/drop/toggle, which could open a box and make the bot give up) instead of the
bot's action; the bot is told the action actually taken (``replan(action_taken)``) and plans around it.
"""

from __future__ import annotations

import numpy as np

from internal_rl.envs.babyai import NUM_ACTIONS, BatchedBabyAI, require_minigrid

NOISE_ACTIONS = np.array([0, 1, 2])  # left, right, forward


class BabyAIBotExpert:
    """Per-episode BabyAI bots over a ``BatchedBabyAI``; call ``reset(env)`` after every ``env.reset``."""

    def __init__(self, eps: float = 0.0):
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must lie in [0, 1], got {eps}")
        self.eps = float(eps)

    def reset(self, env: BatchedBabyAI) -> None:
        """Create a fresh bot for each (just reset) episode of ``env``."""
        require_minigrid()
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.bots = [BabyAIBot(e) for e in env.envs]
        self.clauses = [list(b.stack) for b in self.bots]  # the initial subgoals, one per clause
        self.n_clauses = np.array([len(c) for c in self.clauses], dtype=np.int64)
        self.last_taken: list[int | None] = [None] * env.num_envs
        self.failed = np.zeros(env.num_envs, dtype=bool)
        """Episodes whose bot gave up (raised, or answered 'done' before the episode ended)."""

    def subgoal_ids(self) -> np.ndarray:
        """(N,) index of the clause each bot is carrying out (see the module docstring)."""
        out = np.zeros(len(self.bots), dtype=np.int64)
        for i, (bot, clauses) in enumerate(zip(self.bots, self.clauses)):
            on_stack = {id(s) for s in bot.stack}
            remaining = sum(id(c) in on_stack for c in clauses)
            out[i] = min(len(clauses) - remaining, max(len(clauses) - 1, 0))
        return out

    def act(self, env: BatchedBabyAI, rng: np.random.Generator | None = None
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(actions (N,), subgoal ids (N,), top_kinds) for the live episodes (0 / -1 / '' for finished ones).

        Must be called once per env step, before ``env.step`` (the bot replans from the current state).
        An episode whose bot fails is marked in ``failed`` and gets action 0 (turn left).
        """
        n = env.num_envs
        actions = np.zeros(n, dtype=np.int64)
        top = [""] * n
        live = ~env.done
        for i in np.flatnonzero(live & ~self.failed).tolist():
            bot = self.bots[i]
            try:
                a = int(bot.replan(self.last_taken[i]))
            except Exception:  # the bot raises on situations it cannot handle (e.g. an opened box)
                self.failed[i] = True
                continue
            if a >= NUM_ACTIONS:  # 'done' while the episode is still running: the bot thinks it is finished
                self.failed[i] = True
                continue
            top[i] = type(bot.stack[-1]).__name__ if bot.stack else ""
            taken = a
            if self.eps > 0 and rng is not None and rng.random() < self.eps:
                taken = int(rng.choice(NOISE_ACTIONS))
            self.last_taken[i] = None if taken == a else taken
            actions[i] = taken
        subgoals = np.where(live, self.subgoal_ids(), -1)
        return actions, subgoals, top


def run_bot(env: BatchedBabyAI, seeds, eps: float = 0.0, rng: np.random.Generator | None = None) -> dict:
    """Play one batch of episodes (``seeds``: one per env) with the bot; padded arrays of what happened.

    Returns obs (N, T+1, D) float32, actions (N, T) and subgoals (N, T) (padding 0 / -1), lengths (N,),
    success (N,), bot_failed (N,) and missions (N,); T = ``env.config.max_steps``.
    """
    expert = BabyAIBotExpert(eps)
    obs = env.reset(list(seeds))
    expert.reset(env)
    n, T = env.num_envs, env.config.max_steps
    obs_buf = np.zeros((n, T + 1, env.obs_dim), dtype=np.float32)
    actions = np.zeros((n, T), dtype=np.int64)
    subgoals = np.full((n, T), -1, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    obs_buf[:, 0] = obs
    for t in range(T):
        live = ~env.done & ~expert.failed
        if not live.any():
            break
        a, sg, _ = expert.act(env, rng)
        live &= ~expert.failed  # bots that gave up on this step stop here
        a = np.where(live, a, 0)
        idx = np.flatnonzero(live)
        actions[idx, t], subgoals[idx, t] = a[idx], sg[idx]
        # An episode whose bot gave up ends here (marked truncated, so the env stops stepping it).
        env.truncated |= expert.failed & ~env.done
        obs, *_ = env.step(a)
        obs_buf[idx, t + 1] = obs[idx]
        lengths[idx] += 1
    return {"obs": obs_buf, "actions": actions, "subgoals": subgoals, "lengths": lengths,
            "success": env.success.copy(), "bot_failed": expert.failed.copy(), "missions": list(env.missions)}
