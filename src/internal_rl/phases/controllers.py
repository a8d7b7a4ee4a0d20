"""Ground-truth controllers (paper App. C.3): one controller per subgoal, selected by the true label.

Implemented as the metacontroller's decoder with β≡1 and z = onehot(subgoal id): ê = e + U(z) e
at a chosen layer, trained by action NLL on D* with the base frozen. Evaluated by switching the
controllers on in the right order on the post-training task (the env reports which subgoal is being
pursued; the controller changes when a subgoal is completed). Sweeping the layer shows where control
works best. Writes controllers.json (post_task_success per layer, and where the post-task episodes
ended: colours completed and the wrong colour entered) and a plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from internal_rl.control.controller import HyperDecoder
from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad
from internal_rl.models.sequence_model import SequenceModel, freeze, prev_actions_of
from internal_rl.phases.common import resolve_device, set_seed, set_threads, write_json
from internal_rl.rl.rollout import check_temperature, evaluate


@dataclass
class ControllersConfig:
    """Ground-truth controller training and evaluation (paper C.3: rank 16, 3,200 steps, batch 512, lr 1e-3)."""

    model: str = "runs/demo/pretrain"
    data: str = "runs/demo/data"
    """Data folder holding D_star/ and D_star_heldout/."""
    out: str = "runs/demo/controllers"
    layers: list[int] = field(default_factory=list)
    """Control layers to sweep (empty: every layer 1..L−1)."""
    n_subgoals: int = 4
    rank: int = 16
    hidden: int = 32
    full_rank: bool = False
    steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.03
    eval_episodes: int = 256
    action_temperature: float = 1.0
    """Evaluation rollouts draw actions from softmax(logits / τ): 1 samples the base as trained (the default),
    0 takes the argmax."""
    also_temperatures: list[float] = field(default_factory=list)
    """Also score each layer's controllers on the post-training task at these temperatures (same episodes),
    written as post_task_success_at_temperature: how much of the failure rate is sampling noise."""
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""
    progress: bool = True


def controller_loss(model: SequenceModel, decoder: HyperDecoder, batch: dict, layer: int, n_subgoals: int
                    ) -> torch.Tensor:
    """Masked mean action NLL of the base model controlled by z = onehot(true subgoal) at `layer`."""
    T = batch["actions"].shape[1]
    pa = prev_actions_of(batch["actions"]) if model.prev_action is not None else None
    with torch.no_grad():
        e = model.lower(batch["obs"][:, :T], pa, layer)
    z = F.one_hot(batch["subgoals"].clamp(min=0), n_subgoals).to(e.dtype)
    out = model.upper(decoder.control(e, z), layer)
    m = batch["mask"].float()
    return -(model.action_logp(out, batch["actions"]) * m).sum() / m.sum().clamp(min=1)


def oracle_control(decoder: HyperDecoder, n_subgoals: int):
    """Control that applies the controller of the subgoal the env says is being pursued."""

    def control(e: torch.Tensor, env: BatchedPinPad) -> torch.Tensor:
        sg = torch.from_numpy(np.clip(env.subgoal, 0, n_subgoals - 1)).to(e.device)
        return decoder.control(e, F.one_hot(sg, n_subgoals).to(e.dtype))

    return control


def run_controllers(cfg: ControllersConfig) -> dict:
    """Train one set of ground-truth controllers per layer and evaluate each on the post-training task."""
    set_threads(cfg.threads)
    rng = set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = freeze(SequenceModel.from_pretrained(cfg.model)).to(device)
    data = Path(cfg.data)
    train = Trajectories.load(data / "D_star")
    heldout = Trajectories.load(data / "D_star_heldout")
    layers = cfg.layers or list(range(1, model.config.depth))
    for layer in layers:
        model.config.check_layer(layer, "--layers entry")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tau = check_temperature(cfg.action_temperature)
    for t in cfg.also_temperatures:
        check_temperature(t)
    base = evaluate(model, POST_TRAINING_TASK, cfg.eval_episodes, seed=cfg.seed + 1, temperature=tau)
    base_pre = evaluate(model, None, cfg.eval_episodes, seed=cfg.seed + 2, temperature=tau)
    res: dict = {"layers": layers, "post_task_success": [], "pretrain_task_success": [], "heldout_nll": [],
                 "base_post_task_success": base["success"], "base_pretrain_task_success": base_pre["success"],
                 "eval_episodes": cfg.eval_episodes, "action_temperature": tau}
    for layer in layers:
        torch.manual_seed(cfg.seed + layer)
        dec = HyperDecoder(cfg.n_subgoals, model.config.d_model, cfg.hidden, cfg.rank, cfg.full_rank).to(device)
        opt = torch.optim.AdamW(dec.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        for _ in tqdm(range(cfg.steps), desc=f"controllers@{layer}", disable=not cfg.progress, leave=False):
            loss = controller_loss(model, dec, train.batch(rng.integers(0, len(train), cfg.batch_size), device),
                                   layer, cfg.n_subgoals)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            hb = heldout.batch(np.arange(min(len(heldout), 512)), device)
            res["heldout_nll"].append(controller_loss(model, dec, hb, layer, cfg.n_subgoals).item())
        ctrl = oracle_control(dec, cfg.n_subgoals)
        post = evaluate(model, POST_TRAINING_TASK, cfg.eval_episodes, cfg.seed + 1, ctrl, layer, temperature=tau)
        res["post_task_success"].append(post["success"])
        res.setdefault("post_task_progress_hist", []).append(post["progress_hist"])
        res.setdefault("post_task_wrong_colour_hist", []).append(post["wrong_colour_hist"])
        res.setdefault("post_task_wrong_colour_progress_hist", []).append(post["wrong_colour_progress_hist"])
        res["pretrain_task_success"].append(
            evaluate(model, None, cfg.eval_episodes, cfg.seed + 2, ctrl, layer, temperature=tau)["success"])
        for t in cfg.also_temperatures:
            ev = evaluate(model, POST_TRAINING_TASK, cfg.eval_episodes, cfg.seed + 1, ctrl, layer, temperature=t)
            res.setdefault("post_task_success_at_temperature", {}).setdefault(str(t), []).append(ev["success"])
            res.setdefault("post_task_progress_hist_at_temperature", {}).setdefault(str(t), []).append(
                ev["progress_hist"])
        save_file({k: v.cpu().contiguous() for k, v in dec.state_dict().items()}, out / f"controllers_layer{layer}.safetensors")
        print(f"layer {layer}: post-task success {res['post_task_success'][-1]:.3f}, "
              f"pretraining tasks {res['pretrain_task_success'][-1]:.3f}, held-out NLL {res['heldout_nll'][-1]:.3f}"
              + "".join(f", post-task at τ={t}: {v[-1]:.3f}"
                        for t, v in res.get("post_task_success_at_temperature", {}).items()))
    best = int(np.argmax(res["post_task_success"]))
    res["best_layer"] = layers[best]
    res["best_post_task_success"] = res["post_task_success"][best]
    write_json(out / "controllers.json", res)
    from internal_rl.analysis.plots import plot_controllers

    plot_controllers(res, out / "controllers.png")
    return res
