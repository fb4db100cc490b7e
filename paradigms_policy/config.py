"""Configuration of a Diffusion Policy, kept apart from the modelling code.

`PolicyConfig` is what the native checkpoint's `config.json` holds (next to the normaliser
statistics): the U-Net's constructor options, the horizons and the noise-scheduler settings.
It is plain data; `to_dict`/`from_dict` round-trip it through JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

SCHEDULER_NAMES = ("ddpm", "ddim", "dpmsolver")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or inconsistent."""


@dataclass(frozen=True)
class UnetConfig:
    """Constructor options of Diffusion Policy's `ConditionalUnet1D` (global conditioning only).

    Defaults are the original low-dim Push-T model (65,783,298 parameters).
    """

    input_dim: int = 2
    global_cond_dim: int | None = 40
    diffusion_step_embed_dim: int = 256
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    cond_predict_scale: bool = True

    def __post_init__(self):
        object.__setattr__(self, "down_dims", tuple(int(d) for d in self.down_dims))
        if not self.down_dims:
            raise ConfigError("unet.down_dims must name at least one level")
        for dim in self.down_dims:
            if dim % self.n_groups:
                raise ConfigError(f"unet.down_dims entry {dim} is not divisible by n_groups={self.n_groups}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"unet.kernel_size must be odd (got {self.kernel_size})")
        if self.diffusion_step_embed_dim % 2 or self.diffusion_step_embed_dim < 4:
            raise ConfigError("unet.diffusion_step_embed_dim must be an even number >= 4")


@dataclass(frozen=True)
class SchedulerConfig:
    """Noise schedule and sampling scheduler, mapped onto a diffusers scheduler.

    `name` picks the sampling update (ddpm, ddim or dpmsolver); the noise schedule
    (`num_train_timesteps`, betas) is the one the model was trained with.
    """

    name: str = "ddpm"
    num_train_timesteps: int = 100
    num_inference_steps: int = 100
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    prediction_type: str = "epsilon"
    # DDIM only: use alpha_cumprod = 1 after the last step (diffusers' set_alpha_to_one).
    set_alpha_to_one: bool = True
    steps_offset: int = 0

    def __post_init__(self):
        if self.name not in SCHEDULER_NAMES:
            raise ConfigError(f"scheduler.name must be one of {', '.join(SCHEDULER_NAMES)} (got {self.name!r})")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ConfigError(
                f"scheduler.num_inference_steps must be in 1..{self.num_train_timesteps} "
                f"(got {self.num_inference_steps})"
            )


@dataclass(frozen=True)
class PolicyConfig:
    """A low-dimensional Diffusion Policy: observation window in, action horizon out."""

    obs_dim: int = 20
    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    unet: UnetConfig = field(default_factory=UnetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self):
        for name in ("obs_dim", "action_dim", "horizon", "n_obs_steps", "n_action_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer (got {getattr(self, name)!r})")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ConfigError(
                f"n_obs_steps - 1 + n_action_steps = {self.n_obs_steps - 1 + self.n_action_steps} "
                f"exceeds the horizon {self.horizon}"
            )
        levels = len(self.unet.down_dims) - 1
        if self.horizon % (2**levels):
            raise ConfigError(f"horizon {self.horizon} must be divisible by 2**{levels} for {len(self.unet.down_dims)} U-Net levels")
        if self.unet.input_dim != self.action_dim:
            raise ConfigError(f"unet.input_dim {self.unet.input_dim} != action_dim {self.action_dim}")
        if self.unet.global_cond_dim != self.obs_dim * self.n_obs_steps:
            raise ConfigError(
                f"unet.global_cond_dim {self.unet.global_cond_dim} != obs_dim x n_obs_steps "
                f"= {self.obs_dim * self.n_obs_steps}"
            )

    @property
    def max_executed_actions(self) -> int:
        """Predicted actions from the newest observation's step to the end of the horizon."""
        return self.horizon - self.n_obs_steps + 1

    @classmethod
    def for_shapes(cls, obs_dim: int, action_dim: int, horizon: int = 16, n_obs_steps: int = 2,
                   n_action_steps: int = 8, scheduler: SchedulerConfig | None = None, **unet_options) -> "PolicyConfig":
        """A consistent config for these shapes; `unet_options` override UnetConfig fields."""
        unet = UnetConfig(input_dim=action_dim, global_cond_dim=obs_dim * n_obs_steps, **unet_options)
        return cls(obs_dim=obs_dim, action_dim=action_dim, horizon=horizon, n_obs_steps=n_obs_steps,
                   n_action_steps=n_action_steps, unet=unet, scheduler=scheduler or SchedulerConfig())

    def with_scheduler(self, **changes) -> "PolicyConfig":
        """The same policy sampled with other scheduler settings (e.g. name='ddim', num_inference_steps=15)."""
        return replace(self, scheduler=replace(self.scheduler, **changes))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unet"]["down_dims"] = list(self.unet.down_dims)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicyConfig":
        try:
            unet = _build(UnetConfig, data.get("unet", {}), "unet")
            scheduler = _build(SchedulerConfig, data.get("scheduler", {}), "scheduler")
            top = {k: v for k, v in data.items() if k not in ("unet", "scheduler")}
            return _build(cls, top, "policy", unet=unet, scheduler=scheduler)
        except TypeError as err:
            raise ConfigError(str(err)) from None


def _build(kind, values: dict[str, Any], section: str, **extra):
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {section} setting(s): {', '.join(unknown)}")
    return kind(**values, **extra)
