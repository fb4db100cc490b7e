"""Reading settings out of the `cfg` of an unpickled Diffusion Policy workspace.

`cfg` is omegaconf's DictConfig as `unpickler.py` stands it in: a `Placeholder` whose state's
`_content` maps keys to child containers or to value nodes (whose state's `_val` is the value);
tests and hand-made files may use plain dicts and lists instead. Nothing converts the whole cfg:
`Cfg.get("policy.model.kernel_size")` walks only that path, so a cfg with deep or shared
(DAG-shaped) containers costs no more than its path lengths, and simple absolute interpolations
`${a.b}` are followed to a bounded depth.

What every Diffusion Policy reader takes from the cfg the same way lives here too: the noise
scheduler (`scheduler_options`) and the run's names and warnings (`run_metadata`).
"""
from __future__ import annotations

import re
from typing import Any

from ..config import ConfigError, PolicyConfig, show
from .unpickler import Placeholder

ABSENT = object()
MISSING = "???"  # omegaconf's mandatory-value marker
MAX_UNWRAP = 8  # a container or node wrapping another, as far as omegaconf ever nests them
MAX_INTERPOLATION_DEPTH = 16
MAX_LIST = 64  # entries read from a list setting (down_dims has a handful)
SCHEDULER_CLASSES = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpmsolver"}
NOISE_SCHEDULER = "policy.noise_scheduler."
_INTERPOLATION = re.compile(r"^\$\{\s*([A-Za-z_][\w\-]*(?:\.[A-Za-z_0-9][\w\-]*)*)\s*\}$")


def unwrap(value: Any) -> Any:
    """The value inside omegaconf containers and nodes (a dict, a list or a scalar), or ABSENT."""
    for _ in range(MAX_UNWRAP):
        if not isinstance(value, Placeholder):
            return value
        value = value.payload
    return ABSENT


class Cfg:
    """Dotted access into the cfg, following simple absolute `${a.b}` interpolations."""

    def __init__(self, root: Any):
        self.root = root

    def get(self, dotted: str, depth: int = 0) -> Any:
        """The value at `dotted` (e.g. policy.model.kernel_size, or policy.model.down_dims.0), or ABSENT."""
        node = self.root
        for part in dotted.split("."):
            node = unwrap(node)
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdecimal() and len(part) < 6 and int(part) < len(node):
                node = node[int(part)]
            else:
                return ABSENT
        return self.resolve(node, depth)

    def resolve(self, value: Any, depth: int = 0) -> Any:
        """`value` unwrapped, with `${a.b}` followed; ABSENT for '???' and for resolvers this reader cannot run."""
        value = unwrap(value)
        if isinstance(value, str):
            if value == MISSING:
                return ABSENT
            match = _INTERPOLATION.match(value)
            if match:
                return self.get(match.group(1), depth + 1) if depth < MAX_INTERPOLATION_DEPTH else ABSENT
            if "${" in value:
                return ABSENT  # a resolver (e.g. ${eval:...}) this reader does not evaluate
        return value

    def first(self, keys: tuple[str, ...]) -> tuple[Any, str | None]:
        """(value, key) for the first key present and not null, else (ABSENT, None)."""
        for key in keys:
            value = self.get(key)
            if value is not ABSENT and value is not None:
                return value, key
        return ABSENT, None

    def text(self, key: str) -> str | None:
        value = self.get(key)
        return value if isinstance(value, str) else None


