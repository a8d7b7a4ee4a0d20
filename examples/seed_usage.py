"""The first seed's usage example, runnable end to end on gridworld-pinpad with small sizes (< 1 min on CPU).

    python examples/seed_usage.py [--steps 60] [--rl-iters 5] [--generations 3]

1. initialise a Transformer over (637-dim pinpad observation, 4 actions);
2. behaviour cloning on shortest-path expert demonstrations of the pretraining tasks;
3. discovery: train a MetaController on the frozen model;
4. internal RL (GRPO): roll the controlled model out on the post-training task with the KV cache,
   sampling z from the policy whenever the switch fires, and take clipped policy-gradient steps;
5. evolution strategies over the same policy parameters.
The sizes are far too small (and the runs far too short) to solve the post-training task; the point
is the API. For the real experiments use the ``internal-rl`` CLI.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from internal_rl import MetaController, Transformer
from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad


def expert_batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n expert episodes as padded (state (B, T, 637), actions (B, T), mask (B, T))."""
    b = generate_pinpad(n, eps=0.0, seed=int(rng.integers(2**31)), progress=False).batch(np.arange(n))
    return b["obs"][:, :-1], b["actions"], b["mask"]


@torch.no_grad()
def collect(model: Transformer, meta_controller: MetaController, n: int, seed: int) -> dict[str, torch.Tensor]:
    """One group of n episodes on the post-training task, recording what policy_loss needs."""
    env = BatchedPinPad(n, seed=seed)
    one_state = torch.from_numpy(env.reset(POST_TRAINING_TASK))
    past_action_id, cache = None, None
    keys = ("states", "old_log_probs", "latent_actions", "switch_betas", "mask")
    rec: dict[str, list] = {k: [] for k in keys}
    while not env.done.all():
        logits, cache = model(one_state, past_action_id, meta_controller=meta_controller, return_cache=True,
                              cache=cache)
        meta_output = cache.prev_hiddens.meta_controller
        rec["old_log_probs"].append(meta_controller.log_prob(meta_output.action_dist, meta_output.actions))
        rec["states"].append(meta_output.input_residual_stream)
        rec["latent_actions"].append(meta_output.actions)
        rec["switch_betas"].append(meta_output.switch_beta)
        rec["mask"].append(torch.from_numpy(~env.done))
        past_action_id = torch.distributions.Categorical(logits=logits).sample()
        obs, *_ = env.step(past_action_id.numpy())
        one_state = torch.from_numpy(obs)
    out = {k: torch.stack(v, 1) for k, v in rec.items()}
    out["returns"] = torch.from_numpy(env.success.astype(np.float32))
    out["progress"] = torch.from_numpy(env.progress.astype(np.float32))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="BC and discovery steps")
    ap.add_argument("--rl-iters", type=int, default=5)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny ops: 1 is fastest, esp. on a busy box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    # 1. initialize model
    model = Transformer(
        64,
        action_embed_readout=dict(num_discrete=4),
        state_embed_readout=dict(num_continuous=637),
        lower_body=dict(depth=2),
        upper_body=dict(depth=2),
        heads=4,
    )

    # 2. behavioral cloning (BC)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(args.steps):
        state, actions, mask = expert_batch(32, rng)
        state_loss, action_loss = model(state, actions, mask=mask)
        opt.zero_grad()
        (state_loss + action_loss).backward()
        opt.step()
    print(f"BC        state_loss {state_loss.item():.3f}  action_loss {action_loss.item():.3f}  ({time.time() - t0:.1f} s)")

    # 3. discovery phase (the base model gets no gradient here)
    meta_controller = MetaController(dim_model=64, dim_meta_controller=32, dim_latent=8, alpha=0.1)
    opt = torch.optim.AdamW(meta_controller.discovery_parameters(), lr=1e-3)
    for step in range(args.steps):
        state, actions, mask = expert_batch(32, rng)
        action_recon_loss, kl_loss, switch_loss = model(
            state, actions, meta_controller=meta_controller, discovery_phase=True, mask=mask
        )
        opt.zero_grad()
        (action_recon_loss + kl_loss + switch_loss).backward()
        opt.step()
    print(f"discovery recon {action_recon_loss.item():.3f}  kl {kl_loss.item():.3f}")

    # 4. internal rl phase (GRPO)
    opt = torch.optim.Adam(meta_controller.internal_rl_parameters(), lr=3e-4)
    for it in range(args.rl_iters):
        group = collect(model, meta_controller, 32, seed=args.seed + it)
        returns = group["progress"]  # dense proxy: colours visited (the task's 0/1 reward is ~never reached here)
        group_advantages = (returns - returns.mean()) / (returns.std(unbiased=False) + 1e-3)
        loss = meta_controller.policy_loss(
            group["states"], group["old_log_probs"], group["latent_actions"], group_advantages,
            group["switch_betas"], mask=group["mask"],
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sw = meta_controller.switch_mask(group["switch_betas"], group["mask"]).sum(1).float().mean()
        print(f"GRPO {it}    loss {loss.item():+.4f}  mean progress {returns.mean():.2f}  switches/episode {sw:.1f}")

    # 5. evolve (ES over the same policy parameters)
    model.meta_controller = meta_controller

    def environment_callable(model: Transformer) -> float:
        return float(collect(model, model.meta_controller, 16, seed=1000)["progress"].mean())

    history = model.evolve(num_generations=args.generations, environment=environment_callable, population_size=8,
                           sigma=0.02, lr=0.01, seed=args.seed)
    for g, h in enumerate(history):
        print(f"ES {g}      fitness mean {h['fitness_mean']:.2f}  max {h['fitness_max']:.2f}")
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
