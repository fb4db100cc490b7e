"""What every checkpoint reader shares: the one error type, the weights it reads into, file helpers."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..config import ConfigError, PolicyConfig
from ..normalizer import AffineNormalizer

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
    # vision.ObservationEncoder's state dict (image policies; empty for low-dim ones)
    encoder_state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def invalid_config(path: Path, err: ConfigError, rename: Callable[[str], str]) -> CheckpointError:
    """A CheckpointError for `err` whose field is named as the file names it (`rename`: our field -> that name)."""
    return CheckpointError(path, f"invalid configuration: {rename(err.field)} {err.problem}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (the format checks that they tile the file exactly), or a CheckpointError."""
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
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: bad JSON, or an int of > 4300 digits
        raise CheckpointError(path, f"cannot read JSON ({err})") from None
    except RecursionError:
        raise CheckpointError(path, "cannot read JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise CheckpointError(path, "expected a JSON object")
    return document
