"""The reference sampler: one denoiser call and one scheduler `step()` per timestep.

    for t in timesteps:  x <- scheduler.step(eps(x, t, c), t, x, generator).prev_sample

It is exactly the loop of Diffusion Policy's `conditional_sample`, so it reproduces a plain
diffusers loop bit for bit and is the answer the parallel samplers must converge to.
"""
from __future__ import annotations

import torch

from .base import Denoiser, SamplerStats


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler, noise: torch.Tensor, condition, *,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, SamplerStats]:
    # Multistep schedulers (DPM-Solver) keep a history between steps: start each chunk afresh.
    if hasattr(scheduler, "model_outputs"):
        scheduler.set_timesteps(scheduler.num_inference_steps, device=scheduler.timesteps.device)
    x = noise
    for t in scheduler.timesteps:
        eps = denoiser(x, t, condition)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    steps = len(scheduler.timesteps)
    return x, SamplerStats(rounds=steps, model_evals=steps)
