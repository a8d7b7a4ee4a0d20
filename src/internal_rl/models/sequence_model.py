"""The base autoregressive model: encoder | lower blocks | control point | upper blocks | heads.

At step t the model has read o_1..o_t (and, if `prev_action_input`, a_1..a_{t−1}) and predicts
a_t and o_{t+1}. The residual stream e_{t,l} is exposed after every layer l (l=0 is the encoder
output, l=L the last block). A *control* callable may rewrite e at `control_layer` before the upper
blocks read it: this is where controllers and the metacontroller plug in (ê = e + U e).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from internal_rl.models.encoders import make_encoder
from internal_rl.models.transformer import Block, KVCache, variance_scaling_

Control = Callable[[Tensor], Tensor]


@dataclass
class SequenceModelConfig:
    """Architecture of the base model (paper App. D.1 defaults for gridworld)."""

    obs_dim: int = 637
    """Size of the flat observation vector."""
    n_actions: int = 4
    """Number of discrete actions (0 when actions are continuous)."""
    action_dim: int = 0
    """Dimension of continuous actions (Gaussian head with learned diagonal covariance); 0 if discrete."""
    d_model: int = 256
    """Residual-stream width n_e."""
    depth: int = 6
    """Number of transformer blocks L."""
    n_heads: int = 4
    head_dim: int = 64
    mlp_hidden: int = 512
    num_buckets: int = 32
    """Relative-position buckets of the attention bias."""
    max_distance: int = 128
    attn_window: int = 0
    """Attend only to the last `attn_window` positions, the current one included (0: the whole past). A
    window no longer than the pretraining episodes keeps every attention pattern of a longer episode one
    that pretraining has shown (docs/RESULTS.md, Session 9)."""
    attn_window_layers: tuple[int, ...] | None = None
    """Blocks (0-based) that the window applies to; None: every block. The others attend to the whole past."""
    max_len: int = 128
    """Longest sequence a KV cache is allocated for."""
    init_scale: float = 0.1
    """Variance-scaling initialiser scale."""
    encoder: str = "linear"
    """Observation encoder: 'linear', 'grid' or 'nav' (see models/encoders.py)."""
    grid_size: int = 7
    n_colors: int = 8
    """Colour channels at the start of each cell (used by the 'nav' encoder)."""
    prev_action_input: bool = False
    """Also feed a_{t−1} (off in the paper)."""
    obs_head: str = "bernoulli"
    """Next-observation likelihood: 'bernoulli' (binary obs), 'gaussian' (unit variance) or 'none'."""
    control_layer: int | None = None
    """Default control point (None: depth // 2)."""

    def __post_init__(self):
        if self.n_actions <= 0 and self.action_dim <= 0:
            raise ValueError("config needs n_actions > 0 (discrete) or action_dim > 0 (continuous)")
        if self.attn_window < 0:
            raise ValueError(f"attn_window must be ≥ 0 (0: no window), got {self.attn_window}")
        if self.attn_window_layers is not None:
            self.attn_window_layers = tuple(int(i) for i in self.attn_window_layers)  # a list from config.json
            bad = [i for i in self.attn_window_layers if not 0 <= i < self.depth]
            if bad:
                raise ValueError(f"attn_window_layers {bad} outside 0..{self.depth - 1}")
        if self.control_layer is None:
            self.control_layer = self.depth // 2
        self.check_layer(self.control_layer, "control_layer")

    def check_layer(self, layer: int, what: str = "layer") -> None:
        """A control point must lie in 0..depth (0: before the first block, depth: after the last)."""
        if not 0 <= layer <= self.depth:
            raise ValueError(f"{what} {layer} outside 0..{self.depth} (a control point of this {self.depth}-block "
                             "model: 0 before the first block, "
                             f"{self.depth} after the last)")

    @property
    def discrete(self) -> bool:
        return self.n_actions > 0

    def window_of_layer(self, i: int) -> int:
        """The attention window of block i (0: the whole past)."""
        layers = self.attn_window_layers
        return self.attn_window if layers is None or i in layers else 0


@dataclass
class SequenceOutput:
    """Heads of the model. For continuous actions, `action_logits` holds the mean and `action_logstd` the log-std."""

    action_logits: Tensor
    obs_pred: Tensor | None
    action_logstd: Tensor | None = None
    residuals: list[Tensor] = field(default_factory=list)


class SequenceModel(nn.Module):
    """Causal transformer over observations with action and next-observation heads."""

    def __init__(self, config: SequenceModelConfig):
        super().__init__()
        self.config = c = config
        self.encoder = make_encoder(c.encoder, c.obs_dim, c.d_model, c.grid_size, c.n_colors)
        self.prev_action = None
        if c.prev_action_input:
            n_in = c.n_actions + 1 if c.discrete else None
            self.prev_action = nn.Embedding(n_in, c.d_model) if c.discrete else nn.Linear(c.action_dim, c.d_model)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.head_dim, c.mlp_hidden, c.num_buckets, c.max_distance, c.window_of_layer(i))
            for i in range(c.depth)
        )
        self.ln_f = nn.LayerNorm(c.d_model)
        n_out = c.n_actions if c.discrete else 2 * c.action_dim
        self.action_head = nn.Linear(c.d_model, n_out)
        self.obs_head = nn.Linear(c.d_model, c.obs_dim) if c.obs_head != "none" else None
        for m in self.modules():
            if isinstance(m, nn.Linear):
                variance_scaling_(m.weight, c.init_scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_attn_window(self, window: int, layers: tuple[int, ...] | None = None) -> None:
        """Change the attention window of the blocks in `layers` (None: every block; the others attend to the
        whole past), and the config, so that a save records it."""
        checked = replace(self.config, attn_window=window, attn_window_layers=layers)  # the config's own checks
        self.config.attn_window, self.config.attn_window_layers = window, checked.attn_window_layers
        for i, block in enumerate(self.blocks):
            block.attn.window = self.config.window_of_layer(i)

    # ----------------------------------------------------------------------------------------- parts
    def embed(self, obs: Tensor, prev_actions: Tensor | None = None) -> Tensor:
        """e_0 for observations (B, T, obs_dim); prev_actions (B, T) holds a_{t−1} (−1 at t=0)."""
        if obs.shape[-1] != self.config.obs_dim:
            raise ValueError(f"observations have {obs.shape[-1]} features; model expects {self.config.obs_dim}")
        e = self.encoder(obs)
        if self.prev_action is not None:
            if prev_actions is None:
                raise ValueError("this model reads the previous action: pass prev_actions")
            if self.config.discrete:
                idx = torch.where(prev_actions < 0, self.config.n_actions, prev_actions).long()
                e = e + self.prev_action(idx)
            else:
                e = e + self.prev_action(prev_actions)
        return e

    def run_blocks(self, e: Tensor, start: int, end: int, cache: KVCache | None = None,
                   residuals: list[Tensor] | None = None) -> Tensor:
        """Apply blocks start..end−1 to e; append each output to `residuals` if given."""
        for i in range(start, end):
            e = self.blocks[i](e, cache, i)
            if residuals is not None:
                residuals.append(e)
        return e

    def heads(self, e: Tensor, predict_obs: bool = True) -> SequenceOutput:
        """Action and (unless predict_obs=False, as in rollouts) next-observation heads on the final stream."""
        h = self.ln_f(e)
        a = self.action_head(h)
        obs_pred = self.obs_head(h) if self.obs_head is not None and predict_obs else None
        if self.config.discrete:
            return SequenceOutput(a, obs_pred)
        mean, logstd = a.chunk(2, dim=-1)
        return SequenceOutput(mean, obs_pred, action_logstd=logstd.clamp(-5.0, 2.0))

    # -------------------------------------------------------------------------------------- whole seq
    def forward(self, obs: Tensor, prev_actions: Tensor | None = None, control: Control | None = None,
                layer: int | None = None, return_residuals: bool = False) -> SequenceOutput:
        """Full-sequence pass. `control(e)` rewrites the residual stream at `layer` (default control_layer)."""
        layer = self.config.control_layer if layer is None else layer
        residuals: list[Tensor] | None = [] if return_residuals else None
        e = self.embed(obs, prev_actions)
        if residuals is not None:
            residuals.append(e)
        e = self.run_blocks(e, 0, layer, None, residuals)
        if control is not None:
            e = control(e)
        e = self.run_blocks(e, layer, self.config.depth, None, residuals)
        out = self.heads(e)
        out.residuals = residuals or []
        return out

    def lower(self, obs: Tensor, prev_actions: Tensor | None = None, layer: int | None = None) -> Tensor:
        """Residual stream e at `layer` (the input of block `layer`)."""
        layer = self.config.control_layer if layer is None else layer
        return self.run_blocks(self.embed(obs, prev_actions), 0, layer)

    def upper(self, e: Tensor, layer: int | None = None) -> SequenceOutput:
        """Blocks `layer`..L−1 and the heads, from a (possibly controlled) residual stream e."""
        layer = self.config.control_layer if layer is None else layer
        return self.heads(self.run_blocks(e, layer, self.config.depth))

    # ----------------------------------------------------------------------------------- step by step
    def new_cache(self, batch: int, max_len: int | None = None, unbounded: bool = False) -> KVCache:
        """An empty KV cache for `batch` sequences of up to `max_len` steps (default: the model's max_len; any
        number with `unbounded`, as relative positions allow); its buffers grow as steps are added (see KVCache)."""
        c = self.config
        p = next(self.parameters())
        limit = None if unbounded else max_len or c.max_len
        return KVCache.empty(c.depth, batch, c.n_heads, c.head_dim, limit, p.device, p.dtype)

    def lower_step(self, obs_t: Tensor, cache: KVCache, prev_action_t: Tensor | None = None,
                   layer: int | None = None) -> Tensor:
        """One step of the lower blocks: obs_t (B, obs_dim) → e_t (B, D) at `layer`, extending the cache."""
        layer = self.config.control_layer if layer is None else layer
        pa = None if prev_action_t is None else prev_action_t[:, None]
        return self.run_blocks(self.embed(obs_t[:, None], pa), 0, layer, cache)[:, 0]

    def upper_step(self, e_t: Tensor, cache: KVCache, layer: int | None = None,
                   predict_obs: bool = True) -> SequenceOutput:
        """One step of the upper blocks and heads from e_t (B, D); outputs have shape (B, ·)."""
        layer = self.config.control_layer if layer is None else layer
        out = self.heads(self.run_blocks(e_t[:, None], layer, self.config.depth, cache), predict_obs)
        out.action_logits = out.action_logits[:, 0]
        out.obs_pred = None if out.obs_pred is None else out.obs_pred[:, 0]
        out.action_logstd = None if out.action_logstd is None else out.action_logstd[:, 0]
        return out

    def step(self, obs_t: Tensor, cache: KVCache, prev_action_t: Tensor | None = None,
             control: Control | None = None, layer: int | None = None) -> SequenceOutput:
        """One-step inference with a KV cache; equals the matching position of `forward`."""
        e = self.lower_step(obs_t, cache, prev_action_t, layer)
        if control is not None:
            e = control(e)
        return self.upper_step(e, cache, layer)

    # ------------------------------------------------------------------------------------ likelihoods
    def action_logp(self, out: SequenceOutput, actions: Tensor) -> Tensor:
        """log p(a_t | ...) per step, shape actions.shape[:2] (or [:1] for single steps)."""
        if self.config.discrete:
            if actions.dtype.is_floating_point:
                raise ValueError("discrete model: actions must be integer ids")
            logp = F.log_softmax(out.action_logits.float(), dim=-1)
            return logp.gather(-1, actions.long().clamp(min=0)[..., None])[..., 0]
        mean, logstd = out.action_logits, out.action_logstd
        var = torch.exp(2 * logstd)
        return (-0.5 * ((actions - mean) ** 2 / var + 2 * logstd + math.log(2 * math.pi))).sum(-1)

    def obs_nll(self, out: SequenceOutput, next_obs: Tensor) -> Tensor:
        """−log p(o_{t+1} | ...) per step, summed over observation features."""
        if out.obs_pred is None:
            return next_obs.new_zeros(next_obs.shape[:-1])
        if self.config.obs_head == "bernoulli":
            return F.binary_cross_entropy_with_logits(out.obs_pred, next_obs, reduction="none").sum(-1)
        return 0.5 * ((out.obs_pred - next_obs) ** 2).sum(-1)

    def loss(self, batch: dict[str, Tensor], obs_weight: float = 0.0) -> dict[str, Tensor]:
        """Masked mean over valid steps of −log p(a_t|o_1..t) + λ·(−log p(o_{t+1}|o_1..t)).

        batch: obs (B, T+1, obs_dim), actions (B, T), mask (B, T) bool.
        """
        obs, actions, mask = batch["obs"], batch["actions"], batch["mask"]
        T = actions.shape[1]
        if obs.shape[1] != T + 1:
            raise ValueError(f"batch obs must have T+1={T + 1} steps (o_1..o_T and the final obs), got {obs.shape[1]}")
        out = self(obs[:, :T], prev_actions_of(actions) if self.prev_action is not None else None)
        m = mask.float()
        n = m.sum().clamp(min=1)
        nll = -(self.action_logp(out, actions) * m).sum() / n
        obs_nll = (self.obs_nll(out, obs[:, 1:]) * m).sum() / n
        return {"loss": nll + obs_weight * obs_nll, "action_nll": nll, "obs_nll": obs_nll}

    # ------------------------------------------------------------------------------------ checkpoints
    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json + model.safetensors into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model": asdict(self.config)}, indent=2))
        from safetensors.torch import save_file  # lazy: its native library is loaded only to save or load

        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str = "cpu") -> SequenceModel:
        """Load a model written by `save_pretrained` (or a pretrain run folder)."""
        folder = Path(folder)
        cfg_path, w_path = folder / "config.json", folder / "model.safetensors"
        for p in (cfg_path, w_path):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found: is {folder} a model folder?")
        cfg = json.loads(cfg_path.read_text())
        model = cls(SequenceModelConfig(**cfg["model"]))
        from safetensors.torch import load_file

        model.load_state_dict(load_file(w_path, device=map_location))
        return model


def prev_actions_of(actions: Tensor) -> Tensor:
    """Shift actions right by one step: a_{t−1} at position t, −1 (no action) at t=0."""
    if actions.dtype.is_floating_point:
        return torch.cat([torch.zeros_like(actions[:, :1]), actions[:, :-1]], dim=1)
    return torch.cat([torch.full_like(actions[:, :1], -1), actions[:, :-1]], dim=1)


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a base model: no parameter requires grad, eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
