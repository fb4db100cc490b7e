"""Loading a policy: recognise the checkpoint's format, read it, build the model.

Formats, recognised from the path:
- native (this package, `native.py`): a directory whose `config.json` says
  `"format": "paradigms_policy"`, with `model.safetensors`;
- an original Diffusion Policy workspace `.ckpt`, read without running pickled code
  (`diffusion_policy.py`, `dp_cfg.py`, `unpickler.py`; the hybrid image policy: `dp_image.py`);
- a LeRobot Diffusion Policy directory (`lerobot.py`).

Image policies also carry the observation encoder's weights (`image_encoders.py`), built into a
`vision.ObservationEncoder` that the policy runs when it builds the condition.

Every failure (missing or truncated file, unknown format, invalid setting, shape mismatch) is
raised as one `CheckpointError` naming the file and the problem, before the model is built.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..model import ConditionalUnet1D
from ..policy import DiffusionPolicy
from .diffusion_policy import read_dp_checkpoint
from .errors import CONFIG_FILE, CheckpointError, PolicyWeights, read_json
from .image_encoders import build_encoder
from .lerobot import read_lerobot_directory
from .native import NATIVE_FORMAT, read_native
from .weights import check_weights


def detect_format(path: str | os.PathLike) -> str:
    """'native', 'diffusion_policy' or 'lerobot'; a CheckpointError for anything else."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if path.is_file():
        if path.suffix == ".ckpt" or _is_zip(path):
            return "diffusion_policy"
        raise CheckpointError(path, "unknown checkpoint format (expected a directory or a Diffusion Policy .ckpt)")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(path, f"unknown checkpoint format: the directory has no {CONFIG_FILE}")
    config = read_json(config_path)
    if config.get("format") == NATIVE_FORMAT:
        return "native"
    if config.get("type") == "diffusion" or "input_features" in config or "input_shapes" in config:
        return "lerobot"
    raise CheckpointError(config_path, "unknown checkpoint format: neither a paradigms_policy nor a LeRobot diffusion config")


def read_weights(path: str | os.PathLike) -> PolicyWeights:
    """Read any supported checkpoint into `PolicyWeights` (no model is built)."""
    kind = detect_format(path)
    readers = {"native": read_native, "diffusion_policy": read_dp_checkpoint, "lerobot": read_lerobot_directory}
    return readers[kind](Path(path))


def build_model(weights: PolicyWeights, source: str | os.PathLike) -> ConditionalUnet1D:
    """The U-Net with the checkpoint's weights, built only once `check_weights` has matched every name and
    shape with the configuration (so it is the size of the stored weights)."""
    check_weights(source, weights.config.unet, weights.unet_state_dict)
    model = ConditionalUnet1D.from_config(weights.config.unet)
    model.load_state_dict({name: tensor.float() for name, tensor in weights.unet_state_dict.items()})
    return model


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu", sampler: str = "sequential",
                sampler_options: dict[str, Any] | None = None):
    """A ready `DiffusionPolicy` from a native directory, a Diffusion Policy .ckpt or a LeRobot directory."""
    weights = read_weights(path)
    model = build_model(weights, path)
    encoder = build_encoder(weights.config, weights.encoder_state_dict, path) if weights.config.image_keys else None
    policy = DiffusionPolicy(weights.config, model, weights.obs_normalizer, weights.action_normalizer,
                             device=device, sampler=sampler, sampler_options=sampler_options)
    if encoder is not None:
        policy.set_observation_encoder(encoder)
    return policy


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"
