"""Training: the loss falls, checkpoints load, resume continues, torchrun with gloo works."""
import json
import os
import subprocess
import sys

import numpy as np

from paradigms_policy.checkpoint import load_policy
from paradigms_policy.commands.train import TrainConfig, train

from conftest import REPO_ROOT

TINY = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, batch_size=32, episodes=list(range(6)))


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_loss_falls_and_checkpoint_loads(pusht_zarr, tmp_path):
    config = TrainConfig(zarr_path=str(pusht_zarr), output_dir=str(tmp_path / "run"), steps=80, learning_rate=1e-3,
                         warmup_steps=0, checkpoint_every=40, log_every=1, **TINY)
    final = train(config, progress=False)
    losses = [row["loss"] for row in read_log(tmp_path / "run")]
    assert len(losses) == 80
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert (tmp_path / "run" / "checkpoints" / "step_0000040" / "model.safetensors").exists()
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


def test_torchrun_data_parallel_on_cpu_with_gloo(pusht_zarr, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "paradigms_policy.commands.cli", "train", "--data", str(pusht_zarr), "--output", str(run_dir),
               "--steps", "4", "--batch-size", "8", "--down-dims", "16,32", "--step-embed-dim", "16",
               "--checkpoint-every", "4", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((run_dir / "final" / "config.json").read_text())["metadata"]
    assert metadata["world_size"] == 2 and metadata["trained_steps"] == 4
