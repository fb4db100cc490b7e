"""Push-T low-dimensional demonstration dataset.

Reads Diffusion Policy's Push-T replay buffer (a zarr v2 store) and serves
fixed-length training windows in Diffusion Policy's low-dim layout:

* observation (20 values per step): the 9 block keypoints flattened as
  x0, y0, x1, y1, ..., x8, y8, followed by the agent position x, y;
* action (2 values per step): the target agent position in pixels.

Windows are cut as Diffusion Policy's ``SequenceSampler`` cuts them: every
start index of a ``horizon``-long window inside each episode, allowed to run
``n_obs_steps - 1`` steps before the episode's start and ``n_action_steps - 1``
steps past its end, where the missing steps repeat the episode's first or last
step. Windows never cross episode boundaries.
"""

from pathlib import Path

import numpy as np
import torch

OBS_DIM = 20
ACTION_DIM = 2
NUM_KEYPOINTS = 9

# Arrays the dataset reads; data/img is deliberately not loaded (2.8 GB).
_REQUIRED_ARRAYS = ("data/action", "data/state", "data/keypoint", "meta/episode_ends")


def load_pusht_arrays(zarr_path):
    """Load the low-dim Push-T arrays from a zarr store.

    Returns a dict with float32 ``obs`` (N, 20), ``action`` (N, 2),
    ``state`` (N, 5), ``keypoint`` (N, 9, 2) and int64 ``episode_ends``.
    Raises FileNotFoundError when the store is missing and ValueError when it
    lacks an expected array or has inconsistent shapes.
    """
    import zarr

    path = Path(zarr_path)
    if not path.exists():
        raise FileNotFoundError(f"Push-T zarr store not found: {path}")
    try:
        root = zarr.open(str(path), mode="r")
    except Exception as error:
        raise ValueError(f"cannot open {path} as a zarr store: {error}") from error
    missing = [name for name in _REQUIRED_ARRAYS if name not in root]
    if missing:
        raise ValueError(f"zarr store {path} lacks the arrays {missing}")

    action = np.asarray(root["data/action"][:], dtype=np.float32)
    state = np.asarray(root["data/state"][:], dtype=np.float32)
    keypoint = np.asarray(root["data/keypoint"][:], dtype=np.float32)
    episode_ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)

    num_steps = len(action)
    if action.shape != (num_steps, ACTION_DIM) or state.shape != (num_steps, 5):
        raise ValueError(
            f"zarr store {path}: unexpected shapes action {action.shape}, state {state.shape}"
        )
    if keypoint.shape != (num_steps, NUM_KEYPOINTS, 2):
        raise ValueError(f"zarr store {path}: unexpected keypoint shape {keypoint.shape}")
    if (
        episode_ends.ndim != 1
        or len(episode_ends) == 0
        or episode_ends[-1] != num_steps
        or np.any(np.diff(episode_ends) <= 0)
        or episode_ends[0] <= 0
    ):
        raise ValueError(
            f"zarr store {path}: meta/episode_ends must increase strictly and end at {num_steps}"
        )

    obs = np.concatenate([keypoint.reshape(num_steps, 2 * NUM_KEYPOINTS), state[:, :2]], axis=1)
    return {
        "obs": obs,
        "action": action,
        "state": state,
        "keypoint": keypoint,
        "episode_ends": episode_ends,
    }


def recover_local_keypoints(zarr_path):
    """Recover the keypoints' body-frame coordinates from the demonstration data.

    Every frame's keypoints are mapped back into the block frame with the
    recorded block pose; the per-coordinate median over frames is the
    estimate. The median, not the mean, because in about 0.6% of frames
    (the block moving fast) the recorded keypoints belong to a pose up to
    ~2 px away from the recorded state, while still being an exact rigid
    copy of the same shape.

    Returns:
        local: (9, 2) body-frame coordinates.
        max_spread_px: the largest distance, over all frames and keypoints,
            between a recorded keypoint and ``local`` placed rigidly onto
            that frame (least-squares pose), i.e. how far the recorded
            shape ever departs from one fixed body-frame shape.
    """
    arrays = load_pusht_arrays(zarr_path)
    state = arrays["state"].astype(np.float64)
    keypoints = arrays["keypoint"].astype(np.float64)

    relative = keypoints - state[:, None, 2:4]
    cos, sin = np.cos(state[:, 4])[:, None], np.sin(state[:, 4])[:, None]
    local_per_frame = np.stack(
        [
            cos * relative[..., 0] + sin * relative[..., 1],
            -sin * relative[..., 0] + cos * relative[..., 1],
        ],
        axis=-1,
    )
    local = np.median(local_per_frame, axis=0)

    # Closed-form 2-D least-squares rotation between the centred point sets.
    local_centred = local - local.mean(axis=0)
    frame_centre = keypoints.mean(axis=1, keepdims=True)
    frame_centred = keypoints - frame_centre
    local_x, local_y = local_centred[:, 0], local_centred[:, 1]
    frame_x, frame_y = frame_centred[..., 0], frame_centred[..., 1]
    cross = np.sum(local_x * frame_y - local_y * frame_x, axis=1)
    dot = np.sum(local_x * frame_x + local_y * frame_y, axis=1)
    fit_angle = np.arctan2(cross, dot)
    fit_cos, fit_sin = np.cos(fit_angle)[:, None], np.sin(fit_angle)[:, None]
    fitted = np.stack(
        [fit_cos * local_x - fit_sin * local_y, fit_sin * local_x + fit_cos * local_y], axis=-1
    ) + frame_centre
    max_spread_px = float(np.linalg.norm(fitted - keypoints, axis=-1).max())
    return local, max_spread_px


