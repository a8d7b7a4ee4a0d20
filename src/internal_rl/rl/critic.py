"""A critic for internal RL (an option; the paper's PPO is critic-free): V(e_{τ_1}, …, e_{τ_k}), the expected
return from decision k on, read by a causal one-layer Hawk SSM over the residual streams at switch times, the
same input as the policy's. It gives every decision its own advantage (rl/objective.py: decision_advantages)
instead of one shared by the whole episode.
"""

from __future__ import annotations

from torch import Tensor, nn

from internal_rl.rl.policy import SwitchStreamSSM


class LatentCritic(SwitchStreamSSM):
    """Causal SSM value function over decisions (the policy's trunk, its own weights); the head starts at zero
    (V ≡ 0 before training)."""

    def __init__(self, d_model: int, width: int = 256, depth: int = 1):
        super().__init__(d_model, width, depth)
        self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, e: Tensor, mask: Tensor | None = None) -> Tensor:
        """V (B, K) at each of the K decisions, from the residual streams e (B, K, D) seen at them."""
        return self.head(self.features(e, mask))[..., 0]


def value_loss(values: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error of V against its targets over the valid decisions (B, K)."""
    m = mask.to(values.dtype)
    return (((values - targets) ** 2) * m).sum() / m.sum().clamp(min=1)


def critic_targets(returns: Tensor, mask: Tensor) -> Tensor:
    """The critic's regression targets (B, K): with γ = 1 and the only reward at an episode's end, the return
    from every decision on is the episode's return R (Monte Carlo); 0 at padding."""
    return returns[:, None].expand(mask.shape) * mask.to(returns.dtype)
