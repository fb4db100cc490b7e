"""Guided inpainting (RTC's guidance): the denoiser's noise prediction corrected towards committed actions.

Real-Time Chunking (Black, Galliker, Levine 2025) makes a new chunk agree with the overlap of the
running one by guidance rather than by replacement: with the clean-sample estimate of the state
x at timestep t

    x0_hat(x) = (x - sigma_t eps(x, t)) / sqrt(abar_t),        sigma_t = sqrt(1 - abar_t),

and a Gaussian likelihood of the committed actions y around it (weights W over the horizon,
variance r_t^2 = sigma_t^2 as in PiGDM for a variance-preserving chain), the score gains
J^T W (y - x0_hat) / sigma_t^2 with J = d x0_hat / d x. In terms of the noise prediction

    eps_guided(x, t) = eps(x, t) - min(max_scale, 1 / sigma_t) J^T W (y - x0_hat(x)),

clipped at max_scale (RTC's beta) where the noise is small and 1 / sigma_t would overshoot.
J^T v is one vector-Jacobian product through the network, so a guided call costs about three
plain ones. The weights are RTC's soft mask (`inpainting.soft_weights`): 1 on the frozen prefix,
decaying over the rest of the overlap, 0 beyond; the correction reaches every entry of the chunk
through the network, so the free entries turn towards what is committed.

eps_guided is again a function of (x, t) alone, so `guided_denoiser` is a denoiser like any
other: the chain stays the triangular fixed-point system that sequential, ParaDiGMS and ParaTAA
solve, and they agree at tolerance 0. Combined with hard inpainting of the frozen prefix
(`inpainting.py`), those entries are still exactly the committed actions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Denoiser

DEFAULT_MAX_SCALE = 5.0  # RTC's beta


@dataclass(frozen=True)
class Guidance:
    """Committed actions as guidance targets: targets (B, horizon, action_dim) in normalised units (0 where not
    committed), weights (1, horizon, 1) in [0, 1], and the clip of the guidance scale."""

    targets: torch.Tensor
    weights: torch.Tensor
    max_scale: float = DEFAULT_MAX_SCALE

    @classmethod
    def build(cls, actions: torch.Tensor, positions, weights, horizon: int,
              max_scale: float = DEFAULT_MAX_SCALE) -> "Guidance":
        """From actions (B, n, action_dim) at distinct horizon positions (n,) with weights (n,) in (0, 1]."""
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if actions.ndim != 3 or actions.shape[1] != positions.numel():
            raise ValueError(f"guidance actions must be (B, {positions.numel()}, action_dim) for {positions.numel()} "
                             f"positions, got {tuple(actions.shape)}")
        if positions.numel() and (positions.min() < 0 or positions.max() >= horizon
                                  or positions.unique().numel() != positions.numel()):
            raise ValueError(f"guidance positions must be distinct indices in 0..{horizon - 1}, got {positions.tolist()}")
        if weights.numel() != positions.numel() or not bool(((weights > 0) & (weights <= 1)).all()):
            raise ValueError(f"guidance weights must be {positions.numel()} values in (0, 1], got {weights.tolist()}")
        if not max_scale > 0:
            raise ValueError(f"the guidance scale's clip must be positive, got {max_scale}")
        targets = actions.new_zeros((actions.shape[0], horizon, actions.shape[2]))
        targets[:, positions] = actions
        full = actions.new_zeros((1, horizon, 1))
        full[0, positions.to(actions.device), 0] = weights.to(actions)
        return cls(targets, full, float(max_scale))


def guided_denoiser(denoiser: Denoiser, scheduler, guidance: Guidance) -> Denoiser:
    """`denoiser` with its noise prediction corrected towards `guidance`'s targets (module docstring).

    Works on the samplers' batched layout: N = k B states, k copies of the B chunks, with one timestep per row
    or one for all.
    """
    alphas_cumprod = scheduler.alphas_cumprod

    def guided(x: torch.Tensor, timesteps: torch.Tensor, condition) -> torch.Tensor:
        copies = x.shape[0] // guidance.targets.shape[0]
        targets = guidance.targets.to(x).repeat(copies, 1, 1)
        abar = alphas_cumprod.to(x.device)[torch.as_tensor(timesteps, device=x.device).long()].to(x.dtype)
        abar = abar.reshape(-1, 1, 1) if abar.ndim else abar
        sigma = (1 - abar).sqrt()
        with torch.enable_grad():
            state = x.detach().requires_grad_(True)
            eps = denoiser(state, timesteps, condition)
            clean = (state - sigma * eps) / abar.sqrt()
            (pull,) = torch.autograd.grad(clean, state, grad_outputs=guidance.weights.to(x) * (targets - clean.detach()))
        return (eps - torch.clamp(1 / sigma, max=guidance.max_scale) * pull).detach()

    return guided
