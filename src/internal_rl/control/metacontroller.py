"""The metacontroller (paper D.2): discovers temporally-abstract actions in a frozen model's residual stream.

Names, used throughout:
- e_t (B, T, D): residual stream of the frozen base model at the control layer, D = d_model.
- h_t (n_h): history, a GRU over e: h_t = GRU(e_t, h_{t-1}), h_0 = 0 (causal).
- s (n_s): sequence embedding, a bidirectional Hawk over e_1..T then a masked mean-pool (non-causal).
- z̃_t (n_z): proposed latent code, z̃_t ~ N(μ_t, diag σ²_t) with (μ_t, log σ²_t) = f_enc(e_t, h_{t-1}, s).
- β_t ∈ [0, 1]: switching gate, β_t = σ(f_switch(e_t, h_{t-1}, z_{t-1})), β_1 = 1. β = 1 means SWITCH.
- z_t = β_t z̃_t + (1 - β_t) z_{t-1}: the integrated latent code (z_0 = 0).
- U_t = f_hyp(z_t): the controller, applied as ê_t = e_t + U_t e_t (see controller.py).

Training (discovery) minimises Σ_t [−log p(a_t | ê_{≤t}) + α KL(N(μ_t, σ²_t) ‖ N(0, I))] with the base
model frozen (``discovery_loss``). For internal RL, ``switch``, ``history_step`` and ``decode`` are used
on their own while an RL policy chooses z instead of the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from internal_rl.control.controller import ControlParams, HyperDecoder
from internal_rl.control.history import gru_sequence
from internal_rl.control.switching import relax_value, switch_recurrence
from internal_rl.models.ssm import Hawk, check_padding_mask, linear_scan

__all__ = [
    "MetaController",
    "MetaControllerConfig",
    "MetaOutput",
    "MetaState",
    "MetaStep",
    "discovery_loss",
    "gaussian_kl",
]

SWITCH_MODES = ("soft", "hard", "gumbel")


@dataclass
class MetaControllerConfig:
    """Sizes and options of the metacontroller (defaults: paper D.2, gridworld)."""

    d_model: int
    """Width D of the residual stream e at the control layer."""
    n_z: int = 8
    """Dimension of the latent code z (the abstract action)."""
    n_h: int = 32
    """Hidden size of the history GRU h_t."""
    n_s: int = 32
    """Dimension of the non-causal sequence embedding s."""
    embedder_layers: int = 1
    """Number of Hawk blocks (per direction) in the sequence embedder (paper: not stated)."""
    embedder_dim: int | None = None
    """Width of the embedder's Hawk; None runs it on e directly (width D), else e is first projected."""
    embedder_heads: int = 1
    """Heads of the block-diagonal RG-LRU gates in the embedder (1 = dense gates)."""
    enc_hidden: int = 64
    """Hidden size of the encoder MLP f_enc(e_t, h_{t-1}, s) -> (μ_t, log σ²_t)."""
    dec_hidden: int = 32
    """Hidden size of the hypernetwork decoder f_hyp(z_t) -> U_t."""
    switch_hidden: int = 32
    """Hidden size of the switching MLP f_switch(e_t, h_{t-1}, z_{t-1}) (paper: "small", not stated)."""
    rank: int = 16
    """Rank r of the low-rank controller U = B Aᵀ (ignored when full_rank)."""
    full_rank: bool = False
    """Use a full D×D controller U (the paper's ant setting) instead of rank r."""
    switch: str = "soft"
    """How β is formed from p = σ(f_switch): "soft" β = p (paper default, continuous relaxation);
    "hard" β = 1[p ≥ beta_threshold] with a straight-through gradient; "gumbel" β = Gumbel-sigmoid
    relaxation σ((logit p + logistic noise) / gumbel_tau) (noise only when sampling)."""
    gumbel_tau: float = 1.0
    """Temperature of the Gumbel-sigmoid relaxation (switch="gumbel" only); lower is closer to binary."""
    always_switch: bool = False
    """Ablation β ≡ 1: a new code at every step (the switching unit is not used)."""
    beta_threshold: float = 0.5
    """Threshold on β counted as a switch (hard mode's forward value; internal RL's decision rule)."""
    decoder_init_scale: float = 1e-2
    """Rough size of U e relative to e at initialisation (small: the controlled model starts as the base)."""
    init_logvar: float = 0.0
    """Initial log σ² of the proposal (the bias of the encoder's log-variance output). Below 0 the codes
    start less noisy, which lets the decoder learn to use them before the KL collapses them."""

    def __post_init__(self) -> None:
        if self.switch not in SWITCH_MODES:
            raise ValueError(f"switch must be one of {SWITCH_MODES}, got {self.switch!r}")
        if self.gumbel_tau <= 0:
            raise ValueError(f"gumbel_tau must be positive, got {self.gumbel_tau}")
        if not 0.0 < self.beta_threshold < 1.0:
            raise ValueError(f"beta_threshold must be in (0, 1), got {self.beta_threshold}")
        sizes = (self.d_model, self.n_z, self.n_h, self.n_s, self.embedder_layers, self.enc_hidden)
        if min(sizes + (self.dec_hidden, self.switch_hidden, self.rank)) < 1:
            raise ValueError("all sizes in MetaControllerConfig must be positive")


