"""Training a Diffusion Policy on the Push-T demonstrations: low-dim (keypoints) or image (frames).

Objective (DDPM, epsilon prediction): for a demonstration window with normalised actions a and
observation condition c, draw t ~ U{0..T-1} and noise e ~ N(0, I), and minimise
|| eps(scheduler.add_noise(a, e, t), t, c) - e ||^2, add_noise being sqrt(abar_t) a + sqrt(1 - abar_t) e.
The low-dim condition is the normalised, flattened observation window; the image condition is the
observation encoder's output (`vision.ObservationEncoder`, trained jointly with the U-Net) for the
window's frames, each randomly cropped to `crop_size` (the policy centre-crops at evaluation), and
its normalised agent positions.

Recipe as Diffusion Policy: AdamW (lr 1e-4, betas 0.95/0.999, weight decay 1e-6), cosine schedule
with 500 warm-up steps, EMA of the weights (power 0.75, max decay 0.9999), batch 256. Checkpoints
(EMA weights, native format) are written every `checkpoint_every` steps, together with a resume
state (model, EMA, optimiser, schedule, step, random state) so an interrupted run continues where it
stopped. Under `torchrun` every process trains on its own batches and gradients are averaged by
DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0 writes.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from ..checkpoint import save_policy
from ..config import ObservationSpec, PolicyConfig, SchedulerConfig, VisionConfig
from ..model import ConditionalUnet1D
from ..normalizer import AffineNormalizer
from ..policy import resolve_device
from ..schedulers import make_scheduler
from ..vision import ObservationEncoder

OBSERVATIONS = ("low_dim", "image")
# Frames are fed in [0, 1] and mapped to [-1, 1] by the encoder, as Diffusion Policy normalises images.
IMAGE_SCALE, IMAGE_OFFSET = 2.0, -1.0

RESUME_FILE = "train_state.pt"


@dataclass
class TrainConfig:
    zarr_path: str
    output_dir: str
    steps: int = 30000
    batch_size: int = 256
    learning_rate: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    checkpoint_every: int = 5000
    log_every: int = 50
    keep_checkpoints: bool = True
    seed: int = 0
    device: str = "auto"
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    down_dims: tuple[int, ...] = (64, 128, 256)
    diffusion_step_embed_dim: int = 128
    kernel_size: int = 5
    n_groups: int = 8
    episodes: list[int] | None = field(default=None)
    observation: str = "low_dim"  # or "image": frames + agent position, with the encoder below
    vision_width: int = 16  # ResNet-18's conv1 channels (64 in the originals)
    vision_feature_dim: int = 64
    vision_keypoints: int = 32
    crop_size: int = 84


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train (or continue training) and return the directory of the final checkpoint."""
    if config.observation not in OBSERVATIONS:
        raise ValueError(f"observation must be one of {', '.join(OBSERVATIONS)} (got {config.observation!r})")
    rank, world_size = _init_distributed()
    device = _device_for_rank(config.device, world_size)
    output = Path(config.output_dir)
    dataset = _dataset(config, progress and rank == 0)
    normalizers = _normalizers(dataset.statistics())
    policy_config = _policy_config(config, normalizers[0].dim, normalizers[1].dim)
    torch.manual_seed(config.seed)
    state = _Optimisation.create(config, policy_config, device)
    step = state.restore(output / RESUME_FILE, config.seed) if resume else 0
    # A resumed run draws its batches from a stream of its own, seeded with the step it resumed at.
    generator = np.random.default_rng([config.seed + rank, step] if step else config.seed + rank)
    trainer = torch.nn.parallel.DistributedDataParallel(state.model) if world_size > 1 else state.model
    noise_scheduler = make_scheduler(policy_config.scheduler)
    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    metadata = {"train_config": asdict(config), "world_size": world_size, "device": str(device),
                "torch": torch.__version__}
    bar = tqdm(total=config.steps, initial=step, desc="train", unit="step", disable=not progress or rank != 0,
               dynamic_ncols=True)
    started = time.time()
    while step < config.steps:
        batch = dataset.batch(generator.integers(0, len(dataset), size=config.batch_size))
        loss = diffusion_loss(trainer, noise_scheduler, normalizers, _observations(batch, config, generator, device),
                              batch["action"].to(device))
        state.step(loss)
        step += 1
        bar.update(1)
        if rank == 0 and (step % config.log_every == 0 or step == config.steps):
            bar.set_postfix(loss=f"{loss.item():.4f}")
            _append_log(output / "train_log.jsonl", step, loss.item(), state.lr_schedule.get_last_lr()[0], started)
        if rank == 0 and (step % config.checkpoint_every == 0 or step == config.steps):
            state.save(output, step, policy_config, normalizers, {"trained_steps": step, **metadata},
                       config.keep_checkpoints)
    bar.close()
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return output / "final"


