"""Read a LeRobot Diffusion Policy directory (`config.json` + `model.safetensors`).

LeRobot's `DiffusionConditionalUnet1d` is Diffusion Policy's U-Net under other names:

    diffusion.unet.<name>                        -> <name>        (the prefix goes)
    ....conv1. / ....conv2.  (residual blocks)    -> .blocks.0. / .blocks.1.
    down_modules.L.2.{weight,bias}               -> down_modules.L.2.conv.{weight,bias}
    up_modules.L.2.{weight,bias}                 -> up_modules.L.2.conv.{weight,bias}

Observation vector. LeRobot's global condition is, per observation step, the concatenation
[observation.state, observation.environment_state] (in that order), flattened over the
`n_obs_steps` steps; so our `obs_dim` is state_dim + env_dim and observations must be given in
that order. Image features (`observation.image*`, type VISUAL) need the image encoder's weights
(`diffusion.rgb_encoder.*`, `lerobot_image.py`); their features go between the two.

Normaliser. Each feature is normalised according to the mode LeRobot assigns to its type
(`normalization_mapping`, default STATE and ACTION -> MIN_MAX, VISUAL -> MEAN_STD, any other
type such as ENV -> IDENTITY), expressed exactly as an `AffineNormalizer` x -> x * scale + offset:

- statistics stored as buffers in model.safetensors (LeRobot's `Normalize` module, e.g.
  `normalize_inputs.buffer_observation_state.min`): MIN_MAX is
  y = (x - min) / (max - min + 1e-8) * 2 - 1, so scale = 2 / (max - min + 1e-8) and
  offset = -1 - scale * min; MEAN_STD is y = (x - mean) / (std + 1e-8).
- statistics in a separate normaliser file (newer LeRobot's processor pipeline, e.g.
  `policy_preprocessor_step_3_normalizer_processor.safetensors` with flat keys
  `observation.state.min`): MIN_MAX is y = 2 (x - min) / d - 1 with d = max - min, or eps where
  max == min; MEAN_STD is y = (x - mean) / (std + eps); eps from the pipeline's JSON (default 1e-8).

LeRobot unnormalises actions with (y + 1) / 2 * (max - min) + min (buffers) or the same with d
(processor file); inverting our affine map instead differs from the former by at most 1e-8 x (y + 1) / 2.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..config import (MAX_HORIZON, MAX_WIDTH, ConfigError, ObservationSpec, PolicyConfig, SchedulerConfig, UnetConfig,
                      integer, number, show)
from ..normalizer import AffineNormalizer
from .errors import (CONFIG_FILE, WEIGHTS_FILE, CheckpointError, PolicyWeights, invalid_config, read_json,
                     read_safetensors)
from .image_encoders import LEROBOT_PREFIX, check_encoder_weights
from .lerobot_image import image_normalisers, image_specs, vision_and_encoder
from .weights import check_weights

UNET_PREFIX = "diffusion.unet."
STATE_KEY = "observation.state"
ENV_KEY = "observation.environment_state"
ACTION_KEY = "action"
BUFFER_EPS = 1e-8

# LeRobot's DiffusionConfig defaults, used where config.json omits a field (as LeRobot itself would).
LEROBOT_DEFAULTS: dict[str, Any] = {
    "n_obs_steps": 2,
    "horizon": 16,
    "n_action_steps": 8,
    "down_dims": [512, 1024, 2048],
    "kernel_size": 5,
    "n_groups": 8,
    "diffusion_step_embed_dim": 128,
    "use_film_scale_modulation": True,
    "noise_scheduler_type": "DDPM",
    "num_train_timesteps": 100,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_inference_steps": None,
}
DEFAULT_NORMALIZATION = {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
SCHEDULER_NAMES = {"DDPM": "ddpm", "DDIM": "ddim"}

_SAMPLING_LAYER = re.compile(r"^((?:down|up)_modules\.\d+\.2)\.(weight|bias)$")


def lerobot_to_native_key(key: str) -> str:
    """A LeRobot U-Net parameter name (without `diffusion.unet.`) in Diffusion Policy's naming."""
    key = key.replace(".conv1.", ".blocks.0.").replace(".conv2.", ".blocks.1.")
    return _SAMPLING_LAYER.sub(r"\1.conv.\2", key)


