"""Configuration of a Diffusion Policy, kept apart from the modelling code.

`PolicyConfig` is what the native checkpoint's `config.json` holds (next to the normaliser
statistics): the U-Net's constructor options, the horizons and the noise-scheduler settings.
It is plain data; `to_dict`/`from_dict` round-trip it through JSON.

Every value is checked for type and range when a config is made, so that a config read from a
file can be trusted before anything is built from it: integers are integers (not bools or
floats), sizes are positive and bounded, flags are bools, names come from fixed lists.
"""
from __future__ import annotations

import math
import operator
import reprlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

SCHEDULER_NAMES = ("ddpm", "ddim", "dpmsolver")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
OBSERVATION_KINDS = ("low_dim", "image")
BACKBONES = ("resnet18",)
POOLINGS = ("spatial_softmax", "average")
MAX_IMAGE_SIDE = 4096
MAX_CHANNELS = 16
MAX_KEY = 200
MAX_WIDTH = 1 << 16  # channels, observation and action sizes
MAX_LEVELS = 8
MAX_KERNEL = 63
MAX_HORIZON = 1024
MAX_TRAIN_TIMESTEPS = 10_000
FINAL_BLOCK_GROUPS = 8  # the U-Net's last Conv1d block keeps GroupNorm's 8 groups whatever n_groups says


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or inconsistent; `field` names it."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, with huge ints described rather than converted."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlist, self.maxdict = 3, 60, 60, 6, 6

    def repr_int(self, value, level):
        if value.bit_length() > 64:  # repr of a huge int is slow or refused
            return f"<an integer of {value.bit_length()} bits>"
        return repr(value)


def show(value: Any) -> str:
    """A repr bounded in length and depth, for messages about values read from files."""
    return _ShortRepr().repr(value)


def integer(name: str, value: Any, low: int, high: int) -> int:
    """`value` as an int in low..high; bools and floats are refused."""
    if isinstance(value, bool):
        raise ConfigError(name, f"must be an integer (got {show(value)})")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(name, f"must be an integer (got {show(value)})") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be in {low}..{high} (got {show(value)})")
    return value


