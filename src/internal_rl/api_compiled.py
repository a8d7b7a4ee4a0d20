"""The seed API's rollout step with every shape fixed, so that ``torch.compile`` makes one graph of it.

The eager step (``api.Transformer._rollout_step``) slices the filled part of its KV cache and steps the
policy only on the rows that switch: cheap in eager PyTorch, but its shapes change at every step, and at
small batch its ~170 tensor ops cost far more in dispatch than in arithmetic. Here the KV cache has a
fixed capacity and is masked, the position is a tensor, and at a step where some row switches the policy
and the decoder run on every row (``torch.cond`` skips them when none does) with the switch decision
applied by ``torch.where``. ``Transformer.compile_rollout`` compiles ``static_step`` once per (batch,
cache capacity), and the step then runs as a few fused kernels around its matrix products, called from
C++. Same modules, same numbers and the same random draws as the eager step (float tolerance, tested);
only the shapes differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from einops import rearrange
from torch import Tensor

from internal_rl.control.controller import ControlParams
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.models.ssm import HawkBlockState
from internal_rl.models.transformer import Block, grow_kv
from internal_rl.rl.policy import select_state

if TYPE_CHECKING:  # api imports this module
    from internal_rl.api import MetaController

__all__ = ["StaticKV", "control_params", "control_tensors", "static_step", "compiled_step"]


@dataclass
class StaticKV:
    """The key/value cache of a compiled rollout (``RolloutCache.static``): fixed capacity, masked, written
    at a tensor position. The metacontroller's state stays in the ``RolloutCache`` fields, as in eager."""

    k: list[Tensor]
    """Keys per layer (B, H, C, head_dim), zeroed at creation, written in place at ``pos``."""
    v: list[Tensor]
    """Values per layer, like ``k``."""
    pos: Tensor
    """0-dim long: the position the next step writes (= steps taken)."""

    @classmethod
    def zeros(cls, base: SequenceModel, batch: int, capacity: int) -> StaticKV:
        """An empty cache for `batch` episodes and `capacity` steps."""
        c = base.config
        p = base.action_head.weight
        shape = (batch, c.n_heads, capacity, c.head_dim)
        k = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(c.depth)]
        v = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(c.depth)]
        return cls(k, v, torch.zeros((), dtype=torch.long, device=p.device))

    def grow(self, need: int) -> None:
        """Double the capacity (copying the filled keys and values) until it holds `need` steps."""
        grow_kv(self.k, self.v, need)


def _flatten_state(state: list[HawkBlockState]) -> list[Tensor]:
    return [t for block in state for t in block]


def _unflatten_state(flat: tuple[Tensor, ...] | list[Tensor]) -> list[HawkBlockState]:
    n = len(HawkBlockState._fields)
    return [HawkBlockState(*flat[i:i + n]) for i in range(0, len(flat), n)]


def control_tensors(params: ControlParams) -> list[Tensor]:
    """U as the list ``static_step`` carries: [A, B] low rank, [U] full rank."""
    return [params.U] if params.full_rank else [params.A, params.B]


def control_params(control: list[Tensor]) -> ControlParams:
    """The inverse of ``control_tensors``."""
    return ControlParams(U=control[0]) if len(control) == 1 else ControlParams(A=control[0], B=control[1])


def _block_step(block: Block, x: Tensor, k_buf: Tensor, v_buf: Tensor, pos: Tensor) -> Tensor:
    """One position through a pre-norm block (B, D) against its static cache."""
    x = x + block.attn.decode_static(block.ln1(x), k_buf, v_buf, pos)
    return x + block.mlp(block.ln2(x))


