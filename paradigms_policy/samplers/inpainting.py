"""Hard inpainting of committed actions (real-time chunking) in the sampling chain.

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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Inpainting:
    """The committed entries of a chunk: mask (1, horizon, 1) and the target q_i of every state i (T+1, B, ...)."""

    mask: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def build(cls, scheduler, noise: torch.Tensor, committed_actions: torch.Tensor,
              committed_positions) -> "Inpainting":
        """Targets for `noise` (B, horizon, action_dim) from committed actions (B, n, action_dim) at positions (n,).

        The noise levels are the scheduler's abar at each of its timesteps, in the chain's order.
        """
        positions = torch.as_tensor(committed_positions, dtype=torch.long, device=noise.device).reshape(-1)
        batch, horizon, action_dim = noise.shape
        if committed_actions.shape != (batch, positions.numel(), action_dim):
            raise ValueError(f"committed_actions must be {(batch, positions.numel(), action_dim)} for "
                             f"{positions.numel()} positions, got {tuple(committed_actions.shape)}")
        if positions.numel() and (positions.min() < 0 or positions.max() >= horizon or positions.unique().numel()
                                  != positions.numel()):
            raise ValueError(f"committed_positions must be distinct indices in 0..{horizon - 1}, got {positions.tolist()}")
        mask = torch.zeros((1, horizon, 1), dtype=torch.bool, device=noise.device)
        mask[:, positions] = True
        clean = torch.zeros_like(noise)
        clean[:, positions] = committed_actions.to(noise)
        abar = scheduler.alphas_cumprod.to(noise.device)[scheduler.timesteps.to(noise.device).long()]
        shape = (-1,) + (1,) * noise.ndim
        levels = torch.cat([abar, abar.new_ones(1)]).to(noise.dtype)
        targets = levels.reshape(shape) ** 0.5 * clean + (1 - levels).reshape(shape) ** 0.5 * noise
        return cls(mask, targets)

    def apply(self, states: torch.Tensor, first: int) -> torch.Tensor:
        """States x_first .. x_{first+W-1} (W, B, ...) with their committed entries set (indices past T keep x_T's)."""
        index = torch.clamp(torch.arange(first, first + states.shape[0], device=states.device),
                            max=self.targets.shape[0] - 1)
        return torch.where(self.mask, self.targets[index], states)


def inpainting_for(scheduler, noise: torch.Tensor, committed_actions: torch.Tensor | None,
                   committed_positions) -> Inpainting | None:
    """An `Inpainting`, or None when nothing is committed."""
    if committed_actions is None:
        if committed_positions is not None:
            raise ValueError("committed_positions given without committed_actions")
        return None
    if committed_positions is None:
        raise ValueError("committed_actions given without committed_positions")
    return Inpainting.build(scheduler, noise, committed_actions, committed_positions)
