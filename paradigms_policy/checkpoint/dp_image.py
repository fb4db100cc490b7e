"""Diffusion Policy's hybrid image policy (`DiffusionUnetHybridImagePolicy`) from an unpickled workspace.

What the original computes at evaluation (`predict_action`), and where it is read from:
- observation keys and their order: `cfg.policy.shape_meta.obs` (else `cfg.shape_meta.obs`), in
  file order; robomimic's ObservationEncoder concatenates its features in that order (`rgb` keys:
  the VisualCore's features after robomimic's ReLU feature activation; `low_dim` keys: the
  normalised values), per observation step, flattened over the steps into the global condition;
- normalisation: `normalizer.params_dict.<key>.{scale,offset}` for every key (images: one value,
  the [0, 1] -> [-1, 1] range normaliser, applied before the encoder);
- the encoder (`image_encoders.dp_encoder_state`): the GroupNorm ResNet-18 VisualCore per image
  key, centre crop to `cfg.policy.crop_shape` (`eval_fixed_crop` must be true);
- the U-Net from `cfg.policy.{down_dims, kernel_size, n_groups, cond_predict_scale,
  diffusion_step_embed_dim}`, else the weight shapes; the scheduler as for the low-dim policy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import (MAX_WIDTH, ConfigError, ObservationSpec, PolicyConfig, SchedulerConfig, UnetConfig, VisionConfig,
                      integer, show)
from ..normalizer import AffineNormalizer
from .dp_cfg import ABSENT, Cfg, Values, run_metadata, scheduler_options
from .errors import CheckpointError, PolicyWeights, invalid_config
from .image_encoders import check_encoder_weights, dp_encoder_state, encoder_options, image_affine
from .weights import check_weights, infer_unet

NORMALIZER_PREFIX = "normalizer.params_dict."
SUPPORTED_CLASS = "DiffusionUnetHybridImagePolicy"
DEFAULT_CROP = (76, 76)  # DiffusionUnetHybridImagePolicy's crop_shape default (the Push-T config sets 84x84)
KINDS = {"rgb": "image", "low_dim": "low_dim"}


def read_dp_image(path: Path, cfg: Cfg, source: str, unet_state: dict[str, torch.Tensor],
                  other: dict[str, torch.Tensor]) -> PolicyWeights:
    """`PolicyWeights` of a hybrid image policy (its state dict has obs_encoder.* weights)."""
    crop = _check_supported(path, cfg)
    observations = _shape_meta(path, cfg)
    image_keys = [key for key, kind, _ in observations if kind == "image"]
    low_keys = [key for key, kind, _ in observations if kind == "low_dim"]
    if not image_keys:
        raise CheckpointError(path, "the checkpoint has obs_encoder weights but shape_meta.obs has no rgb key")
    if not low_keys:
        raise CheckpointError(path, "shape_meta.obs has no low_dim key; image-only policies are not supported")
    encoder_state = dp_encoder_state(path, other, image_keys)
    options = encoder_options(encoder_state, "encoders.0.backbone.", "encoders.0.pool.nets.", "encoders.0.out.", path)
    inferred = infer_unet(unet_state)
    if inferred is None or inferred["global_cond_dim"] <= 0:
        raise CheckpointError(path, "the model.* weights do not have the layout of Diffusion Policy's "
                                    "ConditionalUnet1D with a global condition")
    values = Values(cfg)
    try:
        specs = tuple(ObservationSpec(key=key, kind=kind, shape=shape) for key, kind, shape in observations)
        vision = VisionConfig(crop_shape=crop, shared_encoder=False, output_relu=True, **options)
        config = _config(values, specs, vision, inferred)
    except ConfigError as err:
        raise invalid_config(path, err, values.source) from None
    check_weights(path, config.unet, unet_state, values.source)
    channels = specs[[s.key for s in specs].index(image_keys[0])].shape[0]
    affines = [image_affine(path, key, *_stats(path, other, key), channels) for key in image_keys]
    encoder_state["image_scale"] = torch.stack([scale for scale, _ in affines]).float()
    encoder_state["image_offset"] = torch.stack([offset for _, offset in affines]).float()
    check_encoder_weights(path, config, encoder_state)
    obs_normalizer = _concatenated(path, [_stats(path, other, key) for key in low_keys])
    action_normalizer = _concatenated(path, [_stats(path, other, "action")])
    if obs_normalizer.dim != config.obs_dim or action_normalizer.dim != config.action_dim:
        raise CheckpointError(path, f"normaliser sizes (low-dim obs {obs_normalizer.dim}, action "
                                    f"{action_normalizer.dim}) do not match shape_meta (obs {config.obs_dim}, action "
                                    f"{config.action_dim})")
    metadata = run_metadata(cfg, source, config)
    metadata["observation_layout"] = [spec.key for spec in specs]
    return PolicyWeights(config, unet_state, obs_normalizer, action_normalizer, metadata, encoder_state)


def _check_supported(path: Path, cfg: Cfg) -> tuple[int, int] | None:
    """Refuse other image policies and settings the original evaluates differently; the crop shape."""
    policy_class = (cfg.text("policy._target_") or "").rsplit(".", 1)[-1]
    if policy_class and policy_class != SUPPORTED_CLASS:
        raise CheckpointError(path, f"policy class {show(policy_class)} is not supported for an image checkpoint; "
                                    f"only the U-Net hybrid image policy ({SUPPORTED_CLASS}) is")
    for key, required in (("obs_as_global_cond", True), ("obs_encoder_group_norm", True)):
        value = cfg.get(f"policy.{key}")
        if value is not ABSENT and value is not required:
            raise CheckpointError(path, f"cfg.policy.{key} = {show(value)} is not supported (only {required})")
    crop = cfg.get("policy.crop_shape")
    if crop is ABSENT:
        crop = DEFAULT_CROP
    if crop is not None:
        if not isinstance(crop, list) or len(crop) != 2:
            raise CheckpointError(path, f"cfg.policy.crop_shape = {show(crop)} is not [height, width] or null")
        crop = tuple(cfg.resolve(item) for item in crop)
        if cfg.get("policy.eval_fixed_crop") is not True:
            raise CheckpointError(path, "cfg.policy.eval_fixed_crop is not true: the original then crops at random "
                                        "at evaluation; only the fixed centre crop is supported")
    return crop


def _shape_meta(path: Path, cfg: Cfg) -> list[tuple[str, str, list[Any]]]:
    """[(key, kind, shape)] of shape_meta.obs in file order."""
    for base in ("policy.shape_meta.obs", "shape_meta.obs"):
        obs = cfg.get(base)
        if isinstance(obs, dict):
            break
    else:
        raise CheckpointError(path, "cfg.policy.shape_meta.obs (or cfg.shape_meta.obs) is missing: the observation "
                                    "keys of an image policy cannot be inferred from the weights")
    entries = []
    for key in list(obs)[:MAX_WIDTH]:
        if not isinstance(key, str) or "." in key or not key:
            raise CheckpointError(path, f"shape_meta.obs key {show(key)} is not supported")
        kind = cfg.get(f"{base}.{key}.type")
        kind = "low_dim" if kind is ABSENT or kind is None else kind
        if kind not in KINDS:
            raise CheckpointError(path, f"cfg.{base}.{key}.type = {show(kind)} is not supported (rgb or low_dim)")
        shape = cfg.get(f"{base}.{key}.shape")
        if not isinstance(shape, list) or len(shape) > 8:
            raise CheckpointError(path, f"cfg.{base}.{key}.shape = {show(shape)} is not a list of sizes")
        entries.append((key, KINDS[kind], [cfg.resolve(item) for item in shape]))
    return entries


def _config(values: Values, specs: tuple[ObservationSpec, ...], vision: VisionConfig,
            inferred: dict[str, Any]) -> PolicyConfig:
    def take(name: str, fallback: Any = ABSENT, origin: str = "inferred from the weights") -> Any:
        return values.take(name, (f"policy.{name}", name), fallback, origin)

    unet = {name: inferred[name] for name in ("input_dim", "global_cond_dim")}
    for name in ("diffusion_step_embed_dim", "down_dims", "kernel_size", "cond_predict_scale"):
        unet[name] = values.take(f"unet.{name}", (f"policy.{name}",), inferred[name], "inferred from the weights")
    unet["n_groups"] = values.take("unet.n_groups", ("policy.n_groups",), 8, "ConditionalUnet1D's default")
    obs_dim = sum(spec.size for spec in specs)
    per_step = obs_dim + vision.feature_dim * sum(spec.kind == "image" for spec in specs)
    global_cond_dim = integer("unet.global_cond_dim", unet["global_cond_dim"], 1, MAX_WIDTH)
    steps = global_cond_dim // per_step if global_cond_dim % per_step == 0 else ABSENT
    return PolicyConfig(obs_dim=obs_dim, action_dim=take("action_dim", unet["input_dim"], "the U-Net's input_dim"),
                        horizon=take("horizon"), n_obs_steps=take("n_obs_steps", steps, "global_cond_dim / features"),
                        n_action_steps=take("n_action_steps"), unet=UnetConfig(**unet),
                        scheduler=SchedulerConfig(**scheduler_options(values)), observations=specs, vision=vision)


def _stats(path: Path, state: dict[str, torch.Tensor], key: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = [f"{NORMALIZER_PREFIX}{key}.{stat}" for stat in ("scale", "offset")]
    for name in names:
        if name not in state:
            raise CheckpointError(path, f"the policy state dict lacks {name} (the {key} normaliser)")
    return state[names[0]], state[names[1]]


def _concatenated(path: Path, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> AffineNormalizer:
    try:
        return AffineNormalizer(torch.cat([s.float().flatten() for s, _ in parts]),
                                torch.cat([o.float().flatten() for _, o in parts]))
    except ValueError as err:
        raise CheckpointError(path, f"invalid normaliser: {err}") from None
