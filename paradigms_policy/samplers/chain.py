"""The sampling chain of a diffusers scheduler as a fixed-point system.

With the noise of every step drawn up front, sampling is the recursion

    x_{i+1} = f_i(x_i, eps(x_i, t_i)) + n_i,        i = 0 .. T-1,   x_0 = initial noise,

where f_i is the scheduler's deterministic update and n_i = s_i z_i the noise its `step()` adds.
`DenoisingChain` tabulates, per step, the coefficients of

    x0_hat = clip((x - sqrt(1 - abar_t) eps) / sqrt(abar_t))
    f_i    = c_x0[i] * x0_hat + c_x[i] * x + c_eps[i] * eps

computed with the same float32 operations, in the same order, as the scheduler's own `step()`
(DDPM: c_eps = 0; DDIM with eta = 0: c_x = 0), so f_i equals `step()` without noise bit for bit.
It avoids the public batched steps' defects: the last DDIM step uses `final_alpha_cumprod`, and
every DDPM step takes its predecessor from `previous_timestep()` rather than a fixed stride.

`variance[i]` is the DDPM posterior variance between t_i and its predecessor (clamped at 1e-20);
parallel samplers measure their errors in units of it, also for DDIM, which adds no noise.

Steps at index >= T (`padded` tables) are identity steps (f = x, no noise) so that a window of
fixed shape can run past the end of the chain without changing its result.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

MIN_VARIANCE = 1e-20

# Per scheduler: the chain for its current timesteps on each device, built once, not per chunk.
_CHAIN_CACHE: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


class UnsupportedSchedulerError(ValueError):
    """The scheduler's update is not a one-step map that parallel samplers can solve."""


