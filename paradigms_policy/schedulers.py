"""diffusers schedulers from a `SchedulerConfig` (the noise schedule tables are diffusers')."""
from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from .config import SchedulerConfig


def make_scheduler(config: SchedulerConfig):
    """A diffusers scheduler with `set_timesteps(config.num_inference_steps)` already called."""
    schedule = dict(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                    beta_end=config.beta_end, beta_schedule=config.beta_schedule,
                    prediction_type=config.prediction_type, steps_offset=config.steps_offset)
    clipping = dict(clip_sample=config.clip_sample, clip_sample_range=config.clip_sample_range)
    if config.name == "ddpm":
        scheduler = DDPMScheduler(variance_type="fixed_small", **schedule, **clipping)
    elif config.name == "ddim":
        scheduler = DDIMScheduler(set_alpha_to_one=config.set_alpha_to_one, **schedule, **clipping)
    else:
        # DPM-Solver++ has no sample clipping; it is offered for the sequential sampler only.
        scheduler = DPMSolverMultistepScheduler(**schedule)
    scheduler.set_timesteps(config.num_inference_steps)
    return scheduler
