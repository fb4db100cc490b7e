"""Checkpoint I/O: one entry point, `load_policy`, for every supported format.

Formats, recognised from the path:
- native (this package): a directory with `config.json` ({"format": "paradigms_policy", ...}:
  the `PolicyConfig`, the normaliser's scale/offset and free-form metadata) and
  `model.safetensors` (the U-Net's state dict, Diffusion Policy's key names without `model.`).
- an original Diffusion Policy workspace `.ckpt`, read with a restricted unpickler
  (`dp_checkpoint.py`).
- a LeRobot Diffusion Policy directory (`lerobot_checkpoint.py`).

Every failure (missing or truncated file, unknown format, shape mismatch) is raised as one
`CheckpointError` naming the file and the problem.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ConfigError, PolicyConfig
from .model import ConditionalUnet1D
from .normalizer import AffineNormalizer

NATIVE_FORMAT = "paradigms_policy"
NATIVE_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class PolicyWeights:
    """What every format is read into before the policy is built."""

    config: PolicyConfig
    unet_state_dict: dict[str, torch.Tensor]
    obs_normalizer: AffineNormalizer
    action_normalizer: AffineNormalizer
    metadata: dict[str, Any] = field(default_factory=dict)


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
    if kind == "native":
        return _read_native(Path(path))
    if kind == "diffusion_policy":
        from .dp_checkpoint import read_dp_checkpoint

        return read_dp_checkpoint(Path(path))
    from .lerobot_checkpoint import read_lerobot_directory

    return read_lerobot_directory(Path(path))


def build_model(weights: PolicyWeights, source: str | os.PathLike) -> ConditionalUnet1D:
    """The U-Net with the checkpoint's weights; key or shape mismatches become a CheckpointError."""
    model = ConditionalUnet1D.from_config(weights.config.unet)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights.unet_state_dict))
    unexpected = sorted(set(weights.unet_state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise CheckpointError(source, "weights do not fit the configured U-Net: " + "; ".join(parts) + " parameter(s)")
    for name, tensor in weights.unet_state_dict.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                source, f"shape mismatch for {name}: checkpoint {tuple(tensor.shape)}, config expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict({name: tensor.float() for name, tensor in weights.unet_state_dict.items()})
    return model


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu", sampler: str = "sequential",
                sampler_options: dict[str, Any] | None = None):
    """A ready `DiffusionPolicy` from a native directory, a Diffusion Policy .ckpt or a LeRobot directory."""
    from .policy import DiffusionPolicy

    weights = read_weights(path)
    model = build_model(weights, path)
    return DiffusionPolicy(weights.config, model, weights.obs_normalizer, weights.action_normalizer,
                           device=device, sampler=sampler, sampler_options=sampler_options)


def save_policy(directory: str | os.PathLike, config: PolicyConfig, model: torch.nn.Module,
                obs_normalizer: AffineNormalizer, action_normalizer: AffineNormalizer,
                metadata: dict[str, Any] | None = None) -> Path:
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


def _read_native(directory: Path) -> PolicyWeights:
    config_path = directory / CONFIG_FILE
    document = read_json(config_path)
    version = document.get("format_version")
    if version != NATIVE_FORMAT_VERSION:
        raise CheckpointError(config_path, f"unsupported format_version {version!r} (this package reads {NATIVE_FORMAT_VERSION})")
    try:
        config = PolicyConfig.from_dict(document["policy"])
        obs_normalizer = AffineNormalizer.from_dict(document["normalizer"]["obs"])
        action_normalizer = AffineNormalizer.from_dict(document["normalizer"]["action"])
    except KeyError as err:
        raise CheckpointError(config_path, f"missing entry {err}") from None
    except (ConfigError, ValueError, TypeError) as err:
        raise CheckpointError(config_path, f"invalid configuration: {err}") from None
    return PolicyWeights(config, read_safetensors(directory / WEIGHTS_FILE), obs_normalizer, action_normalizer,
                         document.get("metadata", {}))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "weights file is missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors reports truncation and corruption with several exception types
        raise CheckpointError(path, f"cannot read safetensors weights ({err}); the file may be truncated or corrupt") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(path, "file is missing")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, f"cannot read JSON ({err})") from None
    if not isinstance(document, dict):
        raise CheckpointError(path, "expected a JSON object")
    return document


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"
