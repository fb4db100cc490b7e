"""Training a low-dim Diffusion Policy on the Push-T demonstrations.

Objective (DDPM, epsilon prediction): for a demonstration window with normalised actions a and
observation condition c, draw t ~ U{0..T-1} and noise e ~ N(0, I), and minimise
|| eps(sqrt(abar_t) a + sqrt(1 - abar_t) e, t, c) - e ||^2.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from ..checkpoint import save_policy
from ..config import PolicyConfig, SchedulerConfig
from ..model import ConditionalUnet1D
from ..normalizer import AffineNormalizer
from ..policy import resolve_device
from ..schedulers import make_scheduler

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


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train (or continue training) and return the directory of the final checkpoint."""
    from ..pusht.dataset import PushTLowdimDataset

    rank, world_size = _init_distributed()
    device = _device_for_rank(config.device, world_size)
    output = Path(config.output_dir)
    dataset = PushTLowdimDataset(config.zarr_path, config.horizon, config.n_obs_steps, config.n_action_steps,
                                 episodes=config.episodes)
    statistics = dataset.statistics()
    obs_normalizer = AffineNormalizer.from_min_max(statistics["obs"]["min"], statistics["obs"]["max"])
    action_normalizer = AffineNormalizer.from_min_max(statistics["action"]["min"], statistics["action"]["max"])
    obs_dim = obs_normalizer.dim
    policy_config = PolicyConfig.for_shapes(
        obs_dim, action_normalizer.dim, config.horizon, config.n_obs_steps, config.n_action_steps,
        scheduler=SchedulerConfig(), down_dims=config.down_dims,
        diffusion_step_embed_dim=config.diffusion_step_embed_dim, kernel_size=config.kernel_size,
        n_groups=config.n_groups,
    )

    torch.manual_seed(config.seed)
    model = ConditionalUnet1D.from_config(policy_config.unet).to(device)
    ema = EMAModel(model.parameters(), decay=config.ema_max_decay, use_ema_warmup=True, inv_gamma=1.0,
                   power=config.ema_power)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.95, 0.999),
                                  weight_decay=config.weight_decay)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    step = 0
    generator = np.random.default_rng(config.seed + rank)
    resume_path = output / RESUME_FILE
    if resume and resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        step = int(state["step"])
        generator = np.random.default_rng([config.seed + rank, step])
        torch.manual_seed(config.seed * 1000003 + step)
    ema.to(device)

    trainer = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    noise_scheduler = make_scheduler(policy_config.scheduler)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    obs_scale, obs_offset = obs_normalizer.scale.to(device), obs_normalizer.offset.to(device)
    act_scale, act_offset = action_normalizer.scale.to(device), action_normalizer.offset.to(device)

    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    log_path = output / "train_log.jsonl"
    bar = tqdm(total=config.steps, initial=step, desc="train", unit="step", disable=not progress or rank != 0,
               dynamic_ncols=True)
    started = time.time()
    final = output / "final"
    while step < config.steps:
        indices = generator.integers(0, len(dataset), size=config.batch_size)
        batch = dataset.batch(indices)
        obs = batch["obs"][:, : config.n_obs_steps].to(device) * obs_scale + obs_offset
        actions = batch["action"].to(device) * act_scale + act_offset
        noise = torch.randn_like(actions)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (actions.shape[0],), device=device)
        abar = alphas_cumprod[timesteps][:, None, None]
        noisy = abar.sqrt() * actions + (1 - abar).sqrt() * noise
        loss = F.mse_loss(trainer(noisy, timesteps, obs.reshape(obs.shape[0], -1)), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        ema.step(model.parameters())
        step += 1
        bar.update(1)
        if rank == 0 and (step % config.log_every == 0 or step == config.steps):
            bar.set_postfix(loss=f"{loss.item():.4f}")
            with open(log_path, "a") as log:
                log.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr_schedule.get_last_lr()[0],
                                      "elapsed_s": round(time.time() - started, 1)}) + "\n")
        if rank == 0 and (step % config.checkpoint_every == 0 or step == config.steps):
            metadata = {"trained_steps": step, "train_config": asdict(config), "world_size": world_size,
                        "device": str(device), "torch": torch.__version__}
            ema_model = _ema_copy(model, ema)
            if config.keep_checkpoints:
                save_policy(output / "checkpoints" / f"step_{step:07d}", policy_config, ema_model, obs_normalizer,
                            action_normalizer, metadata)
            save_policy(final, policy_config, ema_model, obs_normalizer, action_normalizer, metadata)
            _save_resume_state(resume_path, model, ema, optimizer, lr_schedule, step)
    bar.close()
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _ema_copy(model: torch.nn.Module, ema: EMAModel) -> ConditionalUnet1D:
    copy = ConditionalUnet1D.from_config(model.config)
    copy.load_state_dict(model.state_dict())
    ema.copy_to(copy.parameters())
    return copy


def _save_resume_state(path: Path, model, ema, optimizer, lr_schedule, step: int) -> None:
    """Write the resume state to a temporary file and move it into place, so a crash leaves the old one."""
    staging = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_schedule": lr_schedule.state_dict(), "step": step}, staging)
    os.replace(staging, path)


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
