"""Observation encoders: map an observation o_t to the first residual-stream vector e_{t,0}.

The paper does not specify the encoder. `linear` is a single linear map of the flat observation.
`grid` is a function of the same observation only (no extra information) that makes two things
linear which a flat linear map cannot express: the contents of the cell under the agent (what was
just visited) and an egocentric view of the grid (where things are relative to the agent). On
2 CPU cores this is what lets in-context subgoal inference emerge within minutes (docs/RESULTS.md).
`nav` adds, for every colour, the set of first moves on a shortest path to it that avoids walls and
the other colours: a fixed (parameter-free) planning feature of the observation alone, so that a
small CPU budget goes into learning *which* colour to go to (the abstract part) rather than how to
walk there. It never sees the task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class LinearEncoder(nn.Module):
    """e_0 = W o + b."""

    def __init__(self, obs_dim: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(obs_dim, d_model)

    def forward(self, obs: Tensor) -> Tensor:
        return self.proj(obs)


class GridEncoder(nn.Module):
    """Encoder for (row, col, channel) one-hot grids whose last channel marks the agent.

    e_0 = W_flat o + W_under (contents of the agent's cell) + W_ego (egocentric view), where the
    egocentric view places every cell's contents (plus an "inside the grid" bit) at its offset from
    the agent in a (2G−1)×(2G−1) window.

    The three maps are applied as sums of weight columns over the observation's non-zero entries
    (`F.embedding_bag`) rather than as dense products: an
    observation has O+W+1 non-zeros among G²·C entries and its window G²+O+W among (2G−1)²·C, so the
    dense form spent most of a pretraining step's encoder time multiplying zeros (docs/RESULTS.md,
    Session 14). The "inside" bits depend on the agent's cell only and are read from a per-cell table.
    The weights are stored column-major so that the sums read them without a copy. `egocentric` builds
    the window explicitly, as the reference the tests compare against.
    """

    def __init__(self, grid: int, channels: int, d_model: int):
        super().__init__()
        self.grid, self.channels = grid, channels
        window = (2 * grid - 1) ** 2
        self.flat = nn.Linear(grid * grid * channels, d_model)
        self.under = nn.Linear(channels - 1, d_model, bias=False)
        self.ego = nn.Linear(window * channels, d_model, bias=False)
        rows, cols = (x.reshape(-1) for x in torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"))
        # window_of[p, cell]: the window slot of `cell` seen from an agent at cell p
        window_of = ((rows[None] - rows[:, None] + grid - 1) * (2 * grid - 1)
                     + (cols[None] - cols[:, None] + grid - 1))
        self.register_buffer("window_of", window_of, persistent=False)
        inside_count = torch.zeros(grid * grid, window)  # 1 where an agent at cell p sees a cell at window slot w
        inside_count.scatter_(1, window_of, 1.0)
        self.register_buffer("inside_count", inside_count, persistent=False)
        for linear in (self.flat, self.under, self.ego):
            _column_major(linear)

    def egocentric(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Return (contents under agent (N, C−1), egocentric window (N, (2G−1)², C)) for flat obs (N, G²C)."""
        G, C = self.grid, self.channels
        cells = rearrange(obs, "n (cell k) -> n cell k", k=C)
        agent, contents = cells[..., -1], cells[..., :-1]
        under = (agent[..., None] * contents).sum(1)
        idx = self.window_of[agent.argmax(dim=1)]
        inside = torch.ones_like(contents[..., :1])
        values = torch.cat([contents, inside], dim=-1)
        window = obs.new_zeros(obs.shape[0], (2 * G - 1) ** 2, C)
        window.scatter_(1, idx[..., None].expand(-1, -1, C), values)
        return under, window

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, obs.shape[-1])
        N, C = flat.shape[0], self.channels
        token, entry = flat.nonzero(as_tuple=True)  # row-major, so grouped by token as embedding_bag needs
        value = flat[token, entry]
        cell, k = entry // C, entry % C
        pos = flat.reshape(N, -1, C)[..., -1].argmax(dim=1)  # the agent's cell
        content = (k < C - 1).to(flat.dtype)  # agent-channel entries take part in the flat map only
        agent_value = flat[token, cell * C + C - 1]  # agent channel of the entry's cell
        counts = torch.bincount(token, minlength=N)
        offsets = torch.cumsum(counts, 0) - counts  # every entry in each of the three sums: shared offsets

        def bag(linear: nn.Linear, rows: Tensor, weights: Tensor) -> Tensor:
            """Σ over each token's entries of weights · (column `rows` of linear.weight): (N, d)."""
            table = linear.weight.t()  # (in, d); contiguous in the layout set by _column_major
            return F.embedding_bag(rows, table if table.is_contiguous() else table.contiguous(), offsets,
                                   mode="sum", per_sample_weights=weights)

        e = bag(self.flat, entry, value)
        e = e + bag(self.under, k.clamp(max=C - 2), value * agent_value * content)
        e = e + bag(self.ego, self.window_of[pos[token], cell] * C + k, value * content)
        # the "inside" bits of every cell, summed per agent cell: (G², window) counts times the inside columns,
        # for every agent cell once (or, with fewer tokens than cells, for each token's cell: a rollout step of
        # one episode would otherwise spend a fifth of its encoder time on the 49-row product);
        # float32 under autocast too, like the embedding-bag sums (as the pretraining runs measured it)
        per_cell = N >= self.inside_count.shape[0]
        with torch.autocast(flat.device.type, enabled=False):
            seen = self.inside_count if per_cell else self.inside_count[pos]
            inside = seen @ rearrange(self.ego.weight, "d (w k) -> w k d", k=C)[:, -1]
        return (e + self.flat.bias + (F.embedding(pos, inside) if per_cell else inside)).reshape(*lead, -1)