def read_lerobot_directory(path: Path) -> PolicyWeights:
    """`PolicyWeights` from a LeRobot diffusion policy directory; every problem is a `CheckpointError`."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    document = read_json(config_path)
    if document.get("type", "diffusion") != "diffusion":
        raise CheckpointError(config_path, f"policy type {show(document.get('type'))} is not supported "
                                           "(expected 'diffusion')")
    features, obs_keys, image_keys = _low_dim_features(config_path, document)
    obs_dim = sum(features[k]["dim"] for k in obs_keys)
    action_dim = features[ACTION_KEY]["dim"]
    tensors, unet_state = _unet_weights(path / WEIGHTS_FILE)
    has_encoder = any(key.startswith(LEROBOT_PREFIX) for key in tensors)
    if image_keys and not has_encoder:
        raise CheckpointError(config_path, f"image feature {image_keys[0]!r} is not supported without image encoder "
                                           f"weights ({LEROBOT_PREFIX}* in {WEIGHTS_FILE})")
    if has_encoder and not image_keys:
        raise CheckpointError(path / WEIGHTS_FILE, "the weights contain an image encoder but config.json has no image "
                                                   "(VISUAL) feature")
    observations, vision, encoder_state, specs = (), None, {}, []
    if image_keys:
        specs = image_specs(config_path, features, image_keys)
        vision, encoder_state = vision_and_encoder(path, document, tensors, specs)
        low = [ObservationSpec(key=key, kind="low_dim", shape=[features[key]["dim"]]) for key in obs_keys]
        observations = (low[0], *specs, *low[1:])  # state, cameras, environment state
    config = _policy_config(config_path, _settings(document), obs_dim, action_dim, observations, vision)
    check_weights(path, config.unet, unet_state, _lerobot_name)
    modes, eps, stats, stats_source = _statistics(path, document, tensors, features)
    if image_keys:
        encoder_state.update(image_normalisers(stats_source, specs, lambda key, channels: _affine(
            stats_source, stats, key, modes[key], eps, channels)))
        check_encoder_weights(path, config, encoder_state)
    obs_normalizer = _normalizer(stats_source, [_affine(stats_source, stats, key, modes[key], eps, features[key]["dim"])
                                                for key in obs_keys])
    action_normalizer = _normalizer(stats_source, [_affine(stats_source, stats, ACTION_KEY, modes[ACTION_KEY], eps,
                                                           action_dim)])
    metadata = {
        "source_format": "lerobot",
        "observation_layout": obs_keys,
        "normalization": {key: modes[key] for key in obs_keys + [ACTION_KEY]},
        "statistics_file": str(stats_source.name),
    }
    if image_keys:
        metadata["observation_layout"] = [spec.key for spec in observations]
        metadata["normalization"].update({key: modes[key] for key in image_keys})
    ignored = sorted(k for k in features if k not in obs_keys + image_keys + [ACTION_KEY])
    if ignored:
        metadata["ignored_features"] = ignored
    return PolicyWeights(config, unet_state, obs_normalizer, action_normalizer, metadata, encoder_state)


def _settings(document: dict[str, Any]) -> dict[str, Any]:
    """config.json's model and scheduler settings, LeRobot's defaults where it omits them."""
    settings = dict(LEROBOT_DEFAULTS)
    settings.update({key: value for key, value in document.items()
                     if key in LEROBOT_DEFAULTS and (value is not None or key == "num_inference_steps")})
    return settings


def _low_dim_features(config_path: Path,
                      document: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """The features with each used low-dim one's flat size ("dim"), the low-dim observation keys in condition
    order, and the image (VISUAL) features in input_features order."""
    features = _features(config_path, document)
    image_keys = [name for name, feature in features.items()
                  if name.startswith("observation.image") or feature["type"] == "VISUAL"]
    if STATE_KEY not in features:
        raise CheckpointError(config_path, f"the input features lack {STATE_KEY!r}")
    if ACTION_KEY not in features:
        raise CheckpointError(config_path, f"the output features lack {ACTION_KEY!r}")
    obs_keys = [STATE_KEY] + ([ENV_KEY] if ENV_KEY in features else [])
    for name in obs_keys + [ACTION_KEY]:
        features[name]["dim"] = _flat_size(config_path, features[name]["where"], features[name]["shape"])
    return features, obs_keys, image_keys


def _unet_weights(weights_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(every tensor of model.safetensors, the U-Net's under Diffusion Policy's names)."""
    tensors = read_safetensors(weights_path)
    unet_state = {lerobot_to_native_key(key[len(UNET_PREFIX):]): value
                  for key, value in tensors.items() if key.startswith(UNET_PREFIX)}
    if not unet_state:
        raise CheckpointError(weights_path, f"no U-Net weights (keys starting with {UNET_PREFIX!r})")
    return tensors, unet_state