@dataclass
class MetaOutput:
    """Everything the metacontroller computes over sequences (B, T); beta and kl are 0 at padded steps."""

    beta: Tensor
    """Switching gate β_t (B, T); β_1 = 1."""
    z: Tensor
    """Integrated latent code z_t (B, T, n_z)."""
    z_tilde: Tensor
    """Proposed code z̃_t (B, T, n_z) (μ_t when not sampling)."""
    mu: Tensor
    """Posterior mean μ_t (B, T, n_z)."""
    logvar: Tensor
    """Posterior log-variance log σ²_t (B, T, n_z)."""
    kl: Tensor
    """KL(N(μ_t, σ²_t) ‖ N(0, I)) summed over z dims, (B, T)."""
    e_hat: Tensor
    """Controlled residual ê_t = e_t + U_t e_t (B, T, D); equal to e at padded steps."""
    h: Tensor
    """History h_t (B, T, n_h), after reading e_t."""
    h_last: Tensor
    """History after each row's last valid step (B, n_h)."""
    s: Tensor
    """Sequence embedding s (B, n_s)."""
    noise: Tensor | None
    """Standard-normal noise ε used for z̃ = μ + σ ε (B, T, n_z), None when not sampling; replayable."""
    switch_noise: Tensor | None
    """Logistic noise used by the Gumbel-sigmoid switch (B, T), None otherwise; replayable."""
    decoder: HyperDecoder = field(repr=False)
    """The decoder f_hyp, used to decode ``params`` on demand."""
    _params: ControlParams | None = field(default=None, repr=False)

    @property
    def params(self) -> ControlParams:
        """Controller U_t for each step: A, B (B, T, D, r) or U (B, T, D, D), decoded from z on first access.

        forward computes e_hat without them (they are by far the largest tensors); differentiable.
        """
        if self._params is None:
            self._params = self.decoder(self.z)
        return self._params


@dataclass
class MetaState:
    """Recurrent state carried between ``step`` calls."""

    h: Tensor
    """History h_{t-1} (B, n_h)."""
    z_prev: Tensor
    """Previous integrated code z_{t-1} (B, n_z)."""
    first: Tensor
    """(B,) bool: the next step is the first of its episode: β forced to 1, h and z start from 0.
    Setting a row True resets that row (e.g. after its episode ended)."""


@dataclass
class MetaStep:
    """Outputs of one ``step`` for a batch (B,)."""

    beta: Tensor
    """β_t (B,)."""
    z: Tensor
    """z_t (B, n_z)."""
    z_tilde: Tensor
    """Proposal z̃_t (B, n_z)."""
    mu: Tensor | None
    """μ_t (B, n_z); None when the proposal was given from outside."""
    logvar: Tensor | None
    """log σ²_t (B, n_z); None when the proposal was given from outside."""
    kl: Tensor | None
    """KL_t (B,); None when the proposal was given from outside."""
    params: ControlParams
    """U_t: A, B (B, D, r) or U (B, D, D)."""
    e_hat: Tensor
    """ê_t = e_t + U_t e_t (B, D)."""


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) summed over the last dim."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