def _column_major(linear: nn.Linear) -> None:
    """Lay the (d, in) weight out column by column, so that weight.t() is the contiguous (in, d) table
    embedding_bag reads without a copy; nn.Linear, state dicts and checkpoints see the same values."""
    linear.weight = nn.Parameter(linear.weight.detach().t().contiguous().t())


_FAR = 10_000  # distance of cells from which a colour cannot be reached


def _unique_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of an int64 matrix and, per row, the index of its distinct row (vectorised
    lexicographic sort; torch.unique(dim=0) compares rows one by one and is slow on CPU)."""
    order = torch.arange(x.shape[0], device=x.device)
    for j in reversed(range(x.shape[1])):
        order = order[torch.sort(x[order, j], stable=True).indices]
    xs = x[order]
    new = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    new[1:] = (xs[1:] != xs[:-1]).any(dim=1)
    group = torch.cumsum(new.to(torch.int64), 0) - 1
    inverse = torch.empty_like(group)
    inverse[order] = group
    return xs[new], inverse


class LayoutMemo:
    """BFS levels of the layouts seen in the last call, reused when a later call's layouts are among them.

    The BFS depends on the layout only, which stays the same along an episode: a rollout that encodes one
    observation per episode per step would otherwise redo every episode's BFS at every step. The memo is
    keyed by the whole layout (colour and wall cell sets), so a hit returns exactly what the BFS would.
    """

    def __init__(self) -> None:
        self.layouts: Tensor | None = None  # (U, O+1) int64 cell sets, as `_unique_rows` returns them
        self.level_of: Tensor | None = None  # (U, O, cells)

    def lookup(self, layouts: Tensor) -> Tensor | None:
        """Row of each of `layouts` (V, O+1) in the memo (V,), or None unless every one of them is there."""
        if self.layouts is None or self.layouts.device != layouts.device or self.layouts.shape[1] != layouts.shape[1]:
            return None
        known = self.layouts.shape[0]
        merged, inverse = _unique_rows(torch.cat([self.layouts, layouts]))
        if merged.shape[0] != known:
            return None
        slot = torch.empty(known, dtype=torch.int64, device=layouts.device)
        slot[inverse[:known]] = torch.arange(known, device=layouts.device)
        return slot[inverse[known:]]


def _bfs_levels(u_target: Tensor, u_walls: Tensor, grid: int, bit: Tensor) -> Tensor:
    """(U, O, cells) BFS distance from every cell to each colour's cell set (_FAR where unreachable);
    `bit` (cells,) holds 1 << cell."""
    n_cells, dev = grid * grid, u_target.device
    col = torch.arange(n_cells, device=dev) % grid
    not_first_col, not_last_col = _pack(col > 0, bit), _pack(col < grid - 1, bit)
    full = _pack(torch.ones(n_cells, dtype=torch.bool, device=dev), bit)  # the G² cell bits
    colour_cells = u_target[:, 0]
    for c in range(1, u_target.shape[1]):
        colour_cells = colour_cells | u_target[:, c]
    passable = (full & ~u_walls & ~colour_cells)[:, None] | u_target  # (U, O)
    cell_bits = bit.view(1, 1, -1)
    level_of = torch.where((u_target[..., None] & cell_bits) != 0, 0, _FAR)  # (U, O, cells)
    reached, frontier = u_target, u_target
    for level in range(1, n_cells):
        grow = ((frontier >> 1) & not_last_col) | ((frontier << 1) & not_first_col)
        grow = grow | (frontier >> grid) | ((frontier << grid) & full)
        frontier = grow & passable & ~reached
        if not bool(frontier.any()):
            break
        reached = reached | frontier
        level_of = torch.where((frontier[..., None] & cell_bits) != 0, level, level_of)
    return level_of


def _pack(mask: Tensor, bit: Tensor) -> Tensor:
    """(..., cells) bool → (...,) int64 cell set (bit i = cell i); float64 sums of distinct bits below 2^53
    are exact."""
    return (mask.to(torch.float64) @ bit.to(torch.float64)).to(torch.int64)


def shortest_path_moves(obs: Tensor, grid: int, n_colors: int, memo: LayoutMemo | None = None) -> Tensor:
    """(N, O, 4) bool: for each colour c, the moves (up, down, left, right) that shorten the path to c.

    obs is (N, G²·C) with channels [O colours | walls | agent]. As for the expert, walls and every
    colour other than c are obstacles, a move into a wall or off the grid is a no-op (never optimal),
    and a colour that cannot be reached has no optimal move. BFS from every colour at once, one level
    per iteration, each map held as a 64-bit cell set (bit i = cell i), so G² must be at most 63.
    The BFS runs once per distinct layout in `obs`; with a `memo`, not at all when every layout was
    in the memo's last call (the memo then keeps the layouts of this call).
    """
    if grid * grid > 63:
        raise ValueError(f"shortest_path_moves supports grids up to 7x7 (G²≤63), got G={grid}")
    n_cells, dev = grid * grid, obs.device
    cells = rearrange(obs, "n (cell k) -> n cell k", cell=n_cells) > 0.5
    colour, wall, agent = cells[..., :n_colors], cells[..., n_colors:-1].any(-1), cells[..., -1]
    bit = torch.ones(n_cells, dtype=torch.int64, device=dev) << torch.arange(n_cells, device=dev)
    target = _pack(rearrange(colour, "n cell o -> n o cell"), bit)  # (N, O)
    layouts, inverse = _unique_rows(torch.cat([target, _pack(wall, bit)[:, None]], dim=1))
    slot = memo.lookup(layouts) if memo is not None else None
    if slot is None:
        level_of = _bfs_levels(layouts[:, :n_colors], layouts[:, n_colors], grid, bit)
        if memo is not None:
            memo.layouts, memo.level_of = layouts, level_of
    else:
        level_of, inverse = memo.level_of, slot[inverse]
    pos = agent.to(torch.int64).argmax(dim=1)
    row, column = pos // grid, pos % grid
    nr = (row[:, None] + torch.tensor([-1, 1, 0, 0], device=dev)).clamp(0, grid - 1)
    nc = (column[:, None] + torch.tensor([0, 0, -1, 1], device=dev)).clamp(0, grid - 1)
    nxt = nr * grid + nc  # (N, 4) cell each action leads to
    nxt = torch.where(wall.gather(1, nxt), pos[:, None], nxt)
    moves = nxt != pos[:, None]
    colours = torch.arange(n_colors, device=dev)
    dist = level_of[inverse[:, None, None], colours[None, :, None], nxt[:, None, :]]  # (N, O, 4)
    dist = torch.where(moves[:, None, :], dist, _FAR)
    best = dist.min(dim=2, keepdim=True).values
    return (dist == best) & (best < _FAR)


class NavEncoder(GridEncoder):
    """`grid` encoder plus a linear map of the shortest-path moves towards every colour.

    e_0 = GridEncoder(o) + W_nav vec(M(o)), M(o) ∈ {0,1}^{O×4} from `shortest_path_moves`.
    """

    def __init__(self, grid: int, channels: int, d_model: int, n_colors: int):
        super().__init__(grid, channels, d_model)
        if not 0 < n_colors < channels - 1:
            raise ValueError(f"nav encoder: n_colors {n_colors} must lie in 1..{channels - 2} for {channels} channels")
        self.n_colors = n_colors
        self.nav = nn.Linear(n_colors * 4, d_model, bias=False)
        self.memo = LayoutMemo()  # a pure cache: one-step rollouts see the same layouts at every step

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, obs.shape[-1])
        with torch.no_grad():
            moves = shortest_path_moves(flat, self.grid, self.n_colors, self.memo)
        e = super().forward(flat) + self.nav(rearrange(moves, "n o a -> n (o a)").to(flat.dtype))
        return e.reshape(*lead, -1)


ENCODERS = ("linear", "grid", "nav")


def make_encoder(kind: str, obs_dim: int, d_model: int, grid: int = 7, n_colors: int = 8) -> nn.Module:
    """Build the encoder named `kind` (one of ENCODERS)."""
    if kind == "linear":
        return LinearEncoder(obs_dim, d_model)
    if kind in ("grid", "nav"):
        if obs_dim % (grid * grid):
            raise ValueError(f"{kind} encoder: obs_dim {obs_dim} is not a multiple of grid²={grid * grid}")
        channels = obs_dim // (grid * grid)
        if kind == "grid":
            return GridEncoder(grid, channels, d_model)
        return NavEncoder(grid, channels, d_model, n_colors)
    raise ValueError(f"unknown encoder {kind!r}; expected one of {', '.join(ENCODERS)}")
