"""Image encoder weights of the two formats in `vision.ObservationEncoder`'s names, checked before building.

Our names: `encoders.{i}.backbone.<trunk>`, `encoders.{i}.pool.nets.{weight,bias}`,
`encoders.{i}.pool.pos_grid`, `encoders.{i}.out.{weight,bias}`, `image_scale`, `image_offset`
(i: the camera's index among the image keys, or 0 for a shared encoder). `<trunk>` is the ResNet
Sequential's own names (`0.weight`, `4.0.conv1.weight`, `7.1.downsample.1.bias`, ...), which both
formats share.

Diffusion Policy (robomimic VisualCore per image key, `nets` = [ResNet18Conv, SpatialSoftmax,
Flatten, Linear]):

    obs_encoder.obs_nets.<key>.nets.0.nets.<trunk>      -> encoders.{i}.backbone.<trunk>
    obs_encoder.obs_nets.<key>.nets.1.nets.{w,b}        -> encoders.{i}.pool.nets.{w,b}
    obs_encoder.obs_nets.<key>.nets.1.pos_x / pos_y     -> encoders.{i}.pool.pos_grid = [pos_x, pos_y] (H*W, 2)
    obs_encoder.obs_nets.<key>.nets.1.temperature       (must be 1: the softmax is then the same)
    obs_encoder.obs_nets.<key>.nets.3.{w,b}             -> encoders.{i}.out.{w,b}

LeRobot (`DiffusionRgbEncoder`, one shared or a ModuleList per camera):

    diffusion.rgb_encoder[.{i}].{backbone,pool,out}.*   -> encoders.{i}.{backbone,pool,out}.*
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch

from ..config import PolicyConfig, show
from ..vision import ObservationEncoder
from .errors import CheckpointError
from .weights import check_state

DP_PREFIX = "obs_encoder.obs_nets."
LEROBOT_PREFIX = "diffusion.rgb_encoder."
_DP_PARTS = (("nets.0.nets.", "backbone."), ("nets.1.nets.", "pool.nets."), ("nets.3.", "out."))
_DP_POOL_BUFFERS = ("nets.1.pos_x", "nets.1.pos_y", "nets.1.temperature")


def build_encoder(config: PolicyConfig, state: dict[str, torch.Tensor],
                  source: str | os.PathLike) -> ObservationEncoder:
    """The observation encoder with `state`, after `check_encoder_weights`."""
    check_encoder_weights(source, config, state)
    encoder = ObservationEncoder(config.observations, config.vision)
    encoder.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    return encoder.eval()


def check_encoder_weights(source: str | os.PathLike, config: PolicyConfig, state: dict[str, torch.Tensor]) -> None:
    """A CheckpointError unless `state` has exactly the names and shapes of the configured encoder (meta device)."""
    if not config.image_keys:
        if state:
            raise CheckpointError(source, f"image encoder weights ({show(sorted(state)[0])}, ...) but the "
                                          "configuration has no image observation")
        return
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in
                    ObservationEncoder(config.observations, config.vision).state_dict().items()}
    check_state(source, state, expected, "image encoder")


def _shape(state: dict[str, torch.Tensor], key: str, dims: int, source) -> tuple[int, ...]:
    tensor = state.get(key)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != dims:
        raise CheckpointError(source, f"the image encoder lacks {key} (a {dims}-D tensor): not a ResNet trunk with a "
                                      "spatial softmax and a linear output layer")
    return tuple(tensor.shape)


def encoder_options(state: dict[str, torch.Tensor], trunk: str, pool: str, out: str, source) -> dict[str, Any]:
    """VisionConfig options read off one encoder's weights (key prefixes of its trunk, pooling conv, output)."""
    if any(key.endswith("running_mean") for key in state):
        raise CheckpointError(source, "the image encoder uses BatchNorm (running statistics stored); only the "
                                      "GroupNorm encoder (obs_encoder_group_norm / use_group_norm) is supported")
    width = _shape(state, trunk + "0.weight", 4, source)[0]
    if f"{pool}weight" not in state:
        raise CheckpointError(source, f"the image encoder has no spatial-softmax keypoint conv ({pool}weight); "
                                      "only spatial softmax pooling with keypoints is supported")
    keypoints = _shape(state, pool + "weight", 4, source)[0]
    return dict(width=width, num_keypoints=keypoints, feature_dim=_shape(state, out + "weight", 2, source)[0],
                pooling="spatial_softmax")