class MetaController(nn.Module):
    """Metacontroller of paper D.2: history GRU, sequence embedder, encoder, switching unit, decoder."""

    def __init__(self, config: MetaControllerConfig) -> None:
        super().__init__()
        self.config = c = config
        D = c.d_model
        self.gru = nn.GRU(D, c.n_h, batch_first=True)
        width = c.embedder_dim or D
        self.embed_in = nn.Identity() if width == D else nn.Linear(D, width)
        self.embedder = Hawk(
            width,
            c.embedder_layers,
            lru_dim=width,
            mlp_hidden=2 * width,
            heads=c.embedder_heads,
            bidirectional=True,
        )
        self.embed_out = nn.Linear(width, c.n_s)
        self.encoder = nn.Sequential(
            nn.Linear(D + c.n_h + c.n_s, c.enc_hidden), nn.ReLU(), nn.Linear(c.enc_hidden, 2 * c.n_z)
        )
        with torch.no_grad():
            self.encoder[-1].bias[c.n_z:] += c.init_logvar
        # f_switch's first layer reads cat(e_t, h_{t-1}, z_{t-1}) in that order (forward splits it).
        self.switch_in = nn.Linear(D + c.n_h + c.n_z, c.switch_hidden)
        self.switch_out = nn.Linear(c.switch_hidden, 1)
        self.decoder = HyperDecoder(c.n_z, D, c.dec_hidden, c.rank, c.full_rank, c.decoder_init_scale)

    # ----- pieces, each callable on its own -------------------------------------------------------

    def _check_e(self, e: Tensor, ndim: int, what: str) -> None:
        if e.dim() != ndim or e.shape[-1] != self.config.d_model:
            shape = "(B, T, D)" if ndim == 3 else "(B, D)"
            raise ValueError(
                f"{what} must be {shape} with D = d_model = {self.config.d_model}, got {tuple(e.shape)}"
            )

    def history_step(self, e_t: Tensor, h_prev: Tensor) -> Tensor:
        """h_t = GRU(e_t, h_{t-1}) for e_t (B, D), h_prev (B, n_h)."""
        self._check_e(e_t, 2, "e_t")
        if h_prev.shape != (e_t.shape[0], self.config.n_h):
            raise ValueError(
                f"h_prev must be (B, n_h) = ({e_t.shape[0]}, {self.config.n_h}), got {tuple(h_prev.shape)}"
            )
        # the single-step cell on the GRU's own weights: same numbers, ~7x less overhead than nn.GRU
        return torch.gru_cell(e_t, h_prev, *self.gru_weights())

    def gru_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The history GRU's (w_ih, w_hh, b_ih, b_hh), for ``torch.gru_cell`` (torch.compile cannot trace an
        nn.GRU module, even to read its weights, so the compiled rollout step receives these)."""
        g = self.gru
        return g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0

    def embed(self, e: Tensor, mask: Tensor | None = None) -> Tensor:
        """Non-causal sequence embedding s (B, n_s): bidirectional Hawk, mean over valid steps, linear."""
        self._check_e(e, 3, "e")
        mask = check_padding_mask(mask, e.shape[0], e.shape[1])
        y = self.embedder(self.embed_in(e), mask)  # padded steps are 0
        n = e.shape[1] if mask is None else mask.sum(dim=1, keepdim=True).clamp_min(1).to(y.dtype)
        return self.embed_out(y.sum(dim=1) / n)

    def encode(self, e: Tensor, h_prev: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of the proposal z̃ from f_enc(e_t, h_{t-1}, s); inputs share their leading dims."""
        mu, logvar = self.encoder(torch.cat([e, h_prev, s], dim=-1)).chunk(2, dim=-1)
        return mu, logvar

    def switch_logit(self, e_t: Tensor, h_prev: Tensor, z_prev: Tensor) -> Tensor:
        """f_switch(e_t, h_{t-1}, z_{t-1}) before the sigmoid, shape (...,)."""
        return self.switch_out(F.relu(self.switch_in(torch.cat([e_t, h_prev, z_prev], dim=-1)))).squeeze(-1)

    def switch(self, e_t: Tensor, h_prev: Tensor, z_prev: Tensor) -> Tensor:
        """Switch probability β_t = σ(f_switch(e_t, h_{t-1}, z_{t-1})) (no relaxation, no β_1 = 1 forcing)."""
        return torch.sigmoid(self.switch_logit(e_t, h_prev, z_prev))

    def decode(self, z: Tensor) -> ControlParams:
        """Controller U = f_hyp(z) for codes z (..., n_z)."""
        return self.decoder(z)

    def binarize(self, beta: Tensor) -> Tensor:
        """Switch decisions β ≥ beta_threshold (bool), the rule internal RL uses."""
        return beta >= self.config.beta_threshold

    def _relax(self, logit: Tensor, sample: bool, switch_noise: Tensor | None) -> Tensor:
        """β from the switch logit according to ``config.switch``."""
        c = self.config
        beta, p = relax_value(logit, c.switch, c.gumbel_tau, c.beta_threshold, switch_noise if sample else None)
        if c.switch == "hard":
            return beta + (p - p.detach())  # straight-through: value exactly hard, gradient of p
        return beta

    def _draw_noise(
        self, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None, logistic: bool = False
    ) -> Tensor:
        if not logistic:
            return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
        u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
        u = u.clamp(torch.finfo(like.dtype).tiny, 1.0 - torch.finfo(like.dtype).eps)
        return torch.log(u) - torch.log1p(-u)

    # ----- whole sequences (discovery) ------------------------------------------------------------

    def forward(
        self,
        e: Tensor,
        mask: Tensor | None = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        switch_noise: Tensor | None = None,
        force_switch: bool = False,
        switch_schedule: Tensor | None = None,
    ) -> MetaOutput:
        """Run the metacontroller over residual streams e (B, T, D) and return β, z, U and ê for every step.

        ``sample=False`` uses z̃ = μ (and no Gumbel noise). ``noise`` (B, T, n_z) / ``switch_noise`` (B, T)
        replace the random draws (otherwise drawn from ``generator``); the ones used are returned.
        ``force_switch`` sets β ≡ 1 for this call only (as ``always_switch`` does for every call).
        ``switch_schedule`` (B, T) imposes β instead of the switching unit (β_1 = 1 still), for analysis:
        e.g. switches exactly at ground-truth subgoal boundaries, to price the segmentation the paper finds.
        """
        c = self.config
        self._check_e(e, 3, "e")
        batch, length, _ = e.shape
        mask = check_padding_mask(mask, batch, length)
        if mask is not None:  # padded inputs must not matter, even if NaN
            e_in = torch.where(mask[:, :, None], e, torch.zeros((), dtype=e.dtype, device=e.device))
        else:
            e_in = e

        h = gru_sequence(self.gru, e_in)  # h_t after e_t, (B, T, n_h)
        h_prev = F.pad(h[:, :-1], (0, 0, 1, 0))  # h_{t-1}, with h_0 = 0
        s = self.embed(e_in, mask)
        mu, logvar = self.encode(e_in, h_prev, repeat(s, "b n -> b t n", t=length))
        if sample:
            if noise is None:
                noise = self._draw_noise((batch, length, c.n_z), e, generator)
            elif noise.shape != mu.shape:
                raise ValueError(f"noise must be (B, T, n_z) = {tuple(mu.shape)}, got {tuple(noise.shape)}")
            z_tilde = mu + torch.exp(0.5 * logvar) * noise
        else:
            noise, z_tilde = None, mu

        always = c.always_switch or force_switch
        use_gumbel = sample and c.switch == "gumbel" and not always
        if use_gumbel:
            if switch_noise is None:
                switch_noise = self._draw_noise((batch, length), e, generator, logistic=True)
            elif switch_noise.shape != (batch, length):
                raise ValueError(
                    f"switch_noise must be (B, T) = ({batch}, {length}), got {tuple(switch_noise.shape)}"
                )
        else:
            switch_noise = None

        if always:
            beta, z = torch.ones(batch, length, dtype=e.dtype, device=e.device), z_tilde
        elif switch_schedule is not None:
            if switch_schedule.shape != (batch, length):
                raise ValueError(f"switch_schedule must be (B, T) = ({batch}, {length}), "
                                 f"got {tuple(switch_schedule.shape)}")
            beta = switch_schedule.to(e.dtype).clone()
            beta[:, 0] = 1.0
            b = beta[:, :, None]
            z = linear_scan((1.0 - b).expand_as(z_tilde).contiguous(), b * z_tilde)  # z_t = β_t z̃_t + (1 − β_t) z_{t−1}
        else:
            beta, z = self._integrate(e_in, h_prev, z_tilde, sample, switch_noise)

        e_hat = self.decoder.control(e_in, z)  # = decode(z).apply(e_in), without materialising U_t
        kl = gaussian_kl(mu, logvar)
        if mask is not None:  # no control, no switch and no KL at padded steps
            zero = torch.zeros((), dtype=e.dtype, device=e.device)
            beta = torch.where(mask, beta, zero)
            kl = torch.where(mask, kl, zero)
            e_hat = torch.where(mask[:, :, None], e_hat, e_in)  # padded: zeros, never NaN
            last = (mask.sum(dim=1) - 1).clamp_min(0)
            h_last = h[torch.arange(batch, device=e.device), last]
        else:
            h_last = h[:, -1]
        return MetaOutput(
            beta, z, z_tilde, mu, logvar, kl, e_hat, h, h_last, s, noise, switch_noise, self.decoder
        )

    def _integrate(
        self, e: Tensor, h_prev: Tensor, z_tilde: Tensor, sample: bool, switch_noise: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The β/z recurrence z_t = β_t z̃_t + (1 − β_t) z_{t−1}, a python loop over T of a few small ops.

        f_switch reads z_{t−1} only through its first layer, y_t = W_z z_t, and y obeys the same
        recurrence as z: y_t = β_t (W_z z̃_t) + (1 − β_t) y_{t−1}. So W_z z̃ and the parts of the first
        layer that read e and h are computed for all t at once, the loop (``switch_recurrence``, with a
        hand-written backward) carries only y, and z itself is one parallel linear scan over the β found.
        """
        D, n_h = self.config.d_model, self.config.n_h
        w, b = self.switch_in.weight, self.switch_in.bias
        pre = F.linear(torch.cat([e, h_prev], dim=-1), w[:, : D + n_h], b)  # (B, T, switch_hidden)
        y_tilde = F.linear(z_tilde, w[:, D + n_h :])  # W_z z̃_t, (B, T, switch_hidden)
        c = self.config
        beta = switch_recurrence(pre, y_tilde, self.switch_out.weight[0], self.switch_out.bias[0],
                                 switch_noise if c.switch == "gumbel" and sample else None,
                                 c.switch, c.gumbel_tau, c.beta_threshold)
        keep = (1.0 - beta)[:, :, None].expand_as(z_tilde).contiguous()
        return beta, linear_scan(keep, beta[:, :, None] * z_tilde)

    # ----- one step at a time (rollouts) -----------------------------------------------------------

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MetaState:
        """State before the first step: h_0 = 0, z_0 = 0, first = True."""
        p = self.switch_in.weight
        device, dtype = device or p.device, dtype or p.dtype
        return MetaState(
            h=torch.zeros(batch, self.config.n_h, device=device, dtype=dtype),
            z_prev=torch.zeros(batch, self.config.n_z, device=device, dtype=dtype),
            first=torch.ones(batch, dtype=torch.bool, device=device),
        )

    def step(
        self,
        e_t: Tensor,
        state: MetaState,
        s: Tensor | None = None,
        noise: Tensor | None = None,
        sample: bool = True,
        generator: torch.Generator | None = None,
        switch_noise: Tensor | None = None,
        z_tilde: Tensor | None = None,
    ) -> tuple[MetaStep, MetaState]:
        """One step for e_t (B, D): β_t, z_t, U_t, ê_t, then h_t. Equals ``forward`` at that step.

        The proposal z̃_t comes from the encoder (needs the sequence embedding ``s`` (B, n_s), e.g. from
        ``embed``; ``noise`` (B, n_z) as in forward) or is given directly as ``z_tilde`` (B, n_z).
        """
        c = self.config
        self._check_e(e_t, 2, "e_t")
        batch = e_t.shape[0]
        if (
            state.h.shape != (batch, c.n_h)
            or state.z_prev.shape != (batch, c.n_z)
            or state.first.shape != (batch,)
        ):
            raise ValueError(f"state does not match batch size {batch}; make it with initial_state({batch})")
        # Rows starting an episode see h_0 = 0 and z_0 = 0 (so setting `first` resets them).
        zero = torch.zeros((), dtype=e_t.dtype, device=e_t.device)
        h_prev = torch.where(state.first[:, None], zero, state.h)
        z_prev = torch.where(state.first[:, None], zero, state.z_prev)
        if z_tilde is None:
            if s is None:
                raise ValueError(
                    "step needs the sequence embedding s (B, n_s), or a proposal z_tilde (B, n_z)"
                )
            if s.shape != (batch, c.n_s):
                raise ValueError(f"s must be (B, n_s) = ({batch}, {c.n_s}), got {tuple(s.shape)}")
            mu, logvar = self.encode(e_t, h_prev, s)
            if sample:
                if noise is None:
                    noise = self._draw_noise((batch, c.n_z), e_t, generator)
                z_tilde = mu + torch.exp(0.5 * logvar) * noise
            else:
                z_tilde = mu
            kl = gaussian_kl(mu, logvar)
        else:
            if z_tilde.shape != (batch, c.n_z):
                raise ValueError(f"z_tilde must be (B, n_z) = ({batch}, {c.n_z}), got {tuple(z_tilde.shape)}")
            mu = logvar = kl = None

        one = torch.ones(batch, dtype=e_t.dtype, device=e_t.device)
        if c.always_switch:
            beta = one
        else:
            if sample and c.switch == "gumbel" and switch_noise is None:
                switch_noise = self._draw_noise((batch,), e_t, generator, logistic=True)
            beta = self._relax(self.switch_logit(e_t, h_prev, z_prev), sample, switch_noise)
            beta = torch.where(state.first, one, beta)
        z = beta[:, None] * z_tilde + (1.0 - beta[:, None]) * z_prev
        params = self.decode(z)
        e_hat = params.apply(e_t)
        h = self.history_step(e_t, h_prev)
        new_state = MetaState(h=h, z_prev=z, first=torch.zeros_like(state.first))
        return MetaStep(beta, z, z_tilde, mu, logvar, kl, params, e_hat), new_state


def discovery_loss(
    action_logp: Tensor, out: MetaOutput, mask: Tensor | None = None, alpha: float = 0.0
) -> dict[str, Tensor]:
    """Negative ELBO of paper Eq. 3: Σ_t [−log p(a_t | …) + α KL_t] over valid steps.

    Normalisation: sums over all valid steps of the batch, divided by their count (a per-step mean,
    so α means the same for any T and padding). Returns {"loss", "nll", "kl"}, nll and kl per step, and
    per episode (B,) "episode_loss" (the same sum over that episode's valid steps) and "episode_steps", for
    comparing runs episode by episode (a paired bootstrap over held-out episodes).
    """
    if action_logp.shape != out.kl.shape:
        raise ValueError(
            f"action_logp must be (B, T) = {tuple(out.kl.shape)}, got {tuple(action_logp.shape)}"
        )
    mask = check_padding_mask(mask, *action_logp.shape)
    if mask is None:
        mask = torch.ones_like(action_logp, dtype=torch.bool)
    zero = torch.zeros((), dtype=action_logp.dtype, device=action_logp.device)
    n = mask.sum().clamp_min(1).to(action_logp.dtype)
    step_nll, step_kl = torch.where(mask, -action_logp, zero), torch.where(mask, out.kl, zero)
    nll, kl = step_nll.sum() / n, step_kl.sum() / n
    return {"loss": nll + alpha * kl, "nll": nll, "kl": kl,
            "episode_loss": (step_nll + alpha * step_kl).sum(-1), "episode_steps": mask.sum(-1)}
