"""The image part of a LeRobot Diffusion Policy directory: `DiffusionRgbEncoder` and the image features.

LeRobot's global condition per observation step is [observation.state, the image features of
every camera (in input_features order), observation.environment_state], flattened over the steps.
Each camera's image (float, [0, 1]) is normalised with its VISUAL statistics (default MEAN_STD,
per channel) and encoded by `diffusion.rgb_encoder` (shared) or `diffusion.rgb_encoder.{i}`
(use_separate_rgb_encoder_per_camera): centre crop at evaluation, the GroupNorm ResNet-18 trunk,
spatial softmax with the stored `pool.pos_grid`, `out` Linear, ReLU.

Settings config.json omits take the defaults of LeRobot's DiffusionConfig as of the releases that
wrote `input_features` and the buffer or processor statistics (0.1 to 0.4): vision_backbone
resnet18, crop_shape [84, 84], pretrained_backbone_weights null, use_group_norm true,
spatial_softmax_num_keypoints 32, use_separate_rgb_encoder_per_camera false. A config with
`resize_shape` or `crop_ratio` entries comes from a later release, whose crop_shape default is
null; a resize or a crop ratio other than 1 is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, ObservationSpec, VisionConfig, show
from .errors import CheckpointError
from .image_encoders import LEROBOT_PREFIX, encoder_options, image_affine, lerobot_encoder_state

IMAGE_DEFAULTS: dict[str, Any] = {
    "vision_backbone": "resnet18",
    "crop_shape": [84, 84],
    "pretrained_backbone_weights": None,
    "use_group_norm": True,
    "spatial_softmax_num_keypoints": 32,
    "use_separate_rgb_encoder_per_camera": False,
}
NEWER_RELEASE_KEYS = ("resize_shape", "crop_ratio")


def image_settings(document: dict[str, Any]) -> dict[str, Any]:
    settings = dict(IMAGE_DEFAULTS)
    if any(key in document for key in NEWER_RELEASE_KEYS):
        settings["crop_shape"] = None
    settings.update({key: document[key] for key in IMAGE_DEFAULTS if key in document})
    return settings


def image_specs(config_path: Path, features: dict[str, dict[str, Any]], image_keys: list[str]) -> list[ObservationSpec]:
    specs = []
    for key in image_keys:
        try:
            specs.append(ObservationSpec(key=key, kind="image", shape=features[key]["shape"]))
        except ConfigError as err:
            raise CheckpointError(config_path, f"{features[key]['where']}: {err}") from None
    return specs


def vision_and_encoder(directory: Path, document: dict[str, Any], tensors: dict[str, torch.Tensor],
                       specs: list[ObservationSpec]) -> tuple[VisionConfig, dict[str, torch.Tensor]]:
    """(the encoder's VisionConfig, its weights in our names without the image normalisers)."""
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    settings = image_settings(document)
    if document.get("resize_shape") is not None:
        raise CheckpointError(config_path, f"resize_shape = {show(document['resize_shape'])} is not supported "
                                           "(only null)")
    if document.get("crop_ratio", 1.0) != 1.0:
        raise CheckpointError(config_path, f"crop_ratio = {show(document['crop_ratio'])} is not supported (only 1)")
    if settings["vision_backbone"] != "resnet18":
        raise CheckpointError(config_path, f"vision_backbone {show(settings['vision_backbone'])} is not supported "
                                           "(only resnet18)")
    if settings["use_group_norm"] is not True:
        raise CheckpointError(config_path, f"use_group_norm = {show(settings['use_group_norm'])} (BatchNorm) is not "
                                           "supported; only the GroupNorm encoder is")
    separate = settings["use_separate_rgb_encoder_per_camera"]
    if not isinstance(separate, bool):
        raise CheckpointError(config_path, f"use_separate_rgb_encoder_per_camera = {show(separate)} is not a bool")
    state = lerobot_encoder_state(weights_path, tensors, separate)
    if not state:
        raise CheckpointError(weights_path, f"no image encoder weights ({LEROBOT_PREFIX}*) for the image features")
    if settings["pretrained_backbone_weights"] is not None and not any(".backbone." in key for key in state):
        raise CheckpointError(weights_path, f"pretrained_backbone_weights = "
                                            f"{show(settings['pretrained_backbone_weights'])} but the file holds no "
                                            "backbone weights (torchvision's download is not used here)")
    options = encoder_options(state, "encoders.0.backbone.", "encoders.0.pool.nets.", "encoders.0.out.", weights_path)
    if settings["spatial_softmax_num_keypoints"] != options["num_keypoints"]:
        raise CheckpointError(weights_path, f"spatial_softmax_num_keypoints is "
                                            f"{show(settings['spatial_softmax_num_keypoints'])} but the weights have "
                                            f"{options['num_keypoints']} keypoints")
    try:
        vision = VisionConfig(crop_shape=settings["crop_shape"], shared_encoder=not separate, output_relu=True,
                              **options)
    except ConfigError as err:
        raise CheckpointError(config_path, f"invalid configuration: {err}") from None
    return vision, state


def image_normalisers(source: Path, specs: list[ObservationSpec], affine) -> dict[str, torch.Tensor]:
    """image_scale/image_offset buffers from `affine(key, channels)` -> per-channel (scale, offset) in float64."""
    parts = [image_affine(source, spec.key, *affine(spec.key, spec.shape[0]), spec.shape[0]) for spec in specs]
    return {"image_scale": torch.stack([scale for scale, _ in parts]).float(),
            "image_offset": torch.stack([offset for _, offset in parts]).float()}