def _features(config_path: Path, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: {"type": STATE/ENV/VISUAL/ACTION, "shape", "where", "mode": v1 mode or None}}."""
    features: dict[str, dict[str, Any]] = {}
    if "input_features" in document or "output_features" in document:
        for section in ("input_features", "output_features"):
            for name, entry in _object(config_path, document, section).items():
                if not isinstance(entry, dict) or "shape" not in entry:
                    raise CheckpointError(config_path, f"{section}.{name} has no shape")
                features[name] = {"type": str(entry.get("type") or _default_type(name)).upper(),
                                  "shape": entry["shape"], "where": f"{section}.{name}", "mode": None}
        return features
    if "input_shapes" in document or "output_shapes" in document:  # LeRobot < 0.2 configuration
        modes = {**_object(config_path, document, "input_normalization_modes"),
                 **_object(config_path, document, "output_normalization_modes")}
        for section in ("input_shapes", "output_shapes"):
            for name, shape in _object(config_path, document, section).items():
                features[name] = {"type": _default_type(name), "shape": shape, "where": f"{section}.{name}",
                                  "mode": str(modes.get(name, "IDENTITY")).upper()}
        return features
    raise CheckpointError(config_path, "no input_features/output_features (or input_shapes/output_shapes) entries")


def _object(config_path: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key) or {}
    if not isinstance(value, dict):
        raise CheckpointError(config_path, f"{key} must be an object (got {show(value)})")
    return value


def _default_type(name: str) -> str:
    """The feature type LeRobot gives a feature by its name."""
    by_name = {ACTION_KEY: "ACTION", STATE_KEY: "STATE", ENV_KEY: "ENV"}
    return by_name.get(name, "VISUAL" if "image" in name else "UNKNOWN")


def _flat_size(config_path: Path, where: str, shape) -> int:
    """The size of a flat feature from its `shape` entry ([n])."""
    if not isinstance(shape, list) or len(shape) != 1:
        raise CheckpointError(config_path, f"{where}.shape = {show(shape)}: only flat (1-D) features are supported")
    try:
        return integer(f"{where}.shape[0]", shape[0], 1, MAX_WIDTH)
    except ConfigError as err:
        raise CheckpointError(config_path, str(err)) from None


# config.json's names for the PolicyConfig fields whose names differ beyond the section prefix.
_LEROBOT_NAMES = {"unet.cond_predict_scale": "use_film_scale_modulation", "scheduler.name": "noise_scheduler_type",
                  "unet.input_dim": "the action feature's shape",
                  "unet.global_cond_dim": "n_obs_steps x the observation features' size"}


def _lerobot_name(field: str) -> str:
    base, bracket, rest = field.partition("[")
    return _LEROBOT_NAMES.get(base, base.rsplit(".", 1)[-1]) + bracket + rest


def _policy_config(config_path: Path, settings: dict[str, Any], obs_dim: int, action_dim: int,
                   observations: tuple = (), vision=None) -> PolicyConfig:
    """PolicyConfig from config.json's settings (LeRobot's defaults filled in); values are passed on as read, so
    a wrong type or range is refused by the config, named as config.json names it."""
    scheduler_type = settings["noise_scheduler_type"]
    if not isinstance(scheduler_type, str) or scheduler_type.upper() not in SCHEDULER_NAMES:
        raise CheckpointError(config_path, f"noise_scheduler_type {show(scheduler_type)} is not supported "
                                           "(expected DDPM or DDIM)")
    num_train, num_inference = settings["num_train_timesteps"], settings["num_inference_steps"]
    try:
        scheduler = SchedulerConfig(
            name=SCHEDULER_NAMES[scheduler_type.upper()], num_train_timesteps=num_train,
            num_inference_steps=num_train if num_inference is None else num_inference,
            **{name: settings[name] for name in ("beta_start", "beta_end", "beta_schedule", "clip_sample",
                                                 "clip_sample_range", "prediction_type")})
        n_obs_steps = integer("n_obs_steps", settings["n_obs_steps"], 1, MAX_HORIZON)
        cameras = sum(spec.kind == "image" for spec in observations)
        per_step = obs_dim + (vision.feature_dim * cameras if vision is not None else 0)
        unet = UnetConfig(input_dim=action_dim, global_cond_dim=per_step * n_obs_steps,
                          cond_predict_scale=settings["use_film_scale_modulation"],
                          **{name: settings[name] for name in ("diffusion_step_embed_dim", "down_dims", "kernel_size",
                                                               "n_groups")})
        return PolicyConfig(obs_dim=obs_dim, action_dim=action_dim, horizon=settings["horizon"],
                            n_obs_steps=n_obs_steps, n_action_steps=settings["n_action_steps"],
                            unet=unet, scheduler=scheduler, observations=observations, vision=vision)
    except ConfigError as err:
        raise invalid_config(config_path, err, _lerobot_name) from None


# --------------------------------------------------------------------------------------------
# Normalisation statistics.


def _statistics(directory: Path, document: dict[str, Any], tensors: dict[str, torch.Tensor],
                features: dict[str, dict[str, Any]]):
    """(mode per feature, eps, {feature: {stat: tensor}}, file the statistics came from)."""
    stat_files = sorted(p for p in directory.glob("*normalizer*.safetensors") if p.is_file())
    if stat_files:
        # Prefer the preprocessor's normaliser; the postprocessor's unnormaliser holds the same statistics.
        stat_files.sort(key=lambda p: (0 if "preprocessor" in p.name and "unnormalizer" not in p.name else 1, p.name))
        stats: dict[str, dict[str, torch.Tensor]] = {}
        for stat_file in reversed(stat_files):  # the preferred file is read last and wins
            for flat_key, tensor in read_safetensors(stat_file).items():
                if "." in flat_key:
                    feature, stat = flat_key.rsplit(".", 1)
                    stats.setdefault(feature, {})[stat] = tensor
        norm_map, eps = _pipeline_settings(directory, document)
        modes = {name: _mode(feature, norm_map) for name, feature in features.items()}
        return modes, eps, stats, stat_files[0]

    norm_map = _norm_map(document.get("normalization_mapping"), directory / CONFIG_FILE)
    modes = {name: _mode(feature, norm_map) for name, feature in features.items()}
    stats = {}
    for name in features:
        modules = ("unnormalize_outputs", "normalize_targets") if name == ACTION_KEY else ("normalize_inputs",)
        prefix = name.replace(".", "_")
        for stat in ("min", "max", "mean", "std"):
            for module in modules:
                candidates = (f"{module}.buffer_{prefix}.{stat}", f"{module}.buffer_{prefix}_{stat}",
                              f"{module}.{prefix}_{stat}", f"{module}.{prefix}.{stat}")
                found = next((tensors[c] for c in candidates if c in tensors), None)
                if found is not None:
                    stats.setdefault(name, {})[stat] = found
                    break
    return modes, None, stats, directory / WEIGHTS_FILE


def _pipeline_settings(directory: Path, document: dict[str, Any]) -> tuple[dict[str, str], float]:
    """norm_map and eps of the processor pipeline's normaliser step, else config.json's mapping and 1e-8."""
    for pipeline in sorted(directory.glob("*preprocessor*.json")):
        steps = read_json(pipeline).get("steps", [])
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and "normalizer" in str(step.get("registry_name", "")) and \
                    isinstance(step.get("config"), dict):
                config = step["config"]
                norm_map = _norm_map(config.get("norm_map", document.get("normalization_mapping")), pipeline)
                try:
                    return norm_map, number("normaliser eps", config.get("eps", BUFFER_EPS), 0.0, 1.0)
                except ConfigError as err:
                    raise CheckpointError(pipeline, str(err)) from None
    return _norm_map(document.get("normalization_mapping"), directory / CONFIG_FILE), BUFFER_EPS


def _norm_map(mapping, source: Path) -> dict[str, str]:
    if mapping is None:
        return dict(DEFAULT_NORMALIZATION)
    if not isinstance(mapping, dict):
        raise CheckpointError(source, "normalization mapping must be an object of feature type -> mode")
    return {str(k).upper(): str(v).upper() for k, v in mapping.items()}


def _mode(feature: dict[str, Any], norm_map: dict[str, str]) -> str:
    if feature["mode"] is not None:  # LeRobot < 0.2: per-feature modes
        return feature["mode"]
    return norm_map.get(feature["type"], "IDENTITY")


def _affine(source: Path, stats: dict[str, dict[str, torch.Tensor]], name: str, mode: str,
            eps: float | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) in float64 for one feature; eps None means the buffer formulas."""
    needed = {"MIN_MAX": ("min", "max"), "MEAN_STD": ("mean", "std"), "IDENTITY": ()}.get(mode)
    if needed is None:
        raise CheckpointError(source, f"normalisation mode {mode!r} of {name!r} is not supported "
                                      "(MIN_MAX, MEAN_STD or IDENTITY)")
    feature_stats = stats.get(name, {})
    missing = [f"{name}.{stat}" for stat in needed if stat not in feature_stats]
    if missing:
        raise CheckpointError(source, f"missing normalisation statistics {', '.join(missing)} ({mode} for {name!r})")
    values = {stat: feature_stats[stat].detach().double().flatten() for stat in needed}
    for stat, value in values.items():
        if value.numel() != dim:
            raise CheckpointError(source, f"statistic {name}.{stat} has {value.numel()} entries, the feature has {dim}")
        if not torch.isfinite(value).all():
            raise CheckpointError(source, f"statistic {name}.{stat} is not finite (statistics never fitted?)")
    if mode == "IDENTITY":
        return torch.ones(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    if mode == "MIN_MAX":
        low, high = values["min"], values["max"]
        if eps is None:
            span = high - low + BUFFER_EPS
        else:
            span = high - low
            span = torch.where(span == 0, torch.full_like(span, eps), span)
        scale = 2.0 / span
        return scale, -1.0 - scale * low
    scale = 1.0 / (values["std"] + (BUFFER_EPS if eps is None else eps))
    return scale, -values["mean"] * scale


def _normalizer(source: Path, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> AffineNormalizer:
    try:
        return AffineNormalizer(torch.cat([scale for scale, _ in parts]).float(),
                                torch.cat([offset for _, offset in parts]).float())
    except ValueError as err:
        raise CheckpointError(source, f"invalid normalisation statistics: {err}") from None