def diffusion_loss(denoiser, noise_scheduler, normalizers: tuple[AffineNormalizer, AffineNormalizer],
                   obs, actions: torch.Tensor) -> torch.Tensor:
    """The epsilon-prediction loss of a batch of raw observation windows and action windows (B, horizon,
    action_dim): noise then timesteps are drawn from torch's global generator.

    obs is (B, n_obs_steps, obs_dim), or for an image policy (frames (B, n_obs_steps, C, h, w) in [0, 1],
    low-dim (B, n_obs_steps, obs_dim)); the denoiser is called (noisy, timesteps, condition) with the
    normalised, flattened window, or with (frames, normalised low-dim) for its encoder."""
    obs_normalizer, action_normalizer = normalizers
    clean = action_normalizer.normalize(actions)
    noise = torch.randn_like(clean)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    if isinstance(obs, tuple):
        condition = (obs[0], obs_normalizer.normalize(obs[1]))
    else:
        condition = obs_normalizer.normalize(obs).flatten(1)
    return F.mse_loss(denoiser(noisy, timesteps, condition), noise)


class Networks(torch.nn.Module):
    """What a training step runs: the U-Net (`model.`) and, for an image policy, its observation encoder
    (`obs_encoder.`), called as one module so that DistributedDataParallel and the EMA see both."""

    def __init__(self, policy_config: PolicyConfig):
        super().__init__()
        self.model = ConditionalUnet1D.from_config(policy_config.unet)
        self.obs_encoder = None
        if policy_config.image_keys:
            self.obs_encoder = ObservationEncoder(policy_config.observations, policy_config.vision)
            self.obs_encoder.image_scale.fill_(IMAGE_SCALE)
            self.obs_encoder.image_offset.fill_(IMAGE_OFFSET)
        self.image_key = policy_config.image_keys[0] if policy_config.image_keys else None

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition) -> torch.Tensor:
        if self.obs_encoder is not None:
            frames, low_dim = condition
            condition = self.obs_encoder({self.image_key: frames}, low_dim)
        return self.model(noisy, timesteps, condition)


def _dataset(config: TrainConfig, progress: bool):
    from ..pusht.dataset import PushTLowdimDataset
    from ..pusht.image_dataset import PushTImageDataset

    if config.observation == "image":
        return PushTImageDataset(config.zarr_path, config.horizon, config.n_obs_steps, config.n_action_steps,
                                 episodes=config.episodes, progress=progress)
    return PushTLowdimDataset(config.zarr_path, config.horizon, config.n_obs_steps, config.n_action_steps,
                              episodes=config.episodes)


def _observations(batch: dict, config: TrainConfig, generator: np.random.Generator, device: torch.device):
    """The batch's observation windows as diffusion_loss takes them (frames randomly cropped, in [0, 1])."""
    if config.observation != "image":
        return batch["obs"][:, : config.n_obs_steps].to(device)
    from ..pusht.image_dataset import AGENT_POS_KEY, IMAGE_KEY

    frames = random_crop(batch[IMAGE_KEY], config.crop_size, generator)
    return frames.to(device).float().div_(255.0), batch[AGENT_POS_KEY][:, : config.n_obs_steps].to(device)


