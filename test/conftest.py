"""Shared fixtures: small randomly initialised models keep the suite fast on a 2-core CPU."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from paradigms_policy.config import PolicyConfig, SchedulerConfig
from paradigms_policy.model import ConditionalUnet1D
from paradigms_policy.normalizer import AffineNormalizer

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_UNET = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, kernel_size=5, n_groups=8)


def small_config(scheduler: SchedulerConfig | None = None) -> PolicyConfig:
    return PolicyConfig.for_shapes(20, 2, scheduler=scheduler, **SMALL_UNET)


def small_model(seed: int = 0, config: PolicyConfig | None = None) -> ConditionalUnet1D:
    torch.manual_seed(seed)
    return ConditionalUnet1D.from_config((config or small_config()).unet).eval()


def pixel_normalizers() -> tuple[AffineNormalizer, AffineNormalizer]:
    """Push-T-like statistics: every coordinate in [0, 512] pixels."""
    return (AffineNormalizer.from_min_max(np.zeros(20), np.full(20, 512.0)),
            AffineNormalizer.from_min_max(np.zeros(2), np.full(2, 512.0)))


def shared_zarr_path() -> Path:
    """The shared Push-T demonstrations ($PUSHT_ZARR or beside the repository), or a skip."""
    path = Path(os.environ.get("PUSHT_ZARR", REPO_ROOT.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"))
    if not path.exists():
        pytest.skip(f"Push-T data not found at {path} (set PUSHT_ZARR to its location)")
    return path


@pytest.fixture
def pusht_zarr() -> Path:
    return shared_zarr_path()


def standard_schedulers() -> dict:
    """DDPM as Diffusion Policy uses it, DDPM with a coarse offset spacing (the public batched step's
    fixed-stride defect) and DDIM without alpha=1 at the end (the public final-alpha defect)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from paradigms_policy.schedulers import make_scheduler

    ddpm = make_scheduler(SchedulerConfig())
    coarse_ddpm = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", steps_offset=1,
                                timestep_spacing="trailing")
    coarse_ddpm.set_timesteps(15)
    ddim = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", set_alpha_to_one=False)
    ddim.set_timesteps(15)
    return {"ddpm100": ddpm, "ddpm15-trailing": coarse_ddpm, "ddim15": ddim}
