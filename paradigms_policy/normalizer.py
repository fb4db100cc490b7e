"""Per-dimension min/max normalisation to [-1, 1], as Diffusion Policy's LinearNormalizer.

normalise(x) = x * scale + offset with scale = 2 / (max - min) and offset = -1 - scale * min.
A dimension whose range is below `RANGE_EPS` (a constant in the data) is mapped to 0 by
scale = 1, offset = -min instead of dividing by ~0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RANGE_EPS = 1e-4


@dataclass
class AffineNormalizer:
    """x -> x * scale + offset per dimension; unnormalise inverts it."""

    scale: torch.Tensor
    offset: torch.Tensor

    def __post_init__(self):
        self.scale = torch.as_tensor(self.scale, dtype=torch.float32).flatten()
        self.offset = torch.as_tensor(self.offset, dtype=torch.float32).flatten()
        if self.scale.shape != self.offset.shape:
            raise ValueError(f"normaliser scale {tuple(self.scale.shape)} and offset {tuple(self.offset.shape)} differ in shape")
        if not (torch.isfinite(self.scale).all() and torch.isfinite(self.offset).all()) or (self.scale == 0).any():
            raise ValueError("normaliser statistics must be finite with a non-zero scale")

    @property
    def dim(self) -> int:
        return self.scale.numel()

    @classmethod
    def from_min_max(cls, minimum, maximum) -> "AffineNormalizer":
        minimum = torch.as_tensor(np.asarray(minimum), dtype=torch.float32).flatten()
        maximum = torch.as_tensor(np.asarray(maximum), dtype=torch.float32).flatten()
        span = maximum - minimum
        constant = span < RANGE_EPS
        scale = torch.where(constant, torch.ones_like(span), 2.0 / torch.where(constant, torch.ones_like(span), span))
        offset = torch.where(constant, -minimum, -1.0 - scale * minimum)
        return cls(scale, offset)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.device, x.dtype) + self.offset.to(x.device, x.dtype)

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.offset.to(y.device, y.dtype)) / self.scale.to(y.device, y.dtype)

    def to_dict(self) -> dict[str, list[float]]:
        return {"scale": self.scale.tolist(), "offset": self.offset.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "AffineNormalizer":
        if "scale" in data and "offset" in data:
            return cls(data["scale"], data["offset"])
        if "min" in data and "max" in data:
            return cls.from_min_max(data["min"], data["max"])
        raise ValueError("normaliser entry needs 'scale' and 'offset' (or 'min' and 'max')")