def dp_encoder_state(source, other: dict[str, torch.Tensor], image_keys: list[str]) -> dict[str, torch.Tensor]:
    """robomimic's per-key VisualCore weights (`obs_encoder.obs_nets.<key>.*`) in our names (no image_scale yet)."""
    encoder = {key: value for key, value in other.items() if key.startswith("obs_encoder.")}
    state: dict[str, torch.Tensor] = {}
    for index, image_key in enumerate(image_keys):
        prefix = f"{DP_PREFIX}{image_key}."
        own = {key[len(prefix):]: encoder.pop(key) for key in list(encoder) if key.startswith(prefix)}
        if not own:
            raise CheckpointError(source, f"no obs_encoder weights for image key {image_key!r} ({prefix}*)")
        for key in _DP_POOL_BUFFERS:
            if key not in own:
                raise CheckpointError(source, f"{prefix}{key} is missing: not robomimic's SpatialSoftmax")
        temperature = own.pop("nets.1.temperature")
        if temperature.numel() != 1 or float(temperature.flatten()[0]) != 1.0:
            raise CheckpointError(source, f"{prefix}nets.1.temperature is {show(temperature.flatten().tolist()[:4])}; "
                                          "only the spatial softmax with temperature 1 is supported")
        pos_x, pos_y = own.pop("nets.1.pos_x").flatten(), own.pop("nets.1.pos_y").flatten()
        if pos_x.shape != pos_y.shape:
            raise CheckpointError(source, f"{prefix}nets.1.pos_x and pos_y differ in size")
        state[f"encoders.{index}.pool.pos_grid"] = torch.stack([pos_x, pos_y], dim=1)
        for key, value in own.items():
            renamed = next((ours + key[len(theirs):] for theirs, ours in _DP_PARTS if key.startswith(theirs)), None)
            if renamed is None:
                raise CheckpointError(source, f"unexpected image encoder weight {show(prefix + key)} (robomimic's "
                                              "VisualCore with ResNet18Conv, SpatialSoftmax and a Linear is supported)")
            state[f"encoders.{index}.{renamed}"] = value
    if encoder:
        first = sorted(encoder)[0]
        raise CheckpointError(source, f"obs_encoder weight {show(first)} belongs to no image key of shape_meta")
    return state


_PER_CAMERA = re.compile(r"^(\d+)\.(.*)$")


def lerobot_encoder_state(source, tensors: dict[str, torch.Tensor], separate: bool) -> dict[str, torch.Tensor]:
    """`diffusion.rgb_encoder.*` (shared) or `diffusion.rgb_encoder.{i}.*` (per camera) in our names."""
    state = {}
    for key, value in tensors.items():
        if not key.startswith(LEROBOT_PREFIX):
            continue
        rest = key[len(LEROBOT_PREFIX):]
        if separate:
            match = _PER_CAMERA.match(rest)
            if match is None:
                raise CheckpointError(source, f"{key} is not a per-camera encoder weight "
                                              "(use_separate_rgb_encoder_per_camera is true)")
            state[f"encoders.{match.group(1)}.{match.group(2)}"] = value
        else:
            state[f"encoders.0.{rest}"] = value
    return state


def image_affine(source, name: str, scale: torch.Tensor, offset: torch.Tensor,
                 channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) per channel from one value for every pixel, or one per channel."""
    scale, offset = scale.detach().double().flatten(), offset.detach().double().flatten()
    if scale.numel() != offset.numel() or scale.numel() not in (1, channels):
        raise CheckpointError(source, f"the {name} image normaliser has {scale.numel()} scale values; expected 1 or "
                                      f"{channels} (one per channel)")
    if not (torch.isfinite(scale).all() and torch.isfinite(offset).all()) or (scale == 0).any():
        raise CheckpointError(source, f"the {name} image normaliser is not finite or has a zero scale")
    return scale.expand(channels).clone(), offset.expand(channels).clone()
