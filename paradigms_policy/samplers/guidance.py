"""Guided inpainting (RTC's guidance): the denoiser's noise prediction corrected towards committed actions.

Real-Time Chunking (Black, Galliker, Levine 2025) makes a new chunk agree with the overlap of the
running one by guidance rather than by replacement. For a flow policy, with A_tau = tau A + (1 - tau) z
(tau = 1 clean) and the clean estimate A1_hat = A_tau + (1 - tau) v, RTC adds to the velocity

    min(beta, (1 - tau) / (tau r_tau^2)) J^T W (y - A1_hat),   r_tau^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2),

with J = d A1_hat / d A_tau, the committed actions y, weights W over the horizon (1 on the frozen
prefix, decaying over the rest of the overlap, `inpainting.soft_weights`) and beta its clip.
A variance-preserving chain is the same Gaussian path rescaled: x_t = sqrt(abar_t) x0 + sigma_t z
(sigma_t = sqrt(1 - abar_t)) is (sqrt(abar_t) + sigma_t) A_tau at tau = sqrt(abar_t) / (sqrt(abar_t) + sigma_t),
with the clean estimate

    x0_hat(x) = (x - sigma_t eps(x, t)) / sqrt(abar_t).

There the weight is 1 / (sqrt(abar_t) sigma_t), d A1_hat / d A_tau is (sqrt(abar_t) + sigma_t) J with
J = d x0_hat / d x, and a velocity change dv changes eps by -tau dv, so RTC's correction becomes

    eps_guided(x, t) = eps(x, t) - min(beta sqrt(abar_t), 1 / sigma_t) J^T W (y - x0_hat(x)).

Where the noise is large, sqrt(abar_t) is small and so is the correction; x0_hat there amplifies the
network's error by 1 / sqrt(abar_t). J^T v is one vector-Jacobian product through the network, so a
guided call costs a forward and a backward pass. The correction reaches every entry of the chunk
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
from .inpainting import check_positions, checked_weights

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
        if actions.ndim != 3 or actions.shape[1] != positions.numel():
            raise ValueError(f"guidance actions must be (B, {positions.numel()}, action_dim) for {positions.numel()} "
                             f"positions, got {tuple(actions.shape)}")
        check_positions(positions, horizon, "guidance positions")
        weights = checked_weights(weights, positions.numel(), "guidance weights")
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
        return (eps - torch.minimum(guidance.max_scale * abar.sqrt(), 1 / sigma) * pull).detach()

    return guided