def random_crop(frames: torch.Tensor, size: int, generator: np.random.Generator) -> torch.Tensor:
    """A size x size crop of every frame (..., C, H, W) at its own uniformly drawn offset."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    tops = generator.integers(0, flat.shape[-2] - size + 1, size=len(flat))
    lefts = generator.integers(0, flat.shape[-1] - size + 1, size=len(flat))
    crops = torch.stack([image[:, top:top + size, left:left + size] for image, top, left in zip(flat, tops, lefts)])
    return crops.reshape(*frames.shape[:-2], size, size)


def _normalizers(statistics: dict) -> tuple[AffineNormalizer, AffineNormalizer]:
    """(observation, action) normalisers from the dataset's per-dimension min/max."""
    return tuple(AffineNormalizer.from_min_max(statistics[key]["min"], statistics[key]["max"])
                 for key in ("obs", "action"))


def _policy_config(config: TrainConfig, obs_dim: int, action_dim: int) -> PolicyConfig:
    unet = dict(down_dims=config.down_dims, diffusion_step_embed_dim=config.diffusion_step_embed_dim,
                kernel_size=config.kernel_size, n_groups=config.n_groups)
    low_dim = PolicyConfig.for_shapes(obs_dim, action_dim, config.horizon, config.n_obs_steps, config.n_action_steps,
                                      scheduler=SchedulerConfig(), **unet)
    if config.observation != "image":
        return low_dim
    from ..pusht.image_dataset import AGENT_POS_KEY, IMAGE_KEY, IMAGE_SHAPE

    vision = VisionConfig(width=config.vision_width, feature_dim=config.vision_feature_dim,
                          num_keypoints=config.vision_keypoints, crop_shape=(config.crop_size, config.crop_size))
    observations = (ObservationSpec(IMAGE_KEY, IMAGE_SHAPE, "image"), ObservationSpec(AGENT_POS_KEY, (obs_dim,)))
    condition = (obs_dim + vision.feature_dim) * config.n_obs_steps
    return replace(low_dim, unet=replace(low_dim.unet, global_cond_dim=condition), observations=observations,
                   vision=vision)


@dataclass
class _Optimisation:
    """The model, the EMA of its weights, the optimiser and the learning-rate schedule of a run."""

    model: Networks
    ema: EMAModel
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def create(cls, config: TrainConfig, policy_config: PolicyConfig, device: torch.device) -> "_Optimisation":
        model = Networks(policy_config).to(device)
        ema = EMAModel(model.parameters(), decay=config.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0,
                       power=config.ema_power)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.95, 0.999),
                                      weight_decay=config.weight_decay)
        return cls(model, ema, optimizer, get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps))

    def restore(self, path: Path, seed: int) -> int:
        """Load the resume state at `path` if there is one and reseed torch for its step; returns the step (or 0)."""
        step = 0
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_schedule.load_state_dict(state["lr_schedule"])
            step = int(state["step"])
            torch.manual_seed(seed * 1000003 + step)
        self.ema.to(next(self.model.parameters()).device)
        return step

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.lr_schedule.step()
        self.ema.step(self.model.parameters())

    def save(self, output: Path, step: int, policy_config: PolicyConfig, normalizers, metadata: dict,
             keep_checkpoint: bool) -> None:
        """The EMA weights as the final (and, if kept, a numbered) checkpoint, then the resume state."""
        ema_model = Networks(policy_config)
        ema_model.load_state_dict(self.model.state_dict())
        self.ema.copy_to(ema_model.parameters())
        weights = (ema_model.model, *normalizers, metadata, ema_model.obs_encoder)
        if keep_checkpoint:
            save_policy(output / "checkpoints" / f"step_{step:07d}", policy_config, *weights)
        save_policy(output / "final", policy_config, *weights)
        # Written to a temporary file and moved into place, so a crash leaves the old one.
        staging = (output / RESUME_FILE).with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict(),
                    "step": step}, staging)
        os.replace(staging, output / RESUME_FILE)


def _append_log(path: Path, step: int, loss: float, learning_rate: float, started: float) -> None:
    with open(path, "a") as log:
        log.write(json.dumps({"step": step, "loss": loss, "lr": learning_rate,
                              "elapsed_s": round(time.time() - started, 1)}) + "\n")


def _init_distributed() -> tuple[int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world_size) if world_size > 1 else (0, 1)


def _device_for_rank(device: str, world_size: int) -> torch.device:
    resolved = resolve_device(device)
    if resolved.type == "cuda" and world_size > 1:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    return resolved