class Values:
    """Settings for PolicyConfig read from the cfg or taken from a fallback, each remembering where it came
    from so that a `ConfigError` about one of our fields can name the cfg key (`source`)."""

    def __init__(self, cfg: Cfg):
        self.cfg = cfg
        self.sources: dict[str, str] = {}

    def take(self, field: str, keys: tuple[str, ...], fallback: Any = ABSENT, origin: str = "") -> Any:
        """The first of `keys` in the cfg, else `fallback` (from `origin`); ConfigError when neither exists."""
        value, key = self.cfg.first(keys)
        if value is ABSENT:
            if fallback is ABSENT:
                raise ConfigError(" / ".join(f"cfg.{k}" for k in keys), "is missing and cannot be inferred from the "
                                                                        "weights")
            self.sources[field] = f"{field} ({origin})"
            return fallback
        self.sources[field] = f"cfg.{key}"
        if isinstance(value, list):
            if len(value) > MAX_LIST:
                raise ConfigError(f"cfg.{key}", f"has {len(value)} entries (expected at most {MAX_LIST})")
            return [self.cfg.resolve(item) for item in value]
        return value

    def source(self, field: str) -> str:
        """Our field name (e.g. unet.down_dims[1]) as the file names it."""
        base, bracket, rest = field.partition("[")
        return self.sources.get(base, base) + bracket + rest


def scheduler_options(values: Values) -> dict[str, Any]:
    """SchedulerConfig options from cfg.policy.noise_scheduler.*; absent keys take diffusers' defaults."""
    target = values.cfg.text(NOISE_SCHEDULER + "_target_")
    class_name = target.rsplit(".", 1)[-1] if target else "DDPMScheduler"
    if class_name not in SCHEDULER_CLASSES:
        raise ConfigError(f"cfg.{NOISE_SCHEDULER}_target_", f"{show(target)} is not supported (expected one of "
                                                             f"{', '.join(SCHEDULER_CLASSES)})")

    def take(name: str, default: Any, key: str = "", origin: str = "diffusers' default") -> Any:
        return values.take(f"scheduler.{name}", (key or NOISE_SCHEDULER + name,), default, origin)

    legacy_epsilon = values.cfg.get(NOISE_SCHEDULER + "predict_epsilon")  # diffusers < 0.11 spelling
    train_steps = take("num_train_timesteps", 1000)
    return dict(
        name=SCHEDULER_CLASSES[class_name], num_train_timesteps=train_steps,
        num_inference_steps=take("num_inference_steps", train_steps, "policy.num_inference_steps",
                                 "num_train_timesteps"),
        beta_start=take("beta_start", 0.0001), beta_end=take("beta_end", 0.02),
        beta_schedule=take("beta_schedule", "linear"), clip_sample=take("clip_sample", True),
        clip_sample_range=take("clip_sample_range", 1.0),
        prediction_type=take("prediction_type", "sample" if legacy_epsilon is False else "epsilon"),
        set_alpha_to_one=take("set_alpha_to_one", True), steps_offset=take("steps_offset", 0),
    )


def run_metadata(cfg: Cfg, source: str, config: PolicyConfig) -> dict[str, Any]:
    """Run names from the cfg, which state dict was read, and warnings where the original behaves otherwise."""
    metadata: dict[str, Any] = {"source_format": "diffusion_policy", "weights": source}
    for key in ("name", "task_name", "exp_name"):
        value = cfg.get(key)
        if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            metadata[key] = value[:200] if isinstance(value, str) else value
    policy_target = cfg.text("policy._target_")
    if policy_target is not None:
        metadata["policy_target"] = policy_target[:200]
    warnings = []
    convention = cfg.get("policy.oa_step_convention")
    policy_class = (policy_target or "").rsplit(".", 1)[-1]
    if convention is False or (convention in (ABSENT, None) and policy_class == "DiffusionUnetLowdimPolicy"):
        # DiffusionUnetLowdimPolicy defaults to oa_step_convention=False; the Push-T configs set it true.
        warnings.append("cfg.policy.oa_step_convention is false or absent: the original executes actions from "
                        "step n_obs_steps, this package from step n_obs_steps - 1")
    variance_type = cfg.text(NOISE_SCHEDULER + "variance_type")
    if config.scheduler.name == "ddpm" and variance_type not in (None, "fixed_small"):
        warnings.append(f"cfg noise_scheduler.variance_type is {show(variance_type)}; this package samples DDPM "
                        "with 'fixed_small'")
    if warnings:
        metadata["warnings"] = warnings
    return metadata