def number(name: str, value: Any, low: float, high: float) -> float:
    """`value` as a finite float with low < value < high."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number (got {show(value)})")
    value = float(value)
    if not (math.isfinite(value) and low < value < high):
        raise ConfigError(name, f"must be a finite number in ({low}, {high}) (got {show(value)})")
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false (got {show(value)})")
    return value


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)} (got {show(value)})")
    return value


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
        def set_(name, value):
            object.__setattr__(self, name, value)

        set_("input_dim", integer("unet.input_dim", self.input_dim, 1, MAX_WIDTH))
        if self.global_cond_dim is not None:
            set_("global_cond_dim", integer("unet.global_cond_dim", self.global_cond_dim, 1, MAX_WIDTH))
        step = integer("unet.diffusion_step_embed_dim", self.diffusion_step_embed_dim, 4, MAX_WIDTH)
        if step % 2:
            raise ConfigError("unet.diffusion_step_embed_dim", f"must be even (got {step})")
        set_("diffusion_step_embed_dim", step)
        set_("n_groups", integer("unet.n_groups", self.n_groups, 1, MAX_WIDTH))
        set_("down_dims", self._checked_down_dims())
        kernel = integer("unet.kernel_size", self.kernel_size, 1, MAX_KERNEL)
        if kernel % 2 == 0:
            raise ConfigError("unet.kernel_size", f"must be odd (got {kernel})")
        set_("kernel_size", kernel)
        set_("cond_predict_scale", flag("unet.cond_predict_scale", self.cond_predict_scale))

    def _checked_down_dims(self) -> tuple[int, ...]:
        """down_dims as a tuple of 1..MAX_LEVELS widths, each divisible by n_groups (checked before)."""
        dims = self.down_dims
        if not isinstance(dims, (list, tuple)) or not 1 <= len(dims) <= MAX_LEVELS:
            raise ConfigError("unet.down_dims", f"must be a list of 1..{MAX_LEVELS} channel counts (got {show(dims)})")
        dims = tuple(integer(f"unet.down_dims[{i}]", d, 1, MAX_WIDTH) for i, d in enumerate(dims))
        for index, dim in enumerate(dims):
            if dim % self.n_groups:
                raise ConfigError(f"unet.down_dims[{index}]", f"= {dim} is not divisible by unet.n_groups = "
                                                              f"{self.n_groups}")
        if dims[0] % FINAL_BLOCK_GROUPS:
            raise ConfigError("unet.down_dims[0]", f"= {dims[0]} is not divisible by {FINAL_BLOCK_GROUPS} "
                                                   "(the final block's GroupNorm groups)")
        return dims


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
        def set_(name, value):
            object.__setattr__(self, name, value)

        choice("scheduler.name", self.name, SCHEDULER_NAMES)
        train = integer("scheduler.num_train_timesteps", self.num_train_timesteps, 1, MAX_TRAIN_TIMESTEPS)
        set_("num_train_timesteps", train)
        set_("num_inference_steps", integer("scheduler.num_inference_steps", self.num_inference_steps, 1, train))
        set_("beta_start", number("scheduler.beta_start", self.beta_start, 0.0, 1.0))
        set_("beta_end", number("scheduler.beta_end", self.beta_end, 0.0, 1.0))
        if self.beta_end < self.beta_start:
            raise ConfigError("scheduler.beta_end", f"= {self.beta_end} is below scheduler.beta_start = "
                                                    f"{self.beta_start}")
        choice("scheduler.beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        flag("scheduler.clip_sample", self.clip_sample)
        set_("clip_sample_range", number("scheduler.clip_sample_range", self.clip_sample_range, 0.0, math.inf))
        choice("scheduler.prediction_type", self.prediction_type, PREDICTION_TYPES)
        flag("scheduler.set_alpha_to_one", self.set_alpha_to_one)
        set_("steps_offset", integer("scheduler.steps_offset", self.steps_offset, 0, train - 1))


@dataclass(frozen=True)
class ObservationSpec:
    """One observation key: `low_dim` with shape [n], or `image` with shape [C, H, W] (channels first)."""

    key: str
    shape: tuple[int, ...]
    kind: str = "low_dim"

    def __post_init__(self):
        if not isinstance(self.key, str) or not 1 <= len(self.key) <= MAX_KEY:
            raise ConfigError("observations.key", f"must be a string of 1..{MAX_KEY} characters (got {show(self.key)})")
        where = f"observations[{self.key}]"
        choice(f"{where}.kind", self.kind, OBSERVATION_KINDS)
        rank = 1 if self.kind == "low_dim" else 3
        if not isinstance(self.shape, (list, tuple)) or len(self.shape) != rank:
            raise ConfigError(f"{where}.shape", f"must be a list of {rank} sizes for a {self.kind} key "
                                                f"(got {show(self.shape)})")
        if self.kind == "low_dim":
            shape = (integer(f"{where}.shape[0]", self.shape[0], 1, MAX_WIDTH),)
        else:
            shape = (integer(f"{where}.shape[0]", self.shape[0], 1, MAX_CHANNELS),
                     *(integer(f"{where}.shape[{i}]", self.shape[i], 8, MAX_IMAGE_SIDE) for i in (1, 2)))
        object.__setattr__(self, "shape", shape)

    @property
    def size(self) -> int:
        """The flat size of a low-dim key (images have features instead)."""
        return self.shape[0] if self.kind == "low_dim" else 0


@dataclass(frozen=True)
class VisionConfig:
    """The image encoder (`vision.py`). Defaults are Diffusion Policy's hybrid image Push-T encoder."""

    backbone: str = "resnet18"
    width: int = 64  # conv1's channels; ResNet-18's stages have width x 1, 2, 4, 8
    pooling: str = "spatial_softmax"
    num_keypoints: int = 32
    crop_shape: tuple[int, int] | None = (84, 84)  # centre crop at evaluation; None: the whole image
    feature_dim: int = 64
    shared_encoder: bool = False  # one encoder for every camera (LeRobot's default) or one per camera
    # ReLU after the output Linear: LeRobot's DiffusionRgbEncoder, and robomimic's ObservationEncoder
    # (feature_activation=nn.ReLU after every image net) in Diffusion Policy's hybrid policy.
    output_relu: bool = True

    def __post_init__(self):
        choice("vision.backbone", self.backbone, BACKBONES)
        width = integer("vision.width", self.width, 16, 4096)
        if width % 16:
            raise ConfigError("vision.width", f"must be divisible by 16 (GroupNorm's C / 16 groups; got {width})")
        object.__setattr__(self, "width", width)
        choice("vision.pooling", self.pooling, POOLINGS)
        object.__setattr__(self, "num_keypoints", integer("vision.num_keypoints", self.num_keypoints, 1, MAX_WIDTH))
        if self.crop_shape is not None:
            crop = self.crop_shape
            if not isinstance(crop, (list, tuple)) or len(crop) != 2:
                raise ConfigError("vision.crop_shape", f"must be null or [height, width] (got {show(crop)})")
            object.__setattr__(self, "crop_shape", tuple(integer(f"vision.crop_shape[{i}]", crop[i], 8, MAX_IMAGE_SIDE)
                                                         for i in (0, 1)))
        object.__setattr__(self, "feature_dim", integer("vision.feature_dim", self.feature_dim, 1, MAX_WIDTH))
        flag("vision.shared_encoder", self.shared_encoder)
        flag("vision.output_relu", self.output_relu)


