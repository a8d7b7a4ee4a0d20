"""The option-level environment (paper Alg. 1): the action is a latent code z, the observation is the
residual stream e at the step where the metacontroller's switching unit fires.

Inside: the underlying env, the frozen base model (with KV cache), the frozen decoder f_hyp, history
GRU and switching unit. Given z, primitive steps repeat: U = f_hyp(z); upper blocks on ê = e + U e;
sample the primitive action; step the env; lower blocks on the new observation give e; h and
β = f_switch(e, h, z) update; until β ≥ threshold (a new decision) or the episode ends.

`OptionCore` runs N episodes in lockstep at the primitive level: each episode asks for a new z
whenever its own switch fires, so one batched model call serves every episode at every step.
`OptionEnv` is the single-episode gymnasium view of it (any gymnasium agent can drive it).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor

from internal_rl.control.metacontroller import MetaController
from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad, PinPadConfig
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.rl.rollout import check_temperature, tempered_probs


class OptionCore:
    """Lockstep engine over N episodes. `reset()` → e; then `advance(z, decide)` one primitive step at a time."""

    def __init__(self, model: SequenceModel, mc: MetaController, layer: int, num_envs: int,
                 task: str | None = POST_TRAINING_TASK, env_config: PinPadConfig | None = None,
                 seed: int | None = None, beta_threshold: float | None = None, env: Any = None,
                 compact: bool = True, oracle_switch: bool = False, action_temperature: float = 1.0,
                 group_size: int = 1):
        """`env`: a batched env with BatchedPinPad's interface (e.g. envs.babyai.BatchedBabyAI) to use
        instead of a new BatchedPinPad; its num_envs must equal `num_envs`, and `task` is passed to its reset.
        `compact`: drop finished episodes from the model batch (same trajectories, less work).
        `oracle_switch`: an upper-bound analysis, not the paper's method: a decision is asked for exactly when
        the env's ground-truth subgoal changes (the env must expose `subgoal`), not when β fires.
        `action_temperature`: primitive actions are drawn from softmax(logits / τ) of the controlled base;
        1 (default) is the paper's sampling, 0 takes the argmax (an analysis knob, not the paper's method).
        `group_size`: consecutive episodes in groups of this size share a layout (GRPO groups); passed to the
        env's reset."""
        self.model, self.mc, self.layer = model.eval(), mc.eval(), layer
        if env is not None and env.num_envs != num_envs:
            raise ValueError(f"env has {env.num_envs} episodes but num_envs is {num_envs}")
        self.env = env if env is not None else BatchedPinPad(num_envs, env_config, seed=seed)
        self.task = task
        self.n = num_envs
        self.threshold = mc.config.beta_threshold if beta_threshold is None else beta_threshold
        self.always_switch = mc.config.always_switch
        self.oracle_switch = oracle_switch
        self.action_temperature = check_temperature(action_temperature)
        if oracle_switch and not hasattr(self.env, "subgoal"):
            raise ValueError("oracle_switch needs an env that exposes its ground-truth `subgoal`")
        # the sampling generator stays on the CPU, so a run draws the same random numbers on any device
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self.compact = compact
        self.group_size = group_size

    @torch.no_grad()
    def reset(self, seed: int | None = None) -> Tensor:
        """New episodes; returns e_1 (N, D). Every episode needs a decision (β_1 = 1)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        obs = self.env.reset(self.task, seed=seed, group_size=self.group_size)
        self.cache = self.model.new_cache(self.n, self.env.config.max_steps)
        dev = self.device
        self.rows = torch.arange(self.n, device=dev)  # episodes the model still runs (the cache holds these rows)
        self.prev_action = torch.full((self.n,), -1, dtype=torch.long, device=dev)
        self.e = self._lower(obs)
        self.h = self.mc.initial_state(self.n, device=dev, dtype=self.dtype).h
        self.z = torch.zeros(self.n, self.mc.config.n_z, dtype=self.dtype, device=dev)
        self.need = torch.ones(self.n, dtype=torch.bool, device=dev)
        self.done = torch.zeros(self.n, dtype=torch.bool, device=dev)
        if self.oracle_switch:
            self.subgoal = np.asarray(self.env.subgoal).copy()
        return self.e

    def _lower(self, obs: np.ndarray) -> Tensor:
        r = self.rows
        pa = self.prev_action[r] if self.model.prev_action is not None else None
        x = torch.from_numpy(obs[r.cpu().numpy()]).to(self.device, self.dtype)
        return self.model.lower_step(x, self.cache, pa, self.layer)

    @torch.no_grad()
    def advance(self, z: Tensor, decide: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One primitive step. Rows in `decide` adopt their new code z; returns (reward, done, need) (N,).

        `need[i]` says episode i's switch fired at its new e (it wants a new z at the next call). Once half
        of the running episodes have ended, the finished ones are dropped from the batch (and the KV cache),
        so a few long episodes do not keep the whole batch busy.
        """
        self.z = torch.where(decide[:, None], z.to(self.dtype), self.z)
        r = self.rows
        e_hat = self.mc.decoder.control(self.e[r], self.z[r])
        logits = self.model.upper_step(e_hat, self.cache, self.layer, predict_obs=False).action_logits
        # inverse-CDF sampling with one uniform per episode (not per running row), so the random stream
        # and hence every trajectory is the same whether or not finished episodes were dropped
        u = torch.rand(self.n, generator=self.generator).to(self.device)[r]
        cdf = torch.cumsum(tempered_probs(logits, self.action_temperature), -1)
        a_r = (cdf < u[:, None]).sum(-1).clamp(max=logits.shape[-1] - 1)
        a = torch.zeros(self.n, dtype=torch.long, device=self.device)
        a[r] = a_r
        obs, reward, term, trunc, _ = self.env.step(a.cpu().numpy())
        self.h[r] = self.mc.history_step(self.e[r], self.h[r])
        self.prev_action[r] = a_r
        self.done = torch.from_numpy(term | trunc).to(self.device)
        self.need = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        if not bool(self.done.all()):
            alive = ~self.done[r]
            if self.compact and int(alive.sum()) <= len(r) // 2:
                keep = alive.nonzero()[:, 0]
                self.cache = self.cache.index_select(keep)
                self.rows = r = r[keep]
            e_r = self._lower(obs)
            self.e[r] = e_r
            if self.oracle_switch:
                now = np.asarray(self.env.subgoal).copy()
                changed = torch.from_numpy(now != self.subgoal).to(self.device)
                self.subgoal = now
                beta = changed[r].to(self.dtype)
            elif self.always_switch:
                beta = torch.ones(len(r), dtype=self.dtype, device=self.device)
            else:
                beta = self.mc.switch(e_r, self.h[r], self.z[r])
            self.need[r] = (beta >= self.threshold) & ~self.done[r]
        return torch.from_numpy(reward).to(self.device), self.done, self.need

    @property
    def env_steps(self) -> np.ndarray:
        """Primitive steps taken so far per episode."""
        return self.env.step_count.copy()


