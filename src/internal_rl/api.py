"""The compact API of the first seed (``Transformer`` + ``MetaController``), as a thin facade.

Nothing here is a second implementation: every number comes from the library's modules.

- ``Transformer`` wraps ``models.sequence_model.SequenceModel`` (linear state encoder, previous-action
  input, Gaussian next-state head; the control point sits between the lower and the upper body).
- ``MetaController`` wraps ``control.metacontroller.MetaController`` (discovery: GRU history, sequence
  embedder, encoder, switching unit, hypernetwork decoder) and ``rl.policy.LatentPolicy`` (the causal
  policy over z used by internal RL, which reads the residual stream only at switch steps).
- ``Transformer.evolve`` runs ``rl.es.evolve`` over the LatentPolicy's parameters.

One call, four phases (see the README of the seed)::

    state_loss, action_loss = model(state, actions)                                     # BC
    recon, kl, switch = model(state, actions, meta_controller=mc, discovery_phase=True)  # discovery
    logits, cache = model(one_state, past_action, meta_controller=mc, return_cache=True) # rollout
    loss = mc.policy_loss(states, old_log_probs, latent_actions, advantages, switch_betas)  # RL

β = 1 means switch; β_1 = 1. At step t the model has read s_1..s_t and a_1..a_{t−1} and predicts a_t
and s_{t+1}. Masks are (B, T) bool, True on a prefix of each row (padding only at the end).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from internal_rl.api_compiled import StaticKV, compiled_step, control_params, control_tensors, static_step
from internal_rl.control.controller import ControlParams
from internal_rl.control.metacontroller import MetaController as _CoreMetaController
from internal_rl.control.metacontroller import MetaControllerConfig, MetaOutput, discovery_loss
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig, prev_actions_of
from internal_rl.models.ssm import HawkBlockState, check_padding_mask
from internal_rl.models.transformer import KVCache
from internal_rl.rl.objective import clipped_surrogate
from internal_rl.rl.policy import LatentPolicy, PopulationPolicy, gaussian_logp

__all__ = [
    "Transformer",
    "MetaController",
    "LatentDist",
    "MetaRolloutOutput",
    "Hiddens",
    "RolloutCache",
]


# ------------------------------------------------------------------------------------------ outputs
class LatentDist(NamedTuple):
    """Diagonal Gaussian over z: mean and log-std, each (B, n_z)."""

    mean: Tensor
    logstd: Tensor


@dataclass
class MetaRolloutOutput:
    """What the metacontroller did at one rollout step (all (B, ·), no time dim; detached)."""

    action_dist: LatentDist
    """The policy's Gaussian under which ``actions`` (the z in use) was drawn: new at a switch, else kept."""
    actions: Tensor
    """z in use at this step (B, n_z): freshly sampled where the switch fired, else the previous z."""
    switch_beta: Tensor
    """β_t (B,) from the switching unit (1 at the first step); a decision is taken where β ≥ threshold."""
    input_residual_stream: Tensor
    """e_t (B, D), the residual stream the metacontroller (and, at switches, the policy) read."""
    switched: Tensor
    """(B,) bool: a new z was sampled at this step."""


@dataclass
class Hiddens:
    """Per-component view of the last step, named as in the seed (``cache.prev_hiddens.meta_controller``)."""

    meta_controller: MetaRolloutOutput | None = None


@dataclass
class RolloutCache:
    """Everything a rollout carries between steps; updated in place and returned by every call."""

    kv: KVCache | None
    """The base model's KV cache (grown automatically when full); None in a compiled rollout."""
    steps: int = 0
    """Steps taken so far."""
    prev_hiddens: Hiddens = field(default_factory=Hiddens)
    h: Tensor | None = None
    """Metacontroller history h_{t−1} (B, n_h)."""
    z: Tensor | None = None
    """z in use (B, n_z)."""
    params: ControlParams | None = None
    """U = f_hyp(z) for the z in use, decoded only when some row switches."""
    dist: LatentDist | None = None
    policy_state: list[HawkBlockState] | None = None
    """LatentPolicy state, stepped only for rows that switched."""
    meta_controller: MetaController | None = None
    """The metacontroller this cache was started with (a cache cannot change controllers)."""
    static: StaticKV | None = None
    """The key/value cache of a compiled rollout (``Transformer.compile_rollout``, then ``kv`` is None)."""

    @property
    def batch(self) -> int:
        """Episodes this cache holds."""
        return (self.kv if self.static is None else self.static).k[0].shape[0]


