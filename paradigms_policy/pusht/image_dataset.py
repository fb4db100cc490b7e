"""Push-T image demonstration dataset: the recorded 96x96 frames and the agent position.

The image layout of Diffusion Policy's hybrid image Push-T policy: per step the frame
`data/img` (stored as float 0..255, 96x96x3, rendered by the original environment) and
`agent_pos` (the first two values of `data/state`, pixels); the action is the target agent
position. Windows are cut exactly as the low-dim dataset cuts them (`window_index_table`).

The frames are held in memory as uint8, channels first (25,650 x 3 x 96 x 96 = 0.7 GB); only
the first `n_obs_steps` frames of a window are served, since the policy sees no others.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import PushTLowdimDataset

IMAGE_SHAPE = (3, 96, 96)
IMAGE_KEY = "image"
AGENT_POS_KEY = "agent_pos"


def load_pusht_frames(zarr_path, progress: bool = True) -> np.ndarray:
    """Every recorded frame as uint8 (N, 3, 96, 96), read chunk by chunk so the float store never sits in memory."""
    import zarr
    from tqdm import tqdm

    path = Path(zarr_path)
    if not path.exists():
        raise FileNotFoundError(f"Push-T zarr store not found: {path}")
    root = zarr.open(str(path), mode="r")
    if "data/img" not in root:
        raise ValueError(f"zarr store {path} has no data/img (the image frames)")
    source = root["data/img"]
    if tuple(source.shape[1:]) != (96, 96, 3):
        raise ValueError(f"zarr store {path}: data/img has shape {tuple(source.shape)}, expected (N, 96, 96, 3)")
    frames = np.empty((source.shape[0], *IMAGE_SHAPE), dtype=np.uint8)
    step = source.chunks[0]
    for start in tqdm(range(0, source.shape[0], step), desc="frames", unit="chunk", disable=not progress,
                      dynamic_ncols=True):
        block = np.asarray(source[start:start + step])
        frames[start:start + step] = np.clip(np.rint(block), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return frames


class PushTImageDataset(PushTLowdimDataset):
    """Windows of Push-T demonstrations with frames: batch() gives {'image': uint8 (B, n_obs_steps, 3, 96, 96),
    'agent_pos': (B, horizon, 2), 'action': (B, horizon, 2)}. Arguments as `PushTLowdimDataset`."""

    def __init__(self, zarr_path, horizon=16, n_obs_steps=2, n_action_steps=8, episodes=None, progress=True):
        super().__init__(zarr_path, horizon, n_obs_steps, n_action_steps, episodes)
        self._frames = load_pusht_frames(zarr_path, progress)
        if len(self._frames) != len(self._obs):
            raise ValueError(f"zarr store {zarr_path}: {len(self._frames)} frames for {len(self._obs)} steps")
        self._agent_pos = np.ascontiguousarray(self._obs[:, -2:])  # the low-dim observation ends with it

    def __getitem__(self, index):
        return {key: value[0] for key, value in self.batch([index]).items()}

    def batch(self, indices):
        steps = self._windows[np.asarray(indices, dtype=np.int64)]
        return {
            IMAGE_KEY: torch.from_numpy(self._frames[steps[:, : self.n_obs_steps]]),
            AGENT_POS_KEY: torch.from_numpy(self._agent_pos[steps]),
            "action": torch.from_numpy(self._action[steps]),
        }

    def statistics(self):
        """Per-dimension min/max of agent_pos (as 'obs') and of the action over the selected episodes."""
        return {
            "obs": {"min": self._agent_pos[self._selected_steps].min(axis=0),
                    "max": self._agent_pos[self._selected_steps].max(axis=0)},
            "action": super().statistics()["action"],
        }


def frame_difference(zarr_path, count: int = 200, seed: int = 0) -> dict:
    """How closely gym-pusht draws the recorded frames: `count` recorded steps chosen reproducibly, each state
    restored in the simulator (`PushTKeypointsEnv.set_state`) and drawn at 96x96, against `data/img`.

    Returns the mean and the largest per-frame mean absolute difference (0..255 units), and the share of
    pixels that differ by more than 32 (an edge moved, not a rounding)."""
    import zarr

    from .env import PushTKeypointsEnv

    root = zarr.open(str(zarr_path), mode="r")
    states = np.asarray(root["data/state"][:])
    steps = np.sort(np.random.default_rng(seed).choice(len(states), size=count, replace=False))
    env = PushTKeypointsEnv()
    try:
        differences, far = [], []
        for step in steps:
            env.set_state(states[step])
            drawn = env.frame().astype(np.float64)
            recorded = np.asarray(root["data/img"][step], dtype=np.float64)
            error = np.abs(drawn - recorded)
            differences.append(error.mean())
            far.append((error > 32).mean())
    finally:
        env.close()
    return {"frames": count, "mean_abs_difference": float(np.mean(differences)),
            "max_frame_mean_abs_difference": float(np.max(differences)), "share_over_32": float(np.mean(far))}