_HORIZON_FIELDS = ("horizon", "n_obs_steps", "n_action_steps")


@dataclass(frozen=True)
class PolicyConfig:
    """A Diffusion Policy: observation window in, action horizon out.

    Low-dim (observations empty): the window is (n_obs_steps, obs_dim). Image-conditioned: the
    observation keys in `observations` (obs_dim is their low-dim total), encoded by `vision`; the
    global condition is n_obs_steps x condition_dim.
    """

    obs_dim: int = 20
    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    unet: UnetConfig = field(default_factory=UnetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # Observation keys in condition order; () is a single low-dim vector of obs_dim (the low-dim policy).
    observations: tuple[ObservationSpec, ...] = ()
    vision: VisionConfig | None = None  # the image encoder, needed when a key is an image

    def __post_init__(self):
        for name in ("obs_dim", "action_dim"):
            object.__setattr__(self, name, integer(name, getattr(self, name), 1, MAX_WIDTH))
        for name in _HORIZON_FIELDS:
            object.__setattr__(self, name, integer(name, getattr(self, name), 1, MAX_HORIZON))
        if not isinstance(self.unet, UnetConfig) or not isinstance(self.scheduler, SchedulerConfig):
            raise ConfigError("unet/scheduler", "must be a UnetConfig and a SchedulerConfig")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ConfigError("n_action_steps", f"{self.n_action_steps}: n_obs_steps - 1 + n_action_steps = "
                                                f"{self.n_obs_steps - 1 + self.n_action_steps} exceeds the horizon "
                                                f"{self.horizon}")
        levels = len(self.unet.down_dims) - 1
        if self.horizon % (2**levels):
            raise ConfigError("horizon", f"{self.horizon} must be divisible by 2**{levels} for "
                                         f"{len(self.unet.down_dims)} U-Net levels")
        if self.unet.input_dim != self.action_dim:
            raise ConfigError("unet.input_dim", f"{self.unet.input_dim} != action_dim {self.action_dim}")
        self._check_observations()
        if not self.image_keys and self.unet.global_cond_dim != self.obs_dim * self.n_obs_steps:
            raise ConfigError("unet.global_cond_dim", f"{self.unet.global_cond_dim} != obs_dim x n_obs_steps "
                                                      f"= {self.obs_dim * self.n_obs_steps}")
        if self.image_keys and self.unet.global_cond_dim != self.condition_dim * self.n_obs_steps:
            raise ConfigError("unet.global_cond_dim", f"{self.unet.global_cond_dim} != (obs_dim + image features) x "
                                                      f"n_obs_steps = {self.condition_dim * self.n_obs_steps}")

    def _check_observations(self) -> None:
        """observations: ObservationSpecs with distinct keys whose low-dim sizes add up to obs_dim; vision set
        exactly when a key is an image."""
        specs = self.observations
        if not isinstance(specs, (list, tuple)) or not all(isinstance(s, ObservationSpec) for s in specs):
            raise ConfigError("observations", "must be a list of ObservationSpec")
        object.__setattr__(self, "observations", tuple(specs))
        if self.vision is not None and not isinstance(self.vision, VisionConfig):
            raise ConfigError("vision", "must be a VisionConfig or null")
        if not specs:
            if self.vision is not None:
                raise ConfigError("vision", "is set but no observation key is an image")
            return
        keys = [spec.key for spec in specs]
        if len(set(keys)) != len(keys):
            raise ConfigError("observations", f"has repeated keys {show(keys)}")
        low_dim = sum(spec.size for spec in specs)
        if low_dim != self.obs_dim:
            raise ConfigError("obs_dim", f"{self.obs_dim} != {low_dim}, the low-dim observation keys' total size")
        images = [spec for spec in specs if spec.kind == "image"]
        if images and self.vision is None:
            raise ConfigError("vision", "is missing: image observations need an encoder configuration")
        if not images:
            if self.vision is not None:
                raise ConfigError("vision", "is set but no observation key is an image")
            return
        for spec in images:
            crop = self.vision.crop_shape
            if crop is not None and (crop[0] > spec.shape[1] or crop[1] > spec.shape[2]):
                raise ConfigError("vision.crop_shape", f"{list(crop)} exceeds image {spec.key!r} of {list(spec.shape)}")
        if len({spec.shape[0] for spec in images}) > 1:
            raise ConfigError("observations", "image keys must have the same number of channels")
        if self.vision.shared_encoder and len({spec.shape for spec in images}) > 1:
            raise ConfigError("vision.shared_encoder", "needs every image key to have the same shape")

    @property
    def image_keys(self) -> tuple[str, ...]:
        return tuple(spec.key for spec in self.observations if spec.kind == "image")

    @property
    def low_dim_keys(self) -> tuple[str, ...]:
        return tuple(spec.key for spec in self.observations if spec.kind == "low_dim")

    @property
    def condition_dim(self) -> int:
        """Condition values per observation step: the low-dim values and every camera's features."""
        features = self.vision.feature_dim if self.vision is not None else 0
        return self.obs_dim + len(self.image_keys) * features

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
        if not self.observations:  # the low-dim policy's file keeps its earlier layout
            del data["observations"], data["vision"]
        else:
            data["observations"] = [{"key": s.key, "shape": list(s.shape), "kind": s.kind} for s in self.observations]
            if self.vision is not None and self.vision.crop_shape is not None:
                data["vision"]["crop_shape"] = list(self.vision.crop_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicyConfig":
        """A config from `to_dict`'s layout; unknown keys and wrong types are a ConfigError."""
        section = _section(data, "policy")
        unet = _build(UnetConfig, _section(section.get("unet", {}), "unet"), "unet")
        scheduler = _build(SchedulerConfig, _section(section.get("scheduler", {}), "scheduler"), "scheduler")
        specs = section.get("observations", [])
        if not isinstance(specs, list):
            raise ConfigError("observations", f"must be a list (got {show(specs)})")
        observations = tuple(_build(ObservationSpec, _section(spec, f"observations[{index}]"), f"observations[{index}]")
                             for index, spec in enumerate(specs))
        vision = section.get("vision")
        vision = None if vision is None else _build(VisionConfig, _section(vision, "vision"), "vision")
        top = {k: v for k, v in section.items() if k not in ("unet", "scheduler", "observations", "vision")}
        return _build(cls, top, "policy", unet=unet, scheduler=scheduler, observations=observations, vision=vision)


def _section(values: Any, name: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(name, f"must be an object (got {show(values)})")
    return values


def _build(kind, values: dict[str, Any], section: str, **extra):
    known = {f.name for f in fields(kind)}
    unknown = sorted(str(key) for key in set(values) - known)
    if unknown:
        raise ConfigError(section, f"has unknown setting(s): {show(unknown)}")
    return kind(**values, **extra)
