"""Shared fixtures: small randomly initialised models keep the suite fast on a 2-core CPU.

Tests take these as fixtures. The plain functions below stay importable (`from conftest import
small_model`) for the test files that still call them directly.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from paradigms_policy.config import PolicyConfig, SchedulerConfig
from paradigms_policy.model import ConditionalUnet1D
from paradigms_policy.normalizer import AffineNormalizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first bytes of every PNG file


def wait_for(condition, timeout: float = 5.0) -> bool:
    """Poll `condition` every 10 ms until it holds or `timeout` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_UNET = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, kernel_size=5, n_groups=8)
STANDARD_SCHEDULERS = ("ddpm100", "ddpm15-trailing", "ddim15")


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
    return dict(zip(STANDARD_SCHEDULERS, (ddpm, coarse_ddpm, ddim)))


@dataclass
class SamplingProblem:
    """A small model, a batch of encoded conditions and the initial noise x_T (B, 16, 2)."""

    model: ConditionalUnet1D
    observation: torch.Tensor  # the raw condition (B, 40)
    condition: object  # the model's encoded condition
    noise: torch.Tensor

    def run(self, sampler, scheduler, seed: int = 1, denoiser=None, **options):
        """`sampler` on this problem with the step noise drawn from a generator seeded `seed`."""
        return sampler(denoiser or self.model.denoise, scheduler, self.noise, self.condition,
                       generator=torch.Generator().manual_seed(seed), **options)

    def sequential_trajectory(self, scheduler, seed: int = 1) -> torch.Tensor:
        """x_T .. x_0 (T+1, B, 16, 2) of the plain diffusers loop with the step noise seeded `seed`."""
        generator = torch.Generator().manual_seed(seed)
        states = [self.noise]
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = self.model.denoise(states[-1], t, self.condition)
                states.append(scheduler.step(eps, t, states[-1], generator=generator).prev_sample)
        return torch.stack(states)


def sampling_problem(seed: int = 0, batch: int = 2) -> SamplingProblem:
    model = small_model(seed)
    torch.manual_seed(seed + 100)
    observation = torch.randn(batch, 40)
    return SamplingProblem(model, observation, model.encode_condition(observation), torch.randn(batch, 16, 2))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def policy_config() -> PolicyConfig:
    """The small U-Net's policy configuration (obs dim 20, action dim 2, DDPM-100)."""
    return small_config()


@pytest.fixture
def model(policy_config) -> ConditionalUnet1D:
    """The small U-Net of `policy_config`, seed 0."""
    return small_model(config=policy_config)


@pytest.fixture
def normalizers() -> tuple[AffineNormalizer, AffineNormalizer]:
    return pixel_normalizers()


@pytest.fixture
def schedulers() -> dict:
    """Every standard scheduler by name (STANDARD_SCHEDULERS), timesteps set."""
    return standard_schedulers()


@pytest.fixture(params=STANDARD_SCHEDULERS)
def standard_scheduler(request):
    """Each standard scheduler in turn."""
    return standard_schedulers()[request.param]


@pytest.fixture
def make_problem():
    """The factory `sampling_problem(seed=0, batch=2)`."""
    return sampling_problem


@pytest.fixture
def problem() -> SamplingProblem:
    return sampling_problem()


@pytest.fixture(scope="session")
def pusht_zarr() -> Path:
    """The shared Push-T demonstrations, or a skip (see shared_zarr_path)."""
    return shared_zarr_path()


@pytest.fixture
def tiny_checkpoint(tmp_path, policy_config, model, normalizers) -> Path:
    """The small model saved as a checkpoint of the native format."""
    from paradigms_policy.checkpoint import save_policy

    return save_policy(tmp_path / "tiny", policy_config, model, *normalizers)
