"""Inpainting of committed actions (real-time chunking) in the sampling chain: hard, or soft.

A chunk planned while the previous one still runs must agree with the actions that will execute
before it arrives. Given those committed actions a (normalised units) at horizon positions P,
every state of the chain is held to them on P:

    x_i[P] = q_i = sqrt(abar_{t_i}) a + sqrt(1 - abar_{t_i}) eps[P],   i = 0 .. T-1,      x_T[P] = a,

with eps the chunk's initial noise x_0 (one fixed draw: no extra random numbers, and the same for
DDIM, which adds no noise per step; q_i is a sample of the forward process at t_i). The other
entries follow the scheduler's step, so with the noise drawn up front the chain stays the
triangular fixed-point system

    x_{i+1} = M q_{i+1} + (1 - M) (f_i(x_i) + n_i)          (M = 1 on P, 0 elsewhere)

that every sampler solves: sequential, ParaDiGMS and ParaTAA agree at tolerance 0, and the answer
equals a on P exactly. Diffusion Policy's own `conditional_sample` overwrites masked entries with
the clean data at every step; noising them to each step's level keeps every state on the noise
level the network was trained at.

Soft inpainting (RTC's soft mask over the overlap after the frozen prefix) gives each committed
position a weight w in (0, 1]: M above becomes the diagonal of w, so an entry of weight w is pulled
a fraction w of the way to its target at every step, x_{i+1} = w q_{i+1} + (1 - w)(f_i(x_i) + n_i).
Entries of weight 1 are held exactly (bit for bit as hard inpainting), entries of weight 0 are
free; the chain is still one triangular fixed-point system, so the samplers still agree.
`soft_weights` is RTC's decay: 1 on the frozen prefix, then c (e^c - 1) / (e - 1) with c falling
linearly towards 0 over the rest of the overlap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Inpainting:
    """The committed entries of a chunk: held exactly (mask (1, horizon, 1)), pulled by a weight (weights
    (1, horizon, 1), 0 where free; None when every committed entry is held), and the target q_i of every
    state i (T+1, B, ...)."""

    mask: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor | None = None

    @classmethod
    def build(cls, scheduler, noise: torch.Tensor, committed_actions: torch.Tensor,
              committed_positions, committed_weights=None) -> "Inpainting":
        """Targets for `noise` (B, horizon, action_dim) from committed actions (B, n, action_dim) at positions (n,),
        with weights (n,) in (0, 1] (default 1: hard).

        The noise levels are the scheduler's abar at each of its timesteps, in the chain's order.
        """
        positions = torch.as_tensor(committed_positions, dtype=torch.long, device=noise.device).reshape(-1)
        batch, horizon, action_dim = noise.shape
        if committed_actions.shape != (batch, positions.numel(), action_dim):
            raise ValueError(f"committed_actions must be {(batch, positions.numel(), action_dim)} for "
                             f"{positions.numel()} positions, got {tuple(committed_actions.shape)}")
        check_positions(positions, horizon, "committed_positions")
        weights = checked_weights(committed_weights, positions.numel(), "committed_weights")
        full = torch.zeros((1, horizon, 1), dtype=noise.dtype, device=noise.device)
        full[0, positions, 0] = weights.to(full)
        mask = full == 1
        clean = torch.zeros_like(noise)
        clean[:, positions] = committed_actions.to(noise)
        abar = scheduler.alphas_cumprod.to(noise.device)[scheduler.timesteps.to(noise.device).long()]
        shape = (-1,) + (1,) * noise.ndim
        levels = torch.cat([abar, abar.new_ones(1)]).to(noise.dtype)
        targets = levels.reshape(shape) ** 0.5 * clean + (1 - levels).reshape(shape) ** 0.5 * noise
        return cls(mask, targets, None if bool((weights == 1).all()) else full)

    def apply(self, states: torch.Tensor, first: int) -> torch.Tensor:
        """States x_first .. x_{first+W-1} (W, B, ...) with their committed entries set, or pulled towards their
        targets by their weights (indices past T keep x_T's)."""
        index = torch.clamp(torch.arange(first, first + states.shape[0], device=states.device),
                            max=self.targets.shape[0] - 1)
        targets = self.targets[index]
        if self.weights is not None:
            states = states + self.weights * (targets - states)
        return torch.where(self.mask, targets, states)


def soft_weights(frozen: int, overlap: int) -> list[float]:
    """RTC's soft mask for `overlap` committed positions of which the first `frozen` are held: 1 there, then
    c (e^c - 1) / (e - 1) with c = (overlap - j) / (overlap - frozen + 1) for j = frozen .. overlap - 1."""
    if not 0 <= frozen <= overlap:
        raise ValueError(f"need 0 <= frozen <= overlap (got {frozen}, {overlap})")
    span = overlap - frozen + 1
    decay = [(overlap - j) / span for j in range(frozen, overlap)]
    return [1.0] * frozen + [c * math.expm1(c) / math.expm1(1.0) for c in decay]


def check_positions(positions: torch.Tensor, horizon: int, name: str) -> None:
    """A ValueError naming `name` unless `positions` (n,) are distinct indices into the horizon."""
    if positions.numel() and (positions.min() < 0 or positions.max() >= horizon
                              or positions.unique().numel() != positions.numel()):
        raise ValueError(f"{name} must be distinct indices in 0..{horizon - 1}, got {positions.tolist()}")


def checked_weights(weights, count: int, name: str) -> torch.Tensor:
    """`weights` as (count,) float64, each in (0, 1] (None: all 1), or a ValueError naming `name`."""
    if weights is None:
        return torch.ones(count, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if weights.numel() != count or not bool(((weights > 0) & (weights <= 1)).all()):
        raise ValueError(f"{name} must be {count} values in (0, 1], got {weights.tolist()}")
    return weights


def inpainting_for(scheduler, noise: torch.Tensor, committed_actions: torch.Tensor | None,
                   committed_positions, committed_weights=None) -> Inpainting | None:
    """An `Inpainting`, or None when nothing is committed."""
    if committed_actions is None:
        if committed_positions is not None or committed_weights is not None:
            raise ValueError("committed_positions or committed_weights given without committed_actions")
        return None
    if committed_positions is None:
        raise ValueError("committed_actions given without committed_positions")
    return Inpainting.build(scheduler, noise, committed_actions, committed_positions, committed_weights)