class OptionEnv(gymnasium.Env):
    """Single-episode option-level env: action z ∈ R^{n_z}, observation e at the switch, summed reward."""

    metadata = {"render_modes": []}

    def __init__(self, model: SequenceModel, mc: MetaController, layer: int,
                 task: str | None = POST_TRAINING_TASK, env_config: PinPadConfig | None = None):
        self.core = OptionCore(model, mc, layer, 1, task, env_config)
        d, nz = model.config.d_model, mc.config.n_z
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (d,), np.float32)
        self.action_space = gymnasium.spaces.Box(-np.inf, np.inf, (nz,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        e = self.core.reset(seed)
        return e[0].float().cpu().numpy(), {}

    def step(self, action):
        z = torch.as_tensor(np.asarray(action, dtype=np.float32), device=self.core.device).reshape(1, -1)
        if z.shape[1] != self.core.mc.config.n_z:
            raise ValueError(f"action must have {self.core.mc.config.n_z} entries, got {z.shape[1]}")
        dev = self.core.device
        total, steps, decide = 0.0, 0, torch.ones(1, dtype=torch.bool, device=dev)
        while True:
            r, done, need = self.core.advance(z, decide)
            decide = torch.zeros(1, dtype=torch.bool, device=dev)
            total += float(r[0])
            steps += 1
            if bool(done[0]) or bool(need[0]):
                break
        env = self.core.env
        info = {"primitive_steps": steps, "success": bool(env.success[0])}
        return (self.core.e[0].float().cpu().numpy(), total, bool(env.terminated[0]), bool(env.truncated[0]), info)
