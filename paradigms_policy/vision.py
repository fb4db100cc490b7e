"""Image encoders of the image-conditioned Diffusion Policy (pure torch; no torchvision).

One camera's encoder (`RgbEncoder`), as both Diffusion Policy's hybrid image policy (robomimic's
VisualCore) and LeRobot's `DiffusionRgbEncoder` build it:

    centre crop (evaluation) -> backbone -> pool -> flatten -> out (Linear) [-> ReLU, LeRobot]

    backbone   ResNet-18 without its average pool and fc, as a Sequential of torchvision's children:
               0 conv1, 1 bn1, 2 relu, 3 maxpool, 4..7 layer1..layer4 (blocks `conv1 bn1 conv2 bn2
               downsample.{0,1}`); every BatchNorm is GroupNorm(C // 16, C). `width` is conv1's
               channel count (64 for ResNet-18), the stages have width x 1, 2, 4, 8.
    pool       `spatial_softmax`: `pool.nets` (1x1 Conv2d to K keypoints), softmax over each map,
               expected (x, y) under the stored `pool.pos_grid` (H*W, 2) -> 2K values; or
               `average`: global average of the last stage -> 8 width values.

`ObservationEncoder` normalises each camera's image per channel (x * scale + offset, the
checkpoint's statistics as buffers `image_scale`/`image_offset`), runs the camera's encoder
(`encoders.{i}`, or one shared `encoders.0`) and concatenates, per observation step and in the
configured key order, the image features and the (already normalised) low-dim values; the
result is flattened over the steps into the U-Net's global condition.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_CHANNELS = 16  # GroupNorm(num_channels // 16, num_channels), as both originals replace BatchNorm


def image_input(frame) -> np.ndarray:
    """A camera frame (H, W, C) of uint8 RGB -> the policy's image input: float32 (C, H, W) in [0, 1].

    The one conversion used by evaluation, the node and the demo, so that they feed identical values.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3:
        raise ValueError(f"a frame must be uint8 (H, W, C), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels // GROUP_NORM_CHANNELS, channels)


class BasicBlock(nn.Module):
    """ResNet's basic residual block (two 3x3 convolutions), with torchvision's parameter names."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = group_norm(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            group_norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


def resnet18_trunk(width: int = 64, in_channels: int = 3) -> nn.Sequential:
    """ResNet-18's children up to layer4 (indices 0..7), GroupNorm instead of BatchNorm."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), group_norm(width),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    channels = width
    for stage, multiple in enumerate((1, 2, 4, 8)):
        out_channels = width * multiple
        stride = 1 if stage == 0 else 2
        layers.append(nn.Sequential(BasicBlock(channels, out_channels, stride),
                                    BasicBlock(out_channels, out_channels, 1)))
        channels = out_channels
    return nn.Sequential(*layers)


def trunk_map_size(size: int) -> int:
    """The side of the last stage's map for an input side `size` (conv1 and maxpool halve, so do layer2..4)."""
    size = (size + 2 * 3 - 7) // 2 + 1
    for _ in range(4):  # maxpool, then the stride-2 first convolution of layer2, layer3, layer4
        size = (size + 2 - 3) // 2 + 1
    return size


def grid(height: int, width: int) -> torch.Tensor:
    """(height * width, 2) expected-position grid: x from -1 to 1 along the width, y along the height."""
    ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height, dtype=torch.float64),
                            torch.linspace(-1.0, 1.0, width, dtype=torch.float64), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1).float()


class SpatialSoftmax(nn.Module):
    """1x1 conv to keypoint maps, softmax over each map, expected (x, y) per keypoint."""

    def __init__(self, channels: int, height: int, width: int, num_keypoints: int):
        super().__init__()
        self.nets = nn.Conv2d(channels, num_keypoints, 1)
        self.register_buffer("pos_grid", grid(height, width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.nets(features)
        attention = torch.softmax(maps.flatten(2), dim=-1)  # (B, K, H*W)
        return (attention @ self.pos_grid).flatten(1)  # (B, 2K): x0, y0, x1, y1, ...


class AveragePool(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


def centre_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's center_crop for a crop no larger than the image (its offsets: round((H - h) / 2))."""
    top = int(round((images.shape[-2] - height) / 2.0))
    left = int(round((images.shape[-1] - width) / 2.0))
    return images[..., top:top + height, left:left + width]


class RgbEncoder(nn.Module):
    """One camera's image (B, C, H, W) -> features (B, feature_dim)."""

    def __init__(self, vision, image_shape: tuple[int, int, int]):
        super().__init__()
        channels, height, width = image_shape
        self.crop_shape = tuple(vision.crop_shape) if vision.crop_shape is not None else None
        if self.crop_shape is not None:
            height, width = self.crop_shape
        self.backbone = resnet18_trunk(vision.width, channels)
        last = vision.width * 8
        if vision.pooling == "spatial_softmax":
            self.pool = SpatialSoftmax(last, trunk_map_size(height), trunk_map_size(width), vision.num_keypoints)
            pooled = 2 * vision.num_keypoints
        else:
            self.pool = AveragePool()
            pooled = last
        self.out = nn.Linear(pooled, vision.feature_dim)
        self.output_relu = vision.output_relu

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop_shape is not None:
            images = centre_crop(images, *self.crop_shape)
        features = self.out(self.pool(self.backbone(images)))
        return F.relu(features) if self.output_relu else features


class ObservationEncoder(nn.Module):
    """Raw images and normalised low-dim values of an observation window -> the flattened global condition.

    `observations` is the config's tuple of ObservationSpec (key, kind, shape) in condition order,
    `vision` its VisionConfig. Images are float (B, T, C, H, W), in the units the checkpoint's
    statistics expect (both originals feed [0, 1] RGB).
    """

    def __init__(self, observations, vision):
        super().__init__()
        self.layout = [(spec.key, spec.kind, spec.size) for spec in observations]
        self.image_keys = [spec.key for spec in observations if spec.kind == "image"]
        self.low_dim_keys = [spec.key for spec in observations if spec.kind == "low_dim"]
        shapes = [tuple(spec.shape) for spec in observations if spec.kind == "image"]
        count = 1 if vision.shared_encoder else len(shapes)
        self.encoders = nn.ModuleList(RgbEncoder(vision, shapes[i]) for i in range(count))
        channels = shapes[0][0]
        self.register_buffer("image_scale", torch.ones(len(shapes), channels))
        self.register_buffer("image_offset", torch.zeros(len(shapes), channels))

    def encode_images(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per camera (B, T, C, H, W) -> (B, T, feature_dim)."""
        features = []
        for index, image in enumerate(images):
            batch, steps = image.shape[:2]
            flat = image.reshape(batch * steps, *image.shape[2:])
            flat = flat * self.image_scale[index][:, None, None] + self.image_offset[index][:, None, None]
            encoder = self.encoders[0 if len(self.encoders) == 1 else index]
            features.append(encoder(flat).reshape(batch, steps, -1))
        return features

    def forward(self, images: dict[str, torch.Tensor], low_dim: torch.Tensor) -> torch.Tensor:
        """images {key: (B, T, C, H, W)}, low_dim (B, T, obs_dim) normalised in low_dim_keys order -> (B, T * D)."""
        image_features = dict(zip(self.image_keys, self.encode_images([images[k] for k in self.image_keys])))
        parts, start = [], 0
        for key, kind, size in self.layout:
            if kind == "image":
                parts.append(image_features[key])
            else:
                parts.append(low_dim[..., start:start + size])
                start += size
        condition = torch.cat(parts, dim=-1)
        return condition.reshape(condition.shape[0], -1)
