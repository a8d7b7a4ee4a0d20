"""Issue 5's comparison sizes (dim 128, depth 2 + 2, dim_meta_controller 64, dim_latent 32, state 96, 4 actions)
and our seed-API model and metacontroller built at them: one definition for every bench script that uses them."""

from __future__ import annotations

DIM, DIM_META, DIM_LATENT, STATE, ACTIONS, HEADS, DIM_HEAD, DEPTH = 128, 64, 32, 96, 4, 4, 32, 2


def build_ours(max_len: int | None = None):
    """(Transformer, MetaController) of `internal_rl` at the comparison's sizes; `max_len` sets the KV-cache capacity."""
    from internal_rl import MetaController, Transformer

    kw = {} if max_len is None else dict(max_len=max_len)
    model = Transformer(DIM, action_embed_readout=dict(num_discrete=ACTIONS), state_embed_readout=dict(num_continuous=STATE),
                        lower_body=dict(depth=DEPTH), upper_body=dict(depth=DEPTH), heads=HEADS, dim_head=DIM_HEAD,
                        ff_mult=4.0, **kw)
    return model, MetaController(DIM, dim_meta_controller=DIM_META, dim_latent=DIM_LATENT)
