"""The gridworld-pinpad expert of the paper: a stochastic shortest-path policy (App. A.1).

At every step the expert moves towards the next colour of the task along a shortest path in which
walls and every *other* coloured cell are obstacles (stepping on a wrong colour ends the episode),
choosing uniformly among the optimal moves. The BFS distance maps come from the env
(``BatchedPinPad.dist_to_color``, computed once per layout on reset for every colour), so a step
costs a few gathers over the batch.

The ε-noisy expert replaces its action, with probability ε, by a uniformly random
*non-terminating* action: any action that does not step onto a wrong colour (a no-op into a wall
or off the grid is allowed; stepping onto the target colour is allowed).
"""

from __future__ import annotations

import numpy as np

from internal_rl.envs.pinpad import _UNREACHABLE, NUM_ACTIONS, BatchedPinPad


class ShortestPathExpert:
    """Batched stochastic shortest-path expert with optional ε-noise (ε=0 is the paper's D* expert)."""

    def __init__(self, eps: float = 0.0) -> None:
        """``eps``: probability of replacing the action by a random non-terminating one."""
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must lie in [0, 1], got {eps}")
        self.eps = float(eps)
        self._nbr_cache: dict[int, np.ndarray] = {}

    def _next_cells(self, env: BatchedPinPad) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) cell reached by each action (walls and edges = stay) and (N, 4) whether it moves."""
        g = env.config.grid
        nbr = self._nbr_cache.get(g)
        if nbr is None:
            rows, cols = np.divmod(np.arange(g * g), g)
            nr = np.clip(rows[:, None] + np.array([-1, 1, 0, 0]), 0, g - 1)
            nc = np.clip(cols[:, None] + np.array([0, 0, -1, 1]), 0, g - 1)
            nbr = self._nbr_cache[g] = nr * g + nc
        cur = env.agent_cell
        nxt = nbr[cur]  # (N, 4)
        rows = np.arange(env.num_envs)[:, None]
        nxt = np.where(env.cell_wall[rows, nxt], cur[:, None], nxt)
        return nxt, nxt != cur[:, None]

    def action_probs(self, env: BatchedPinPad) -> np.ndarray:
        """(N, 4) float64 ε=0 policy: uniform over the moves that shorten the path to the target colour.

        Used to sample actions and to compute the expert's entropy floor. Done episodes get a valid
        (but meaningless) distribution.
        """
        nxt, moves = self._next_cells(env)
        rows = np.arange(env.num_envs)[:, None]
        d = env.dist_to_color[rows, env.target_color[:, None], nxt].astype(np.int64)
        d[~moves] = _UNREACHABLE  # a no-op never gets closer
        best = d.min(axis=1, keepdims=True)
        optimal = d == best
        if np.any(best[:, 0] >= _UNREACHABLE):
            # Only possible for a layout where the target is cut off (never sampled) or a done episode.
            optimal[best[:, 0] >= _UNREACHABLE] = True
        return optimal / optimal.sum(axis=1, keepdims=True)

    def safe_actions(self, env: BatchedPinPad) -> np.ndarray:
        """(N, 4) bool: the ε-noise support, actions that neither step onto a wrong colour nor into a pocket
        from which the target can no longer be reached (cut off by colours: leaving a just-visited colour
        back into the side it came from, when it is the only passage, would otherwise trap the expert)."""
        nxt, moves = self._next_cells(env)
        rows = np.arange(env.num_envs)[:, None]
        colour = env.cell_color[rows, nxt]
        reachable = env.dist_to_color[rows, env.target_color[:, None], nxt] < _UNREACHABLE
        return ~moves | ((colour < 0) & reachable) | (colour == env.target_color[:, None])

    def act(self, env: BatchedPinPad, rng: np.random.Generator) -> np.ndarray:
        """Sample (N,) int64 actions: the shortest-path policy, ε-replaced by safe random actions."""
        probs = self.action_probs(env)
        actions = _sample_categorical(probs, rng)
        if self.eps > 0.0:
            noisy = rng.random(env.num_envs) < self.eps
            if noisy.any():
                safe = self.safe_actions(env)[noisy]
                safe[~safe.any(axis=1)] = True  # cannot happen in a live episode; keeps done ones finite
                actions[noisy] = _sample_categorical(safe / safe.sum(axis=1, keepdims=True), rng)
        return actions


def _sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one index per row of an (N, K) probability matrix (inverse-CDF, vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def policy_entropy(probs: np.ndarray) -> np.ndarray:
    """(N,) entropy in nats of each row of an (N, K) action distribution."""
    p = np.clip(probs, 1e-300, 1.0)
    return -(np.where(probs > 0, probs * np.log(p), 0.0)).sum(axis=1)


__all__ = ["ShortestPathExpert", "policy_entropy", "NUM_ACTIONS"]
