"""The U-Net's stored weights against its configuration, before anything is built.

Every format stores ConditionalUnet1D's state dict under Diffusion Policy's names (LeRobot's after
renaming). `infer_unet` reads the constructor options off the weight shapes; `check_weights`
refuses a configuration that disagrees with them, then compares every name and shape with the
configured U-Net built on the meta device (no memory), so that the model built afterwards holds
exactly as many parameters as the file stores.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from ..config import UnetConfig, show
from ..model import ConditionalUnet1D
from .errors import CheckpointError


def infer_unet(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """UnetConfig options read off the weight shapes (all but n_groups, which shapes do not reveal), or None
    where the weights lack ConditionalUnet1D's layout."""

    def shape(key: str, dims: int) -> tuple[int, ...] | None:
        tensor = state.get(key)
        return tuple(tensor.shape) if isinstance(tensor, torch.Tensor) and tensor.dim() == dims else None

    step = shape("diffusion_step_encoder.3.weight", 2)
    film = shape("down_modules.0.0.cond_encoder.1.weight", 2)
    levels = []
    while (conv := shape(f"down_modules.{len(levels)}.0.blocks.0.block.0.weight", 3)) is not None:
        levels.append(conv)
    if step is None or film is None or not levels:
        return None
    down_dims = tuple(level[0] for level in levels)
    return dict(input_dim=levels[0][1], diffusion_step_embed_dim=step[0], down_dims=down_dims,
                kernel_size=levels[0][2], global_cond_dim=film[1] - step[0],
                cond_predict_scale=film[0] == 2 * down_dims[0])


def check_weights(source: str | os.PathLike, unet: UnetConfig, state: dict[str, torch.Tensor],
                  rename: Callable[[str], str] = str) -> None:
    """A CheckpointError unless `state` holds floating-point tensors with exactly the names and shapes of
    ConditionalUnet1D(unet). `rename` gives our field names (unet.down_dims) as the file names them."""
    inferred = infer_unet(state)
    for name, value in (inferred or {}).items():
        if getattr(unet, name) != value:
            raise CheckpointError(source, f"{rename('unet.' + name)} is {show(getattr(unet, name))} but the weights "
                                          f"have {show(value)}")
    with torch.device("meta"):
        meta_model = ConditionalUnet1D.from_config(unet)
    check_state(source, state, {name: tuple(t.shape) for name, t in meta_model.state_dict().items()}, "U-Net")


def check_state(source: str | os.PathLike, state: dict[str, torch.Tensor], expected: dict[str, tuple],
                module: str) -> None:
    """A CheckpointError unless `state` holds floating-point tensors with exactly the `expected` names and shapes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing (first: {missing[0]})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {show(unexpected[0])})")
        raise CheckpointError(source, f"weights do not fit the configured {module}: " + "; ".join(parts)
                              + " parameter(s)")
    for name, tensor in state.items():
        if not tensor.dtype.is_floating_point:
            raise CheckpointError(source, f"{name} holds {tensor.dtype} values; expected floating-point weights")
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(source, f"shape mismatch for {module} weight {name}: checkpoint "
                                          f"{tuple(tensor.shape)}, config expects {expected[name]}")
