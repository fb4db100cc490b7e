"""Training: the objective, the loss falls, checkpoints load, resume continues, torchrun with gloo works."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from paradigms_policy.checkpoint import load_policy
from paradigms_policy.commands.train import TrainConfig, diffusion_loss, random_crop, train
from paradigms_policy.schedulers import make_scheduler

TINY = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, batch_size=32, episodes=list(range(6)))


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_the_loss_is_epsilon_prediction_on_the_schedulers_forward_process(policy_config, normalizers):
    """The denoiser sees scheduler.add_noise(normalised actions, e, t), t and the normalised, flattened
    observation window, and is scored against e; e then t are drawn from torch's global generator."""
    obs_normalizer, action_normalizer = normalizers
    scheduler = make_scheduler(policy_config.scheduler)
    obs, actions = 512 * torch.rand(4, 2, 20), 512 * torch.rand(4, 16, 2)
    prediction = torch.randn(4, 16, 2)
    seen = []

    def denoiser(noisy, timesteps, condition):
        seen.append((noisy, timesteps, condition))
        return prediction

    torch.manual_seed(7)
    loss = diffusion_loss(denoiser, scheduler, normalizers, obs, actions)
    torch.manual_seed(7)
    noise = torch.randn(4, 16, 2)
    timesteps = torch.randint(0, 100, (4,))
    [(noisy, seen_timesteps, condition)] = seen
    assert torch.equal(seen_timesteps, timesteps)
    assert torch.equal(noisy, scheduler.add_noise(action_normalizer.normalize(actions), noise, timesteps))
    assert torch.equal(condition, obs_normalizer.normalize(obs).reshape(4, 40))
    assert condition.abs().max() <= 1 and loss.item() == torch.nn.functional.mse_loss(prediction, noise).item()


def test_loss_falls_and_checkpoint_loads(pusht_zarr, tmp_path):
    config = TrainConfig(zarr_path=str(pusht_zarr), output_dir=str(tmp_path / "run"), steps=80, learning_rate=1e-3,
                         warmup_steps=0, checkpoint_every=40, log_every=1, **TINY)
    final = train(config, progress=False)
    losses = [row["loss"] for row in read_log(tmp_path / "run")]
    assert len(losses) == 80
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    halfway = tmp_path / "run" / "checkpoints" / "step_0000040"
    assert json.loads((halfway / "config.json").read_text())["metadata"]["trained_steps"] == 40
    assert load_policy(halfway).config == load_policy(final).config
    policy = load_policy(final)
    output = policy.predict(np.full((2, 20), 256.0, np.float32))
    assert output.actions.shape == (8, 2) and np.isfinite(output.actions).all()


def test_resume_continues_the_step_count(pusht_zarr, tmp_path):
    run_dir = tmp_path / "run"
    first = TrainConfig(zarr_path=str(pusht_zarr), output_dir=str(run_dir), steps=10, checkpoint_every=5,
                        log_every=1, **TINY)
    train(first, progress=False)
    train(TrainConfig(**{**first.__dict__, "steps": 16}), progress=False)
    steps = [row["step"] for row in read_log(run_dir)]
    assert steps == list(range(1, 17))
    metadata = json.loads((run_dir / "final" / "config.json").read_text())["metadata"]
    assert metadata["trained_steps"] == 16


def test_torchrun_data_parallel_on_cpu_with_gloo(pusht_zarr, tmp_path, repo_root):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "paradigms_policy.commands.cli", "train", "--data", str(pusht_zarr), "--output", str(run_dir),
               "--steps", "4", "--batch-size", "8", "--down-dims", "16,32", "--step-embed-dim", "16",
               "--checkpoint-every", "4", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((run_dir / "final" / "config.json").read_text())["metadata"]
    assert metadata["world_size"] == 2 and metadata["trained_steps"] == 4


def test_the_image_loss_feeds_the_frames_and_the_normalised_low_dim_to_the_encoder(policy_config, normalizers):
    obs_normalizer, _ = normalizers
    scheduler = make_scheduler(policy_config.scheduler)
    frames, low_dim, actions = torch.rand(3, 2, 3, 84, 84), 512 * torch.rand(3, 2, 20), 512 * torch.rand(3, 16, 2)
    seen = []

    def denoiser(noisy, timesteps, condition):
        seen.append(condition)
        return torch.zeros_like(noisy)

    diffusion_loss(denoiser, scheduler, normalizers, (frames, low_dim), actions)
    [(seen_frames, seen_low_dim)] = seen
    assert seen_frames is frames and torch.equal(seen_low_dim, obs_normalizer.normalize(low_dim))


def test_random_crop_takes_each_frame_at_its_own_offset():
    frames = torch.arange(4 * 2 * 3 * 6 * 6).reshape(4, 2, 3, 6, 6)
    crops = random_crop(frames, 4, np.random.default_rng(0))
    assert crops.shape == (4, 2, 3, 4, 4)
    offsets = set()
    for index in np.ndindex(4, 2):
        frame, crop = frames[index], crops[index]
        matches = [(top, left) for top in range(3) for left in range(3)
                   if torch.equal(frame[:, top:top + 4, left:left + 4], crop)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_an_image_policy_trains_and_loads_with_its_encoder(pusht_zarr, tmp_path):
    config = TrainConfig(zarr_path=str(pusht_zarr), output_dir=str(tmp_path / "run"), steps=6, checkpoint_every=6,
                         log_every=1, observation="image", **{**TINY, "batch_size": 4, "episodes": [0]})
    policy = load_policy(train(config, progress=False))
    assert policy.config.image_keys == ("image",) and policy.config.low_dim_keys == ("agent_pos",)
    assert policy.config.vision.crop_shape == (84, 84) and policy.config.unet.global_cond_dim == 2 * (2 + 64)
    encoder = policy.obs_encoder
    assert encoder.image_scale.eq(2).all() and encoder.image_offset.eq(-1).all()  # [0, 1] frames -> [-1, 1]
    output = policy.predict({"image": np.full((2, 3, 96, 96), 0.5, np.float32),
                             "agent_pos": np.full((2, 2), 256.0, np.float32)})
    assert output.actions.shape == (8, 2) and np.isfinite(output.actions).all()


def test_an_unknown_observation_kind_is_refused(pusht_zarr, tmp_path):
    with pytest.raises(ValueError, match="observation must be one of low_dim, image"):
        train(TrainConfig(zarr_path=str(pusht_zarr), output_dir=str(tmp_path), observation="depth"), progress=False)