def window_index_table(episode_ends, episodes, horizon, pad_before, pad_after):
    """Global step indices of every window, shape (num_windows, horizon).

    Row ``w`` lists, for each position of window ``w``, the step of the
    replay buffer to read; positions before an episode's start or after its
    end are clamped to its first or last step, which is edge padding.
    """
    episode_starts = np.concatenate([[0], episode_ends[:-1]])
    offsets = np.arange(horizon)
    tables = []
    for episode in episodes:
        start, end = episode_starts[episode], episode_ends[episode]
        length = end - start
        window_starts = np.arange(-pad_before, length - horizon + pad_after + 1)
        local_steps = np.clip(window_starts[:, None] + offsets[None, :], 0, length - 1)
        tables.append(local_steps + start)
    return np.concatenate(tables).astype(np.int64)


class PushTLowdimDataset(torch.utils.data.Dataset):
    """Windows of Push-T demonstrations in Diffusion Policy's low-dim layout.

    Args:
        zarr_path: path to ``pusht_cchi_v7_replay.zarr``.
        horizon: window length (steps).
        n_obs_steps: observation steps the policy is conditioned on; the
            window may start ``n_obs_steps - 1`` steps before an episode.
        n_action_steps: actions executed per chunk; the window may end
            ``n_action_steps - 1`` steps after an episode.
        episodes: optional episode indices to use (e.g. a train/validation
            split); duplicates are dropped and the order is ascending.
            ``None`` selects all episodes.
    """

    def __init__(self, zarr_path, horizon=16, n_obs_steps=2, n_action_steps=8, episodes=None):
        if horizon < 1 or n_obs_steps < 1 or n_action_steps < 1:
            raise ValueError("horizon, n_obs_steps and n_action_steps must be positive")
        if n_obs_steps > horizon:
            raise ValueError(f"n_obs_steps ({n_obs_steps}) exceeds horizon ({horizon})")
        self.zarr_path = Path(zarr_path)
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps

        arrays = load_pusht_arrays(zarr_path)
        self._obs = arrays["obs"]
        self._action = arrays["action"]
        self.episode_ends = arrays["episode_ends"]
        self.num_episodes_total = len(self.episode_ends)

        if episodes is None:
            self.episodes = np.arange(self.num_episodes_total)
        else:
            self.episodes = np.unique(np.asarray(episodes, dtype=np.int64))
            if len(self.episodes) == 0:
                raise ValueError("episodes selects no episode")
            if np.any(self.episodes < 0) or np.any(self.episodes >= self.num_episodes_total):
                raise ValueError(
                    f"episode indices must lie in [0, {self.num_episodes_total}), got {episodes}"
                )

        self._windows = window_index_table(
            self.episode_ends,
            self.episodes,
            horizon,
            pad_before=n_obs_steps - 1,
            pad_after=n_action_steps - 1,
        )
        episode_starts = np.concatenate([[0], self.episode_ends[:-1]])
        self._selected_steps = np.concatenate(
            [np.arange(episode_starts[e], self.episode_ends[e]) for e in self.episodes]
        )

    def __len__(self):
        return len(self._windows)

    def __getitem__(self, index):
        steps = self._windows[index]
        return {
            "obs": torch.from_numpy(self._obs[steps]),
            "action": torch.from_numpy(self._action[steps]),
        }

    def batch(self, indices):
        """Windows ``indices`` stacked: {'obs': (B, horizon, 20), 'action': (B, horizon, 2)}."""
        steps = self._windows[np.asarray(indices, dtype=np.int64)]
        return {
            "obs": torch.from_numpy(self._obs[steps]),
            "action": torch.from_numpy(self._action[steps]),
        }

    def statistics(self):
        """Per-dimension min/max over every step of the selected episodes."""
        obs = self._obs[self._selected_steps]
        action = self._action[self._selected_steps]
        return {
            "obs": {"min": obs.min(axis=0), "max": obs.max(axis=0)},
            "action": {"min": action.min(axis=0), "max": action.max(axis=0)},
        }

    def observation_windows(self, count, seed=0):
        """``count`` observation windows (count, n_obs_steps, 20), chosen reproducibly.

        Windows are drawn without replacement unless ``count`` exceeds the
        number of windows.
        """
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(self), size=count, replace=count > len(self))
        return self._obs[self._windows[chosen, : self.n_obs_steps]]

    def rollout_observation_windows(self, count, seed=0):
        """``count`` observation windows as a policy meets them in a rollout.

        Episodes are taken in a reproducible random order, and within each episode the windows
        advance by ``n_action_steps`` (one executed chunk). Returns the windows (count,
        n_obs_steps, 20) and a boolean array marking the first window of each episode.
        """
        rng = np.random.default_rng(seed)
        episode_of_window = np.searchsorted(self.episode_ends, self._windows[:, -1], side="right")
        windows, first = [], []
        for episode in rng.permutation(self.episodes):
            indices = np.flatnonzero(episode_of_window == episode)[:: self.n_action_steps]
            windows.extend(self._windows[indices, : self.n_obs_steps])
            first.extend([True] + [False] * (len(indices) - 1))
            if len(windows) >= count:
                break
        return self._obs[np.stack(windows[:count])], np.array(first[:count])
