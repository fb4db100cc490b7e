"""The reference sampler: one denoiser call and one scheduler `step()` per timestep.

    for t in timesteps:  x <- scheduler.step(eps(x, t, c), t, x, generator).prev_sample

It is exactly the loop of Diffusion Policy's `conditional_sample`, so it reproduces a plain
diffusers loop bit for bit and is the answer the parallel samplers must converge to. With
committed actions (real-time chunking, `inpainting.py`) every state's committed entries are set to
their targets: the initial state before the loop and each new state after its step.
"""
from __future__ import annotations

import torch

from .base import Denoiser, SamplerStats
from .inpainting import inpainting_for


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler, noise: torch.Tensor, condition, *,
           generator: torch.Generator | None = None, committed_actions: torch.Tensor | None = None,
           committed_positions=None, committed_weights=None) -> tuple[torch.Tensor, SamplerStats]:
    """committed_actions (B, n, action_dim), committed_positions (n,), committed_weights (n,): inpainting, as in the
    parallel samplers."""
    # Multistep schedulers (DPM-Solver) keep a history between steps: start each chunk afresh.
    if hasattr(scheduler, "model_outputs"):
        scheduler.set_timesteps(scheduler.num_inference_steps, device=scheduler.timesteps.device)
    inpainting = inpainting_for(scheduler, noise, committed_actions, committed_positions, committed_weights)
    x = noise if inpainting is None else inpainting.apply(noise[None], 0)[0]
    for index, t in enumerate(scheduler.timesteps):
        eps = denoiser(x, t, condition)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
        if inpainting is not None:
            x = inpainting.apply(x[None], index + 1)[0]
    steps = len(scheduler.timesteps)
    return x, SamplerStats(rounds=steps, model_evals=steps)
