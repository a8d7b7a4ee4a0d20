"""Linear probes (paper App. C.2): decode the ground-truth subgoal g_t from each layer's residual stream.

p(g_t | e_{t,l}) = softmax(W_l e_{t,l} + b_l), one probe per layer, trained on instantaneous
activations with AdamW (weight decay 0) and scored by held-out accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from internal_rl.data.trajectories import Trajectories
from internal_rl.models.sequence_model import SequenceModel, prev_actions_of


@torch.no_grad()
def collect_residuals(model: SequenceModel, data: Trajectories, max_episodes: int,
                      batch_size: int = 256) -> tuple[list[Tensor], Tensor]:
    """Residual streams after every layer at valid steps: ([ (N_steps, D) per layer ], labels (N_steps,))."""
    model.eval()
    n = min(max_episodes, len(data))
    feats: list[list[Tensor]] = [[] for _ in range(model.config.depth + 1)]
    labels = []
    device = next(model.parameters()).device
    for s in range(0, n, batch_size):
        b = data.batch(np.arange(s, min(n, s + batch_size)), device)
        T = b["actions"].shape[1]
        pa = prev_actions_of(b["actions"]) if model.prev_action is not None else None
        out = model(b["obs"][:, :T], pa, return_residuals=True)
        m = b["mask"] & (b["subgoals"] >= 0)
        for layer, r in enumerate(out.residuals):
            feats[layer].append(r[m])
        labels.append(b["subgoals"][m])
    return [torch.cat(f) for f in feats], torch.cat(labels)


def train_probe(x: Tensor, y: Tensor, n_classes: int, steps: int = 500, lr: float = 1e-2,
                batch_size: int = 4096, seed: int = 0) -> torch.nn.Linear:
    """Fit a softmax-regression probe with AdamW (weight decay 0) on standardised features."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], n_classes).to(x.device)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g, device=x.device)
        loss = F.cross_entropy(probe(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe


def probe_layers(model: SequenceModel, train: Trajectories, test: Trajectories, n_classes: int,
                 max_episodes: int = 2000, steps: int = 500, seed: int = 0) -> dict:
    """Train one probe per layer on `train`, report train and held-out accuracy per layer."""
    xs, ys = collect_residuals(model, train, max_episodes)
    xt, yt = collect_residuals(model, test, max_episodes)
    result = {"layers": list(range(len(xs))), "train_accuracy": [], "test_accuracy": []}
    for x_tr, x_te in zip(xs, xt):
        mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
        probe = train_probe((x_tr - mu) / sd, ys, n_classes, steps=steps, seed=seed)
        with torch.no_grad():
            acc_tr = (probe((x_tr - mu) / sd).argmax(-1) == ys).float().mean().item()
            acc_te = (probe((x_te - mu) / sd).argmax(-1) == yt).float().mean().item()
        result["train_accuracy"].append(acc_tr)
        result["test_accuracy"].append(acc_te)
    counts = torch.bincount(yt, minlength=n_classes).float()
    result["majority_baseline"] = (counts.max() / counts.sum()).item()
    result["train_steps"] = int(ys.numel())
    result["test_steps"] = int(yt.numel())
    return result