@dataclass
class DenoisingChain:
    timesteps: torch.Tensor  # (T,) int64, as the scheduler iterates them
    sqrt_alpha_prod: torch.Tensor  # (T,) sqrt(abar_t)
    sqrt_beta_prod: torch.Tensor  # (T,) sqrt(1 - abar_t)
    coef_x0: torch.Tensor
    coef_sample: torch.Tensor
    coef_eps: torch.Tensor
    noise_std: torch.Tensor  # (T,) s_i, 0 where step() adds no noise
    variance: torch.Tensor  # (T,) DDPM-style variance for error scaling
    clip_range: float | None

    @property
    def num_steps(self) -> int:
        return self.timesteps.numel()

    @classmethod
    def from_scheduler(cls, scheduler) -> "DenoisingChain":
        if scheduler.timesteps is None or getattr(scheduler, "num_inference_steps", None) is None:
            raise ValueError("call scheduler.set_timesteps(...) before sampling")
        config = scheduler.config
        if config.prediction_type != "epsilon":
            raise UnsupportedSchedulerError(f"parallel samplers need prediction_type='epsilon', got {config.prediction_type!r}")
        if config.thresholding:
            raise UnsupportedSchedulerError("parallel samplers do not support dynamic thresholding")
        if isinstance(scheduler, DDPMScheduler):
            if config.variance_type != "fixed_small":
                raise UnsupportedSchedulerError(f"parallel DDPM supports variance_type='fixed_small', got {config.variance_type!r}")
            rows = [_ddpm_step_coefficients(scheduler, t) for t in scheduler.timesteps]
        elif isinstance(scheduler, DDIMScheduler):
            rows = [_ddim_step_coefficients(scheduler, t) for t in scheduler.timesteps]
        else:
            raise UnsupportedSchedulerError(
                f"parallel samplers support DDPMScheduler and DDIMScheduler, got {type(scheduler).__name__}"
            )
        columns = [torch.stack(column) for column in zip(*rows)]
        return cls(scheduler.timesteps.clone().long(), *columns,
                   clip_range=float(config.clip_sample_range) if config.clip_sample else None)

    @classmethod
    def cached(cls, scheduler, device: torch.device | str, dtype: torch.dtype) -> "DenoisingChain":
        """`from_scheduler(scheduler).to(device, dtype)`, remembered until the scheduler's timesteps change."""
        key = (tuple(scheduler.timesteps.tolist()), str(device), dtype)
        per_scheduler = _CHAIN_CACHE.setdefault(scheduler, {})
        if key not in per_scheduler:
            per_scheduler.clear()
            per_scheduler[key] = cls.from_scheduler(scheduler).to(device, dtype)
        return per_scheduler[key]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "DenoisingChain":
        moved = {name: getattr(self, name).to(device=device, dtype=dtype)
                 for name in ("sqrt_alpha_prod", "sqrt_beta_prod", "coef_x0", "coef_sample", "coef_eps", "noise_std", "variance")}
        return DenoisingChain(self.timesteps.to(device), **moved, clip_range=self.clip_range)

    def padded(self, extra: int) -> "DenoisingChain":
        """The chain followed by `extra` identity steps (timestep of the last step, f = x, no noise)."""
        def pad(values: torch.Tensor, fill: float) -> torch.Tensor:
            return torch.cat([values, values.new_full((extra,), fill)])

        return DenoisingChain(
            timesteps=torch.cat([self.timesteps, self.timesteps[-1:].expand(extra)]),
            sqrt_alpha_prod=pad(self.sqrt_alpha_prod, 1.0), sqrt_beta_prod=pad(self.sqrt_beta_prod, 0.0),
            coef_x0=pad(self.coef_x0, 0.0), coef_sample=pad(self.coef_sample, 1.0), coef_eps=pad(self.coef_eps, 0.0),
            noise_std=pad(self.noise_std, 0.0), variance=pad(self.variance, 1.0), clip_range=self.clip_range,
        )

    def draw_noise(self, shape: torch.Size, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
        """n_i = s_i z_i for every step, (T, *shape), drawn in the order the sequential loop draws them.

        z is drawn in float32, as a float32 model's `step()` draws it, and then cast, so runs in other
        precisions (a float64 reference, bf16) see the same noise as the float32 run. The draws are
        stacked and scaled in one operation each: one host-to-device copy, not one per step.
        """
        noisy = [i for i in range(self.num_steps) if self.noise_std[i] > 0]
        noise = torch.zeros((self.num_steps, *shape), device=device, dtype=dtype)
        if noisy:
            # On the generator's own device (where randn_tensor would draw them anyway), then moved at once.
            source = generator.device if generator is not None else torch.device(device)
            draws = [randn_tensor(tuple(shape), generator=generator, device=source, dtype=torch.float32) for _ in noisy]
            z = torch.stack(draws).to(device=device, dtype=dtype)
            index = torch.tensor(noisy, device=noise.device)
            noise[index] = self.noise_std[index].reshape(-1, *([1] * len(shape))) * z
        return noise

    @property
    def state_weight(self) -> torch.Tensor:
        """(T,) a_i = d f_i / d x with the clean-sample estimate held fixed (the posterior mean's weight on x).

        DDPM: c_x. DDIM: eps = (x - sqrt(abar_t) x0) / sqrt(1 - abar_t) at a fixed x0 gives
        c_eps / sqrt(1 - abar_t). Identity (padding) steps: 1.
        """
        through_eps = torch.where(self.coef_eps != 0, self.coef_eps / self.sqrt_beta_prod, torch.zeros_like(self.coef_eps))
        return self.coef_sample + through_eps

    def predicted_clean(self, x: torch.Tensor, eps: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """x0_hat for states x (W, B, ...) at chain indices `steps` (W,)."""
        def column(values: torch.Tensor) -> torch.Tensor:
            return values[steps].reshape(-1, *([1] * (x.ndim - 1)))

        x0 = (x - column(self.sqrt_beta_prod) * eps) / column(self.sqrt_alpha_prod)
        if self.clip_range is not None:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0

    def mean_step(self, x: torch.Tensor, eps: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """f_i(x, eps) for states x (W, B, ...) at chain indices `steps` (W,): step() without noise."""
        def column(values: torch.Tensor) -> torch.Tensor:
            return values[steps].reshape(-1, *([1] * (x.ndim - 1)))

        x0 = self.predicted_clean(x, eps, steps)
        return column(self.coef_x0) * x0 + column(self.coef_sample) * x + column(self.coef_eps) * eps


def _ddpm_step_coefficients(scheduler: DDPMScheduler, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The scalars of DDPMScheduler.step() at timestep t, computed as step() computes them."""
    prev_t = scheduler.previous_timestep(t)
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    coef_x0 = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
    coef_sample = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
    variance = torch.clamp((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, min=MIN_VARIANCE)
    noise_std = variance ** 0.5 if t > 0 else torch.zeros(())
    return (alpha_prod_t ** (0.5), beta_prod_t ** (0.5), coef_x0, coef_sample, torch.zeros(()), noise_std, variance)


def _ddim_step_coefficients(scheduler: DDIMScheduler, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The scalars of DDIMScheduler.step(eta=0) at timestep t, computed as step() computes them."""
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = 0.0 * variance ** (0.5)
    coef_eps = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5)
    return (alpha_prod_t ** (0.5), beta_prod_t ** (0.5), alpha_prod_t_prev ** (0.5), torch.zeros(()), coef_eps,
            torch.zeros(()), torch.clamp(variance, min=MIN_VARIANCE))
