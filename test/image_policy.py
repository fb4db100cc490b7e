"""Tiny randomly initialised image policies for the node and demo tests (`from image_policy import ...`).

Built as `paradigms-policy train --observation image` builds its policy (`commands/train.py`): the
cameras' ObservationSpecs, then the agent position (2 values), a narrow ResNet-18 encoder (width 16),
a small U-Net, frames mapped from [0, 1] to [-1, 1] by the encoder, pixel statistics for the rest.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from paradigms_policy.checkpoint import save_policy
from paradigms_policy.commands.train import Networks
from paradigms_policy.config import ObservationSpec, PolicyConfig, SchedulerConfig, VisionConfig
from paradigms_policy.normalizer import AffineNormalizer

PUSHT_CAMERA = (("image", (3, 96, 96)),)  # the Push-T image policy's one camera
LOW_DIM_KEY, LOW_DIM_SIZE = "agent_pos", 2
SMALL_UNET = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, kernel_size=5, n_groups=8)


def image_policy_config(cameras=PUSHT_CAMERA, crop_shape=(84, 84), scheduler: SchedulerConfig | None = None,
                        feature_dim: int = 16) -> PolicyConfig:
    """An image policy observing `cameras` ((key, (3, H, W)), ...) and the agent position, in that order."""
    vision = VisionConfig(width=16, feature_dim=feature_dim, num_keypoints=8, crop_shape=crop_shape)
    observations = tuple(ObservationSpec(key, shape, "image") for key, shape in cameras) + \
        (ObservationSpec(LOW_DIM_KEY, (LOW_DIM_SIZE,)),)
    low_dim = PolicyConfig.for_shapes(LOW_DIM_SIZE, 2, scheduler=scheduler or SchedulerConfig(), **SMALL_UNET)
    condition = (LOW_DIM_SIZE + len(cameras) * feature_dim) * low_dim.n_obs_steps
    return replace(low_dim, unet=replace(low_dim.unet, global_cond_dim=condition), observations=observations,
                   vision=vision)


def image_policy_normalizers() -> tuple[AffineNormalizer, AffineNormalizer]:
    """Push-T pixel statistics: the agent position and the actions in [0, 512]."""
    return (AffineNormalizer.from_min_max(np.zeros(LOW_DIM_SIZE), np.full(LOW_DIM_SIZE, 512.0)),
            AffineNormalizer.from_min_max(np.zeros(2), np.full(2, 512.0)))


def save_image_policy(directory: str | Path, config: PolicyConfig | None = None, seed: int = 0) -> Path:
    """A random image policy of `config` (default: Push-T's camera), weights seeded `seed`, saved natively."""
    config = config or image_policy_config()
    torch.manual_seed(seed)
    networks = Networks(config)
    return save_policy(directory, config, networks.model, *image_policy_normalizers(), {"test": "random image policy"},
                       networks.obs_encoder)
