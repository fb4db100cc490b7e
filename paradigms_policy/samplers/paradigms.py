"""ParaDiGMS: Picard iteration over a sliding window (Shih et al., NeurIPS 2023).

The chain x_{i+1} = f_i(x_i) + n_i (see `chain.py`) is solved for all states at once. Each round
evaluates the denoiser on the p states of the window [s, s+p) in one batched call and updates

    x_{s+k+1} <- x_s + sum_{j<=k} (f_{s+j}(x_{s+j}) + n_{s+j} - x_{s+j}),     k = 0 .. p-1,

written here in the equivalent residual form x_{s+k+1} <- f_{s+k} + n_{s+k} + sum_{j<k} r_j with
r_j = f_{s+j} + n_{s+j} - x_{s+j+1}: once the residuals vanish the update is exactly the
sequential step, so window 1 or tolerance 0 reproduces the sequential sampler.

A state has converged when its change in the round, ||dx||^2 / (D sigma_i^2), is at most tau^2
(D = elements per chunk, sigma_i^2 the step's DDPM variance; every chunk of the batch must
pass). The window then slides to the first state that has not converged, by at least one step,
so at most T rounds are needed; newly exposed slots start from the last computed state.
"""
from __future__ import annotations

import math

import torch

from .base import Denoiser, SamplerStats
from .inpainting import inpainting_for
from .window import WindowedSolve, check_window_options

DEFAULT_WINDOW = 16
DEFAULT_TOLERANCE = 0.1


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler, noise: torch.Tensor, condition, *,
           generator: torch.Generator | None = None, window: int = DEFAULT_WINDOW,
           tolerance: float = DEFAULT_TOLERANCE, max_rounds: int | None = None, fixed_shape: bool = False,
           init_trajectory: torch.Tensor | None = None, committed_actions: torch.Tensor | None = None,
           committed_positions=None, committed_weights=None) -> tuple[torch.Tensor, SamplerStats]:
    """Solve the sampling chain by windowed Picard iteration.

    window: p, the number of states evaluated per round (batch p x B).
    tolerance: tau, in units of each step's noise standard deviation.
    max_rounds: stop after this many rounds (a deadline); the result is then the last state if
        the window has reached the end of the chain, else the denoiser's clean-sample estimate
        at the furthest state, and `stats.converged` is False.
    fixed_shape: always evaluate exactly p slots, padding past the end of the chain with
        identity steps, so one captured graph serves every round.
    init_trajectory: (T+1, B, ...) initial guess of every state (a warm start); its first state
        is replaced by `noise`. Default: every state starts as `noise`.
    committed_actions, committed_positions: hard inpainting (real-time chunking): actions
        (B, n, action_dim), normalised, that every state holds at horizon positions (n,), noised to
        each state's level with the initial noise; the answer equals them there exactly
        (`inpainting.py`). committed_weights (n,) in (0, 1]: soft inpainting, each position pulled that
        fraction of the way to its target per step (1, the default: held).
    """
    check_window_options(window, max_rounds)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (got {tolerance})")
    inpainting = inpainting_for(scheduler, noise, committed_actions, committed_positions, committed_weights)
    solve = WindowedSolve(scheduler, noise, generator, window, fixed_shape, init_trajectory, inpainting)
    elements = math.prod(solve.chunk_shape)
    threshold = tolerance**2
    start = rounds = evals = 0
    history: list[float] = []
    while start < solve.steps_total and (max_rounds is None or rounds < max_rounds):
        slots, valid, steps = solve.window_at(start)
        proposal, residual = solve.evaluate(denoiser, condition, start, steps,
                                            keep_estimate=max_rounds is not None and rounds + 1 == max_rounds)
        change = residual.cumsum(0)
        earlier = torch.cat([torch.zeros_like(change[:1]), change[:-1]])
        solve.write(start, proposal + earlier)

        mean_square = change[:valid].reshape(valid, solve.batch, -1).square().sum(-1) / elements
        worst = (mean_square / solve.chain.variance[steps[:valid], None]).amax(1)
        failing = (worst > threshold).nonzero()
        start += valid if failing.numel() == 0 else min(int(failing[0]) + 1, valid)
        rounds += 1
        evals += slots
        history.append(float(residual[:valid].reshape(valid, solve.batch, -1).square().mean(-1).sqrt().max()))
        solve.slide_to(start)

    result, converged, trajectory = solve.answer(start)
    return result, SamplerStats(rounds=rounds, model_evals=evals, residual=history[-1] if history else 0.0,
                                converged=converged, residual_history=history, trajectory=trajectory)