# ------------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily set requires_grad=False on every parameter (restored after), so no graph reaches them."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _only_keys(name: str, d: dict, allowed: set[str]) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{name} must be a dict, got {type(d).__name__}")
    extra = set(d) - allowed
    if extra:
        raise ValueError(f"{name} got unsupported keys {sorted(extra)}; allowed: {sorted(allowed)}")


# ------------------------------------------------------------------------------------- MetaController
class MetaController(nn.Module):
    """Seed-style metacontroller: the discovery network (``core``) plus the internal-RL policy (``policy``).

    ``dim_meta_controller`` sets every hidden size of the metacontroller (history n_h, sequence
    embedding n_s and embedder width, encoder/decoder/switch MLPs) and the policy's width;
    ``dim_latent`` is n_z. ``alpha`` weighs the KL in discovery (the returned kl_loss is already
    multiplied by it). ``switch_loss_weight`` weighs an optional switch-rate penalty (mean β); the
    paper uses no switch regulariser, so it defaults to 0. Other ``MetaControllerConfig`` fields
    (``rank``, ``switch``, ``beta_threshold``, ...) can be passed as keywords.
    """

    def __init__(
        self,
        dim_model: int,
        dim_meta_controller: int = 64,
        dim_latent: int = 8,
        switch_loss_weight: float = 0.0,
        alpha: float = 0.1,
        policy_width: int | None = None,
        **config: Any,
    ) -> None:
        super().__init__()
        if switch_loss_weight < 0 or alpha < 0:
            raise ValueError(f"switch_loss_weight and alpha must be >= 0, got {switch_loss_weight}, {alpha}")
        h = dim_meta_controller
        sizes = dict(n_h=h, n_s=h, enc_hidden=h, dec_hidden=h, switch_hidden=h,
                     embedder_dim=None if h == dim_model else h)
        sizes.update(config)
        try:
            cfg = MetaControllerConfig(d_model=dim_model, n_z=dim_latent, **sizes)
        except TypeError as err:
            raise ValueError(f"MetaController: {err}") from None
        self.core = _CoreMetaController(cfg)
        self.policy = LatentPolicy(dim_model, dim_latent, width=policy_width or h)
        self.alpha = float(alpha)
        self.switch_loss_weight = float(switch_loss_weight)

    @property
    def config(self) -> MetaControllerConfig:
        return self.core.config

    def forward(self, e: Tensor, mask: Tensor | None = None, sample: bool = True) -> MetaOutput:
        """The discovery pass over residual streams e (B, T, D) (see control/metacontroller.py)."""
        return self.core(e, mask, sample=sample)

    def discovery_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained in the discovery phase (the metacontroller proper)."""
        return self.core.parameters()

    def internal_rl_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters trained by internal RL (the policy over z); the rest stays frozen."""
        return self.policy.parameters()

    # ----- internal RL ----------------------------------------------------------------------------
    @staticmethod
    def log_prob(action_dist: LatentDist | tuple[Tensor, Tensor], actions: Tensor) -> Tensor:
        """Joint log-density of z under the diagonal Gaussian (summed over z dims): shape actions.shape[:-1]."""
        mean, logstd = action_dist
        if mean.shape != actions.shape or logstd.shape != actions.shape:
            raise ValueError(f"action_dist (mean {tuple(mean.shape)}, logstd {tuple(logstd.shape)}) does not "
                             f"match actions {tuple(actions.shape)}")
        return gaussian_logp(actions, mean, logstd)

    def switch_mask(self, switch_betas: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T) bool: the steps where a decision was taken (β ≥ threshold), restricted to valid steps."""
        sw = self.core.binarize(switch_betas)
        return sw if mask is None else sw & mask

    def policy_log_prob(self, states: Tensor, latent_actions: Tensor, switch_betas: Tensor,
                        mask: Tensor | None = None) -> Tensor:
        """log π(z_t | e at switch steps ≤ t) (B, T) at switch steps (0 elsewhere), in one parallel pass.

        The policy reads e only at switch steps: those are gathered into a compact (B, K, D) sequence,
        run through ``LatentPolicy.forward`` and the log-probs are scattered back to their steps.
        """
        B, T, D = self._check_rl_inputs(states, latent_actions, switch_betas, mask)
        switch = self.switch_mask(switch_betas, mask)
        counts = switch.sum(dim=1)
        k_max = max(int(counts.max()), 1)
        # Switch steps first, in time order (stable sort), then the rest.
        order = torch.argsort((~switch).to(torch.int8), dim=1, stable=True)[:, :k_max]  # (B, K)
        valid = torch.arange(k_max, device=states.device)[None] < counts[:, None]  # (B, K)
        zero = torch.zeros((), dtype=states.dtype, device=states.device)
        e_c = torch.where(valid[..., None], states.gather(1, order[..., None].expand(B, k_max, D)), zero)
        n_z = latent_actions.shape[-1]
        z_c = torch.where(valid[..., None], latent_actions.gather(1, order[..., None].expand(B, k_max, n_z)), zero)
        mean, logstd = self.policy(e_c, valid)
        logp_c = torch.where(valid, gaussian_logp(z_c, mean, logstd), zero)
        out = torch.zeros(B, T, dtype=logp_c.dtype, device=states.device)
        # Invalid compact slots carry 0 and point at non-switch steps: scatter-add leaves those at 0.
        return out.scatter_add(1, order, logp_c)

    def policy_loss(self, states: Tensor, old_log_probs: Tensor, latent_actions: Tensor, advantages: Tensor,
                    switch_betas: Tensor, mask: Tensor | None = None, clip: float = 0.2) -> Tensor:
        """Clipped PPO/GRPO loss of the policy over z, averaged over the decisions (switch steps) only.

        states (B, T, D): the stored ``input_residual_stream``; old_log_probs (B, T); latent_actions
        (B, T, n_z): the z in use; advantages (B,) per episode or (B, T) per step; switch_betas (B, T);
        mask (B, T) bool valid steps. The ratio is of the joint Gaussian density (rl/objective.py).
        """
        B, T, _ = self._check_rl_inputs(states, latent_actions, switch_betas, mask)
        if old_log_probs.shape != (B, T):
            raise ValueError(f"old_log_probs must be (B, T) = ({B}, {T}), got {tuple(old_log_probs.shape)}")
        if advantages.shape == (B,):
            advantages = advantages[:, None].expand(B, T)
        elif advantages.shape != (B, T):
            raise ValueError(f"advantages must be (B,) = ({B},) or (B, T) = ({B}, {T}), got {tuple(advantages.shape)}")
        if not clip > 0:
            raise ValueError(f"clip must be positive, got {clip}")
        switch = self.switch_mask(switch_betas, mask)
        logp = self.policy_log_prob(states, latent_actions, switch_betas, mask)
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        old = torch.where(switch, old_log_probs.to(logp.dtype), zero)  # padding may hold anything
        adv = torch.where(switch, advantages.to(logp.dtype), zero)
        # One decision per row of the flattened view, so per-step advantages fit clipped_surrogate's (N,) form.
        flat = lambda x: rearrange(x, "b t -> (b t) 1")  # noqa: E731
        return clipped_surrogate(flat(logp), flat(old), rearrange(adv, "b t -> (b t)"), flat(switch), clip)

    def _check_rl_inputs(self, states: Tensor, latent_actions: Tensor, switch_betas: Tensor,
                         mask: Tensor | None) -> tuple[int, int, int]:
        D, n_z = self.config.d_model, self.config.n_z
        if states.dim() != 3 or states.shape[-1] != D:
            raise ValueError(f"states must be (B, T, D) with D = {D} (the stored input_residual_stream), "
                             f"got {tuple(states.shape)}")
        B, T = states.shape[:2]
        if latent_actions.shape != (B, T, n_z):
            raise ValueError(f"latent_actions must be (B, T, n_z) = ({B}, {T}, {n_z}), got {tuple(latent_actions.shape)}")
        if switch_betas.shape != (B, T):
            raise ValueError(f"switch_betas must be (B, T) = ({B}, {T}), got {tuple(switch_betas.shape)}")
        check_padding_mask(mask, B, T)
        return B, T, D


# ---------------------------------------------------------------------------------------- Transformer
class Transformer(nn.Module):
    """Seed-style base model over (state, action) sequences: a SequenceModel with a lower and an upper body.

    ``action_embed_readout``: ``dict(num_discrete=K)`` or ``dict(num_continuous=A)`` (actions are read as
    the previous action and predicted); ``state_embed_readout``: ``dict(num_continuous=S)`` (states are
    embedded linearly and the next state is predicted by a unit-variance Gaussian head);
    ``lower_body`` / ``upper_body``: ``dict(depth=..)``, the control point sits between them.
    Extra keywords go to ``SequenceModelConfig`` (``num_buckets``, ``max_distance``, ``init_scale``...).
    """

    def __init__(
        self,
        dim: int,
        *,
        action_embed_readout: dict,
        state_embed_readout: dict,
        lower_body: dict,
        upper_body: dict,
        heads: int = 4,
        dim_head: int | None = None,
        ff_mult: float = 2.0,
        max_len: int = 128,
        meta_controller: MetaController | None = None,
        **config: Any,
    ) -> None:
        super().__init__()
        _only_keys("action_embed_readout", action_embed_readout, {"num_discrete", "num_continuous"})
        _only_keys("state_embed_readout", state_embed_readout, {"num_continuous"})
        _only_keys("lower_body", lower_body, {"depth"})
        _only_keys("upper_body", upper_body, {"depth"})
        if len(action_embed_readout) != 1:
            raise ValueError("action_embed_readout needs exactly one of num_discrete=K or num_continuous=A")
        if "num_continuous" not in state_embed_readout:
            raise ValueError("state_embed_readout needs num_continuous=S (the state size)")
        lower, upper = int(lower_body.get("depth", 0)), int(upper_body.get("depth", 0))
        if lower < 0 or upper < 0 or lower + upper < 1:
            raise ValueError(f"lower_body/upper_body depths must be >= 0 with at least one block, got {lower}, {upper}")
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"dim={dim} is not divisible by heads={heads}; pass dim_head")
            dim_head = dim // heads
        try:
            cfg = SequenceModelConfig(
                obs_dim=int(state_embed_readout["num_continuous"]),
                n_actions=int(action_embed_readout.get("num_discrete", 0)),
                action_dim=int(action_embed_readout.get("num_continuous", 0)),
                d_model=dim, depth=lower + upper, n_heads=heads, head_dim=dim_head,
                mlp_hidden=int(ff_mult * dim), max_len=max_len, encoder="linear",
                prev_action_input=True, obs_head="gaussian", control_layer=lower, **config,
            )
        except TypeError as err:
            raise ValueError(f"Transformer: {err}") from None
        self.base = SequenceModel(cfg)
        self._compiled_step: Callable[..., dict] | None = None  # set by compile_rollout
        self._compiled_capacity: int | None = None
        # A submodule once set: its parameters then appear in model.parameters() (the base's are in model.base).
        self.meta_controller = meta_controller

    @property
    def config(self) -> SequenceModelConfig:
        return self.base.config

    # ----- entry point ----------------------------------------------------------------------------
    def forward(
        self,
        state: Tensor,
        actions: Tensor | int | None = None,
        *,
        mask: Tensor | None = None,
        meta_controller: MetaController | None = None,
        discovery_phase: bool = False,
        return_cache: bool = False,
        cache: RolloutCache | None = None,
    ):
        """Dispatch on the phase (see the module docstring).

        - BC: ``state`` (B, T, S), ``actions`` (B, T) → ``(state_loss, action_loss)``.
        - Discovery (``discovery_phase=True``): → ``(action_recon_loss, kl_loss, switch_loss)``.
        - Rollout (``return_cache=True`` or ``cache`` given): one step; ``actions`` is the previous action
          → ``(logits, cache)`` (just ``logits`` without ``return_cache``). ``meta_controller`` defaults
          to ``self.meta_controller``; with neither, the plain base model acts.
        """
        if return_cache or cache is not None:
            if discovery_phase or mask is not None:
                raise ValueError("a rollout step (return_cache / cache) takes no discovery_phase or mask")
            mc = meta_controller if meta_controller is not None else self.meta_controller
            logits, cache = self._rollout_step(state, actions, mc, cache)
            return (logits, cache) if return_cache else logits
        if discovery_phase:
            mc = meta_controller if meta_controller is not None else self.meta_controller
            if mc is None:
                raise ValueError("discovery_phase=True needs a meta_controller (argument or model.meta_controller)")
            return self.discovery_losses(state, actions, mc, mask)
        if meta_controller is not None:
            raise ValueError("a meta_controller is used with discovery_phase=True or in a rollout (return_cache=True)")
        return self.bc_losses(state, actions, mask)

    # ----- checks ---------------------------------------------------------------------------------
    def _check_sequences(self, state: Tensor, actions: Tensor | None,
                         mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Validate (state, actions, mask); return them with padded steps zeroed (padding may hold anything)."""
        c = self.config
        if not isinstance(state, Tensor) or state.dim() != 3 or state.shape[-1] != c.obs_dim:
            raise ValueError(f"state must be (B, T, S) with S = {c.obs_dim}, got {tuple(getattr(state, 'shape', ()))}")
        if actions is None or not isinstance(actions, Tensor):
            raise ValueError("actions (B, T) must be given for behaviour cloning and discovery")
        B, T = state.shape[:2]
        if c.discrete:
            if actions.shape != (B, T) or actions.dtype.is_floating_point:
                raise ValueError(f"actions must be integer ids of shape (B, T) = ({B}, {T}), got "
                                 f"{tuple(actions.shape)} {actions.dtype}")
        elif actions.shape != (B, T, c.action_dim) or not actions.dtype.is_floating_point:
            raise ValueError(f"actions must be float (B, T, A) = ({B}, {T}, {c.action_dim}), got "
                             f"{tuple(actions.shape)} {actions.dtype}")
        mask = check_padding_mask(mask, B, T)
        if c.discrete:
            valid = actions if mask is None else actions[mask]
            if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= c.n_actions):
                raise ValueError(f"actions must lie in 0..{c.n_actions - 1} at valid steps")
        if mask is not None:  # attention multiplies padded values by 0 weights: NaN there would leak
            state = torch.where(mask[..., None], state, torch.zeros((), dtype=state.dtype, device=state.device))
            m = mask if c.discrete else mask[..., None]
            actions = torch.where(m, actions, torch.zeros((), dtype=actions.dtype, device=actions.device))
        return state, actions, mask

    # ----- behaviour cloning ----------------------------------------------------------------------
    def bc_losses(self, state: Tensor, actions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(state_loss, action_loss): masked means of −log p(s_{t+1}|·) over t < T and of −log p(a_t|·) over t.

        The state head is a unit-variance Gaussian, so state_loss is ½‖ŝ_{t+1} − s_{t+1}‖² per step (the
        NLL without its constant), summed over state features (``SequenceModel.obs_nll``).
        """
        state, actions, mask = self._check_sequences(state, actions, mask)
        out = self.base(state, prev_actions_of(actions))
        m = torch.ones(actions.shape[:2], dtype=torch.bool, device=state.device) if mask is None else mask
        mf = m.to(state.dtype)
        action_loss = -(self.base.action_logp(out, actions) * mf).sum() / mf.sum().clamp(min=1)
        # s_{t+1} exists (and is valid) for t < T where the next step is valid.
        ms = mf[:, 1:]
        out.obs_pred = out.obs_pred[:, :-1]
        state_loss = (self.base.obs_nll(out, state[:, 1:]) * ms).sum() / ms.sum().clamp(min=1)
        return state_loss, action_loss

    # ----- discovery ------------------------------------------------------------------------------
    def discovery_losses(self, state: Tensor, actions: Tensor, meta_controller: MetaController,
                         mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(action_recon_loss, kl_loss, switch_loss) of paper Eq. 3 with the base frozen for this call.

        action_recon_loss: mean −log p(a_t | ê) per valid step; kl_loss: α · mean KL per valid step
        (α = meta_controller.alpha); switch_loss: switch_loss_weight · mean β over valid steps t ≥ 2
        (0 by default: the paper uses no switch regulariser, but it stays a differentiable scalar).
        No gradient reaches the Transformer's parameters: the lower body runs without a graph and the
        upper body's parameters are excluded from it (only the controlled activations carry one).
        """
        state, actions, mask = self._check_sequences(state, actions, mask)
        mc = meta_controller
        if mc.config.d_model != self.config.d_model:
            raise ValueError(f"meta_controller has dim_model={mc.config.d_model}, model has dim={self.config.d_model}")
        with _frozen(self.base):
            with torch.no_grad():
                e = self.base.lower(state, prev_actions_of(actions))
            out = mc.core(e, mask, sample=True)
            logp = self.base.action_logp(self.base.upper(out.e_hat), actions)
        losses = discovery_loss(logp, out, mask, mc.alpha)
        beta = out.beta[:, 1:]  # β_1 = 1 is forced, not learned
        m = (torch.ones_like(beta, dtype=torch.bool) if mask is None else mask[:, 1:]).to(beta.dtype)
        switch_rate = (beta * m).sum() / m.sum().clamp(min=1)
        return losses["nll"], mc.alpha * losses["kl"], mc.switch_loss_weight * switch_rate

    # ----- rollouts -------------------------------------------------------------------------------
    def new_cache(self, batch: int, meta_controller: MetaController | None = None) -> RolloutCache:
        """An empty rollout cache for `batch` episodes (made automatically by the first rollout call);
        a compiled one after ``compile_rollout``."""
        if self._compiled_step is not None:
            static = StaticKV.zeros(self.base, batch, self._compiled_capacity or self.config.max_len)
            return RolloutCache(kv=None, meta_controller=meta_controller, static=static)
        return RolloutCache(kv=self.base.new_cache(batch, unbounded=True), meta_controller=meta_controller)

    def compile_rollout(self, enabled: bool = True, capacity: int | None = None,
                        **compile_kwargs: Any) -> Transformer:
        """Run the rollouts of new caches through one ``torch.compile``'d step with static shapes
        (api_compiled.py); ``enabled=False`` goes back to the eager step. Returns the model.

        The first step of each (batch size, cache capacity) compiles (about 10 s here); after that a step
        is about twice as fast at small batch (docs/RESULTS.md). The KV cache starts at ``capacity`` steps
        (default ``max_len``) and doubles when full, and every step attends over the whole capacity: a
        small start (e.g. 32) compiles a few graphs (32, 64, 128, ...) but reads less early in a rollout,
        which pays at large batch. Same numbers as the eager step to float tolerance, same random draws.
        ``compile_kwargs`` go to ``torch.compile`` (e.g. ``mode``, ``backend="eager"`` to test without compiling).
        """
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._compiled_step = compiled_step(**compile_kwargs) if enabled else None
        self._compiled_capacity = capacity
        return self

    def _static_rollout_step(self, state: Tensor, pa: Tensor, mc: MetaController | None,
                             cache: RolloutCache) -> Tensor:
        """One compiled step on ``cache.static``; records MetaRolloutOutput like the eager step."""
        st = cache.static
        st.grow(cache.steps + 1)
        step = self._compiled_step if self._compiled_step is not None else static_step  # compiling turned off
        p = self.base.action_head.weight  # dtype and device (cheaper than walking .parameters() every step)
        batch = state.shape[0]
        if mc is not None and cache.steps == 0:
            self._start_meta(mc, cache, batch, p)
        noise = None if mc is None else torch.randn(batch, mc.config.n_z, dtype=p.dtype, device=p.device)
        first = torch.tensor(cache.steps == 0, device=p.device)
        meta = ((None,) * 6 if mc is None else
                (cache.h, cache.z, cache.dist.mean, cache.dist.logstd, cache.policy_state, control_tensors(cache.params)))
        # contiguous inputs: the compiled graph is specialised on strides, and a column of a (B, T) tensor is strided
        out = step(self.base, mc, state.to(p.dtype).contiguous(), pa.contiguous(), st.k, st.v, st.pos, first, *meta,
                   noise, None if mc is None else mc.core.gru_weights())
        st.pos = out["pos"]
        cache.steps += 1
        if mc is not None:
            cache.h, cache.z, cache.policy_state = out["h"], out["z"], out["policy_state"]
            cache.params = control_params(out["control"])
            cache.dist = LatentDist(out["mean"], out["logstd"])
            cache.prev_hiddens = Hiddens(MetaRolloutOutput(cache.dist, cache.z, out["beta"], out["e"], out["switched"]))
        return out["logits"]

    @staticmethod
    def _start_meta(mc: MetaController, cache: RolloutCache, batch: int, like: Tensor) -> None:
        """The metacontroller's state before the first step: h_0 = 0, z_0 = 0, the policy's initial state
        (the Gaussian and U are placeholders: every row switches at the first step)."""
        init = mc.core.initial_state(batch, like.device, like.dtype)
        cache.h, cache.z = init.h, init.z_prev
        cache.policy_state = mc.policy.initial_state(batch)
        cache.dist = LatentDist(torch.zeros_like(cache.z), torch.zeros_like(cache.z))
        cache.params = mc.core.decode(cache.z)

    def _prev_action(self, past_action: Tensor | int | None, batch: int, first: bool) -> Tensor:
        c = self.config
        p = self.base.action_head.weight
        if past_action is None or (isinstance(past_action, int) and past_action == -1):
            if not first and past_action is None:
                raise ValueError("after the first step, pass the action taken at the previous step")
            if c.discrete:
                return torch.full((batch,), -1, dtype=torch.long, device=p.device)
            return torch.zeros(batch, c.action_dim, dtype=p.dtype, device=p.device)
        if not isinstance(past_action, Tensor):
            past_action = torch.as_tensor(past_action, device=p.device)
        if c.discrete:
            pa = past_action.reshape(-1) if past_action.dim() == 2 and past_action.shape[1] == 1 else past_action
            if pa.shape != (batch,) or pa.dtype.is_floating_point:
                raise ValueError(f"past action ids must be integer (B,) or (B, 1) with B = {batch}, got "
                                 f"{tuple(past_action.shape)} {past_action.dtype}")
            lo, hi = torch.aminmax(pa)
            if int(lo) < -1 or int(hi) >= c.n_actions:
                raise ValueError(f"past action ids must lie in -1..{c.n_actions - 1}")
            return pa.long()
        pa = past_action[:, 0] if past_action.dim() == 3 and past_action.shape[1] == 1 else past_action
        if pa.shape != (batch, c.action_dim):
            raise ValueError(f"past continuous actions must be (B, A) or (B, 1, A) = ({batch}, {c.action_dim}), "
                             f"got {tuple(past_action.shape)}")
        return pa.to(p.dtype)

    @torch.no_grad()
    def _rollout_step(self, state: Tensor, past_action: Tensor | int | None, mc: MetaController | None,
                      cache: RolloutCache | None) -> tuple[Tensor, RolloutCache]:
        """One step: lower body → e; β and (at switches) a new z from the policy; ê = e + U e; upper body → logits."""
        c = self.config
        keep_time = state.dim() == 3
        if keep_time:
            if state.shape[1] != 1:
                raise ValueError(f"a rollout step takes one state (B, 1, S) or (B, S), got {tuple(state.shape)}")
            state = state[:, 0]
        if state.dim() != 2 or state.shape[-1] != c.obs_dim:
            raise ValueError(f"a rollout step takes one state (B, 1, S) or (B, S) with S = {c.obs_dim}, "
                             f"got {tuple(state.shape)}")
        batch = state.shape[0]
        if cache is None:
            cache = self.new_cache(batch, mc)
        if cache.batch != batch:
            raise ValueError(f"cache holds {cache.batch} episodes, state has {batch}")
        if cache.steps and cache.meta_controller is not mc:
            raise ValueError("this cache was started with a different meta_controller")
        first = cache.steps == 0
        pa = self._prev_action(past_action, batch, first)
        if first:
            cache.meta_controller = mc  # e.g. a cache made by new_cache(batch) without one
        if cache.static is not None:
            logits = self._static_rollout_step(state, pa, mc, cache)
            return (logits[:, None] if keep_time else logits), cache
        e = self.base.lower_step(state.to(self.base.action_head.weight.dtype), cache.kv, pa)
        if mc is not None:
            e_hat = self._meta_step(mc, e, cache, first)
        else:
            e_hat = e
        out = self.base.upper_step(e_hat, cache.kv, predict_obs=False)
        cache.steps += 1
        logits = out.action_logits if c.discrete else torch.cat([out.action_logits, out.action_logstd], dim=-1)
        return (logits[:, None] if keep_time else logits), cache

    def _meta_step(self, mc: MetaController, e: Tensor, cache: RolloutCache, first: bool) -> Tensor:
        """The metacontroller's part of a rollout step; returns ê_t and records MetaRolloutOutput."""
        core, policy = mc.core, mc.policy
        batch = e.shape[0]
        if first:
            self._start_meta(mc, cache, batch, e)
            beta = torch.ones(batch, dtype=e.dtype, device=e.device)  # β_1 = 1
        elif core.config.always_switch:
            beta = torch.ones(batch, dtype=e.dtype, device=e.device)
        else:
            beta = core.switch(e, cache.h, cache.z)
        switched = core.binarize(beta)
        n_switched = int(switched.sum())
        # One draw for every row at every step, used where the switch fires: the compiled step draws the same.
        noise = torch.randn(batch, core.config.n_z, dtype=e.dtype, device=e.device)
        if first or n_switched == batch:
            mean, logstd, cache.policy_state = policy.step(e, cache.policy_state)
            cache.z = mean + logstd.exp() * noise
            cache.dist = LatentDist(mean, logstd)
            cache.params = core.decode(cache.z)
        elif n_switched:
            # only the rows that switched take a decision and decode a new U; the rest keep theirs.
            # Out-of-place index_copy: earlier steps' records (prev_hiddens) may still hold the old tensors.
            rows = switched.nonzero().squeeze(1)
            mean, logstd, state = policy.step_rows(e, cache.policy_state, rows)
            z_new = mean + logstd.exp() * noise.index_select(0, rows)
            cache.policy_state = [HawkBlockState(*(a.index_copy(0, rows, b) for a, b in zip(old, new)))
                                  for old, new in zip(cache.policy_state, state)]
            cache.z = cache.z.index_copy(0, rows, z_new)
            cache.dist = LatentDist(cache.dist.mean.index_copy(0, rows, mean),
                                    cache.dist.logstd.index_copy(0, rows, logstd))
            new_params, p = core.decode(z_new), cache.params
            cache.params = (ControlParams(U=p.U.index_copy(0, rows, new_params.U)) if p.full_rank else
                            ControlParams(A=p.A.index_copy(0, rows, new_params.A),
                                          B=p.B.index_copy(0, rows, new_params.B)))
        e_hat = cache.params.apply(e)
        cache.h = core.history_step(e, cache.h)
        cache.prev_hiddens = Hiddens(MetaRolloutOutput(cache.dist, cache.z, beta, e, switched))
        return e_hat

    # ----- evolution strategies -------------------------------------------------------------------
    def evolve(
        self,
        num_generations: int,
        environment: Callable[[Transformer], float | Sequence[float] | Tensor],
        population_size: int = 16,
        sigma: float = 0.05,
        lr: float = 0.01,
        seed: int = 0,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        callback: Callable[[int, dict], None] | None = None,
        batched: bool = False,
    ) -> list[dict]:
        """Evolution strategies (rl/es.py) over ``self.meta_controller``'s internal-RL parameters (the policy).

        ``environment(model)`` returns a fitness (higher is better) for the parameters currently loaded;
        each population member is loaded in turn. With ``batched=True`` it is called once per generation
        with the policy acting as the whole population (``rl.policy.PopulationPolicy``): the B rows of its
        rollout are split into P equal contiguous blocks, block i acting with member i (B a multiple of P),
        and it returns one fitness per row (averaged per block) or one per member. Under torch.distributed
        each rank evaluates its own slice of the population. Afterwards the policy holds the evolved mean.
        Returns one stats dict per generation.
        """
        from internal_rl.rl.es import evolve as es_evolve

        if self.meta_controller is None:
            raise ValueError("set model.meta_controller = MetaController(...) before evolve")
        mc = self.meta_controller
        params = list(mc.internal_rl_parameters())

        def fitness(vector: Tensor) -> float:
            nn.utils.vector_to_parameters(vector, params)
            return float(environment(self))

        def population_fitness(vectors: list[Tensor]) -> list[float]:
            members = len(vectors)
            policy, compiled = mc.policy, self._compiled_step
            # the compiled step is traced for the plain policy: the population's rollouts run eagerly
            mc.policy, self._compiled_step = PopulationPolicy(policy, torch.stack(vectors)), None
            try:
                out = environment(self)
            finally:
                mc.policy, self._compiled_step = policy, compiled
            f = torch.as_tensor(out, dtype=torch.float64).reshape(-1)
            if f.numel() == 0 or f.numel() % members:
                raise ValueError(f"batched evolve: environment returned {f.numel()} fitnesses for {members} members; "
                                 "return one per row of the rollout (a multiple of the members) or one per member")
            return f.view(members, -1).mean(dim=1).tolist()

        return es_evolve(params, population_fitness if batched else fitness, num_generations,
                         population_size=population_size, sigma=sigma, lr=lr, batched=batched,
                         seed=seed, optimizer=optimizer, weight_decay=weight_decay, callback=callback)