def static_step(
    base: SequenceModel,
    mc: MetaController | None,
    obs: Tensor,
    prev_action: Tensor,
    k: list[Tensor],
    v: list[Tensor],
    pos: Tensor,
    first: Tensor,
    h: Tensor | None,
    z: Tensor | None,
    mean: Tensor | None,
    logstd: Tensor | None,
    policy_state: list[HawkBlockState] | None,
    control: list[Tensor] | None,
    noise: Tensor | None,
    gru_weights: tuple[Tensor, ...] | None,
) -> dict[str, Any]:
    """One rollout step for obs (B, S) and the previous action (B,) ids or (B, A), at position ``pos``.

    ``first`` (0-dim bool) forces β = 1; ``noise`` (B, n_z) standard normal draws z = mean + σ·noise where
    the switch fires (β ≥ threshold), elsewhere z, its Gaussian and the policy state are kept. ``control``
    holds U = f_hyp(z) of the z in use ([A, B] low rank, [U] full rank), decoded again only at steps where
    some row switches (``torch.cond``), and applied as ê = e + U e. Writes the keys and values in place;
    returns the new state and what ``MetaRolloutOutput`` records. ``gru_weights`` are
    ``mc.core.gru_weights()`` (h_t = GRU(e_t, h_{t−1}) as in ``history_step``).
    """
    c = base.config
    layer = c.control_layer
    e = base.embed(obs[:, None], prev_action[:, None])[:, 0]
    for i in range(layer):
        e = _block_step(base.blocks[i], e, k[i], v[i], pos)
    out: dict[str, Any] = {"e": e, "pos": pos + 1}
    x = e
    if mc is not None:
        core, policy = mc.core, mc.policy
        one = torch.ones(e.shape[0], dtype=e.dtype, device=e.device)
        beta = one if core.config.always_switch else torch.where(first, one, core.switch(e, h, z))
        switched = core.binarize(beta)
        n_control = len(control)

        def decide(z, mean, logstd, *rest):
            """Rows that switch draw z from the policy; then U = f_hyp(z) for every row (unchanged for the rest)."""
            state = _unflatten_state(rest[n_control:])
            new_mean, new_logstd, new_state = policy.step(e, state)
            rows = switched[:, None]
            z = torch.where(rows, new_mean + new_logstd.exp() * noise, z)
            params = core.decode(z)
            return (z, torch.where(rows, new_mean, mean), torch.where(rows, new_logstd, logstd),
                    *control_tensors(params), *_flatten_state(select_state(switched, new_state, state)))

        def keep(*carried):
            """No row switches: z, its Gaussian, U and the policy state stay as they are."""
            return tuple(t.clone() for t in carried)

        # The policy and the decoder (a quarter of the step's weights) run only when some row switches.
        carried = (z, mean, logstd, *control, *_flatten_state(policy_state))
        z, mean, logstd, *rest = torch.cond(switched.any(), decide, keep, carried)
        control, policy_state = rest[:n_control], _unflatten_state(rest[n_control:])
        out.update(beta=beta, switched=switched, z=z, mean=mean, logstd=logstd, control=control,
                   policy_state=policy_state, h=torch.gru_cell(e, h, *gru_weights))
        x = control_params(control).apply(e)  # ê = e + U e
    for i in range(layer, c.depth):
        x = _block_step(base.blocks[i], x, k[i], v[i], pos)
    heads = base.heads(x, predict_obs=False)
    out["logits"] = (heads.action_logits if c.discrete
                     else torch.cat([heads.action_logits, heads.action_logstd], dim=-1))
    return out


def compiled_step(**compile_kwargs: Any) -> Callable[..., dict[str, Any]]:
    """``static_step`` through ``torch.compile`` (one full graph, static shapes, C++ wrapper; kwargs override).

    One compiled function per set of options for the whole process, so that turning compiling off and on
    again (or a second model of the same sizes) reuses what was compiled.
    """
    key = repr(sorted(compile_kwargs.items()))
    if key not in _COMPILED:
        _COMPILED[key] = _compile(compile_kwargs)
    return _COMPILED[key]


_COMPILED: dict[str, Callable[..., dict[str, Any]]] = {}

# Dynamo checks about 1,150 guards before every call of the step (about 60-100 µs at batch 2, a tenth of the
# step). Kept: every tensor's dtype, device, shape and strides, every Python value the graph depends on
# (layer sizes, the attention window, the switch threshold, flags), sequence lengths, object identities
# (None or not) and global state. Dropped: checks that a module's hook dicts are still empty, that an
# attribute was not added to an instance, and exact Python types; so forward hooks registered on the
# model after its first compiled step are not run by the compiled step.
_KEPT_GUARDS = frozenset({
    "TENSOR_MATCH", "CONSTANT_MATCH", "EQUALS_MATCH", "SEQUENCE_LENGTH", "ID_MATCH", "DUPLICATE_INPUT",
    "GRAD_MODE", "GLOBAL_STATE", "SHAPE_ENV", "DEFAULT_DEVICE", "TORCH_FUNCTION_STATE",
    "DETERMINISTIC_ALGORITHMS", "AUTOGRAD_SAVED_TENSORS_HOOKS",
})


def _essential_guards(entries: list) -> list[bool]:
    """``guard_filter_fn`` for torch.compile: True for the guards listed in ``_KEPT_GUARDS``."""
    return [entry.guard_type in _KEPT_GUARDS for entry in entries]


def _compile(compile_kwargs: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    # einops registers a backend per tensor type on first use, and dynamo guards on that registry: register
    # the types the step's modules can hand it (tensors; parameters, as HyperDecoder.control does) now, or the
    # first trace changes the registry and the second step throws the compiled graph away (compiling twice).
    for x in (torch.zeros(1, 1), torch.nn.Parameter(torch.zeros(1, 1))):
        rearrange(x, "a b -> b a")
    # Every (batch size, cache capacity, model size) is its own graph of this one function; dynamo's default
    # limit of 8 graphs per function would make a fullgraph compile raise after a few rollouts of new sizes.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    # The C++ wrapper calls the kernels without a Python line per kernel (about 20 % off a step at batch 2).
    # The guard filter keeps the guards that decide which graph is right (below).
    inductor_options: dict[str, Any] = {"guard_filter_fn": _essential_guards}
    if compile_kwargs.get("backend", "inductor") == "inductor":
        inductor_options["cpp_wrapper"] = True
    options: dict[str, Any] = dict(fullgraph=True, dynamic=False)
    if "mode" not in compile_kwargs:  # torch.compile takes a mode or options, not both
        options["options"] = inductor_options
    options.update(compile_kwargs)
    return torch.compile(static_step, **options)
