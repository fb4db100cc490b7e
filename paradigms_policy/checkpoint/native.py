"""The native format: a directory with `config.json` and `model.safetensors`.

`config.json` is {"format": "paradigms_policy", "format_version": 1, "policy": <PolicyConfig>,
"normalizer": {"obs": {"scale", "offset"}, "action": {...}}, "metadata": {...}}; the weights are the
U-Net's state dict under Diffusion Policy's names without the `model.` prefix; an image policy adds
its observation encoder's (`vision.ObservationEncoder`) under `obs_encoder.`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import ConfigError, PolicyConfig, show
from ..normalizer import AffineNormalizer
from .errors import (CONFIG_FILE, WEIGHTS_FILE, CheckpointError, PolicyWeights, invalid_config, read_json,
                     read_safetensors)
from .image_encoders import check_encoder_weights
from .weights import check_weights

NATIVE_FORMAT = "paradigms_policy"
NATIVE_FORMAT_VERSION = 1
ENCODER_PREFIX = "obs_encoder."


def save_policy(directory: str | os.PathLike, config: PolicyConfig, model: torch.nn.Module,
                obs_normalizer: AffineNormalizer, action_normalizer: AffineNormalizer,
                metadata: dict[str, Any] | None = None, encoder: torch.nn.Module | None = None) -> Path:
    """Write a native checkpoint. The directory is replaced only once both files are complete."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": NATIVE_FORMAT,
        "format_version": NATIVE_FORMAT_VERSION,
        "policy": config.to_dict(),
        "normalizer": {"obs": obs_normalizer.to_dict(), "action": action_normalizer.to_dict()},
        "metadata": metadata or {},
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {name: tensor.detach().float().cpu().contiguous() for name, tensor in model.state_dict().items()}
        if encoder is not None:
            state.update({ENCODER_PREFIX + name: tensor.detach().float().cpu().contiguous()
                          for name, tensor in encoder.state_dict().items()})
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": NATIVE_FORMAT})
        (staging / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
        # mkdtemp makes a private directory; a checkpoint gets the usual permissions (it may be installed).
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            (staging / name).chmod(0o666 & ~umask)
        if directory.exists():
            retired = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            directory.rename(retired)
            staging.rename(directory)
            shutil.rmtree(retired)
        else:
            staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def read_native(directory: Path) -> PolicyWeights:
    """`PolicyWeights` from a native directory: the configuration and normaliser from config.json, the U-Net
    from model.safetensors, checked against each other."""
    config_path = directory / CONFIG_FILE
    document = read_json(config_path)
    version = document.get("format_version")
    if version != NATIVE_FORMAT_VERSION:
        raise CheckpointError(config_path, f"unsupported format_version {show(version)} (this package reads "
                                           f"{NATIVE_FORMAT_VERSION})")
    try:
        config = PolicyConfig.from_dict(document.get("policy"))
    except ConfigError as err:
        raise invalid_config(config_path, err, _native_name) from None
    try:
        normalizers = document["normalizer"]
        obs_normalizer = AffineNormalizer.from_dict(normalizers["obs"])
        action_normalizer = AffineNormalizer.from_dict(normalizers["action"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(config_path, f"invalid normalizer entry ({type(err).__name__}: "
                                           f"{str(err)[:200]})") from None
    state = read_safetensors(directory / WEIGHTS_FILE)
    encoder_state = {name[len(ENCODER_PREFIX):]: state.pop(name)
                     for name in list(state) if name.startswith(ENCODER_PREFIX)}
    check_weights(directory, config.unet, state, _native_name)
    if config.image_keys or encoder_state:
        check_encoder_weights(directory, config, encoder_state)
    return PolicyWeights(config, state, obs_normalizer, action_normalizer, document.get("metadata", {}), encoder_state)


def _native_name(field: str) -> str:
    """Our field name as config.json's path to it."""
    return field if field.startswith("policy") else f"policy.{field}"
