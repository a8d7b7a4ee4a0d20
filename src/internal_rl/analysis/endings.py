"""Where episodes end, as a hazard per task position: of the episodes that had visited k correct colours,
the fraction that ended there (on a wrong colour, or by running out of time).

A success rate hides where a chain of subgoals breaks. On gridworld-pinpad the positions alternate
between choosing the next pair (even k: what a high-level policy or a controller decides) and finishing
the pair (odd k: the partner of the colour just visited, which the base model knows from pretraining), so
the hazard profile separates the two (docs/RESULTS.md, Session 8).
"""

from __future__ import annotations

import numpy as np


def hazards(progress_hist: list[int], task_len: int, ended_hist: list[int] | None = None) -> np.ndarray:
    """(task_len,) hazard per position k = ended_hist[k] / episodes that reached k.

    `progress_hist[k]`: episodes that ended after k correct colours (all endings, successes at task_len).
    `ended_hist`: the endings to count (e.g. `wrong_colour_progress_hist`, only wrong colours); default all
    endings before task_len. Positions no episode reached get NaN.
    """
    h = np.zeros(task_len + 1)
    given = np.asarray(progress_hist, dtype=float)
    if given.size > task_len + 1 or (given < 0).any():
        raise ValueError(f"progress_hist must hold 0..{task_len} counts ≥ 0, got {len(given)} entries")
    h[: given.size] = given
    ended = h if ended_hist is None else np.pad(np.asarray(ended_hist, dtype=float), (0, task_len + 1))[: task_len + 1]
    if (ended > h).any():
        raise ValueError("ended_hist counts more endings than progress_hist at some position")
    reached = h.sum() - np.concatenate([[0.0], np.cumsum(h)[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(reached[:task_len] > 0, ended[:task_len] / reached[:task_len], np.nan)
