"""Tests for paradigms_policy.pusht.dataset (Push-T low-dim windows)."""
import numpy as np
import pytest
import torch

from paradigms_policy.pusht.dataset import PushTLowdimDataset

zarr = pytest.importorskip("zarr")


HORIZON, N_OBS_STEPS, N_ACTION_STEPS = 16, 2, 8


@pytest.fixture(scope="module")
def real_dataset(pusht_zarr):
    return PushTLowdimDataset(pusht_zarr, HORIZON, N_OBS_STEPS, N_ACTION_STEPS)


def write_synthetic_zarr(path, episode_lengths):
    """A tiny replay buffer whose values encode (episode, step) so windows can be checked exactly.

    Every value of step ``i`` of episode ``e`` is ``1000 * e + i`` (the agent
    y gets a 0.5 offset so the two agent coordinates differ).
    """
    episode_of_step = np.repeat(np.arange(len(episode_lengths)), episode_lengths)
    step_in_episode = np.concatenate([np.arange(length) for length in episode_lengths])
    code = (1000 * episode_of_step + step_in_episode).astype(np.float32)
    num_steps = len(code)
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("data/action", data=np.stack([code, -code], axis=1))
    state = np.zeros((num_steps, 5), dtype=np.float32)
    state[:, 0], state[:, 1] = code, code + 0.5
    root.create_dataset("data/state", data=state)
    keypoint = np.broadcast_to(code[:, None, None], (num_steps, 9, 2)).copy()
    root.create_dataset("data/keypoint", data=keypoint)
    root.create_dataset("meta/episode_ends", data=np.cumsum(episode_lengths).astype(np.int64))
    return code


def reference_windows(episode_ends, episodes, horizon, pad_before, pad_after):
    """Step indices of each window, computed one by one as Diffusion Policy's sampler does."""
    windows = []
    for episode in episodes:
        start = 0 if episode == 0 else episode_ends[episode - 1]
        length = episode_ends[episode] - start
        for window_start in range(-pad_before, length - horizon + pad_after + 1):
            steps = []
            for offset in range(horizon):
                local = min(max(window_start + offset, 0), length - 1)
                steps.append(start + local)
            windows.append(steps)
    return np.array(windows).reshape(-1, horizon)


# Episode of length 6 is shorter than horizon - pad_after - pad_before and yields no window.
SYNTHETIC_LENGTHS = [12, 20, 6, 9]


@pytest.fixture
def synthetic(tmp_path):
    path = tmp_path / "synthetic.zarr"
    code = write_synthetic_zarr(path, SYNTHETIC_LENGTHS)
    return path, code


def test_window_count_per_episode(synthetic):
    path, _ = synthetic
    dataset = PushTLowdimDataset(path, HORIZON, N_OBS_STEPS, N_ACTION_STEPS)
    padding = (N_OBS_STEPS - 1) + (N_ACTION_STEPS - 1)
    expected = sum(max(0, length + padding - HORIZON + 1) for length in SYNTHETIC_LENGTHS)
    assert len(dataset) == expected == 5 + 13 + 0 + 2
    for episode, length in enumerate(SYNTHETIC_LENGTHS):
        single = PushTLowdimDataset(path, HORIZON, N_OBS_STEPS, N_ACTION_STEPS, episodes=[episode])
        assert len(single) == max(0, length - 7)


def test_windows_match_sequence_sampler_and_layout(synthetic):
    path, code = synthetic
    dataset = PushTLowdimDataset(path, HORIZON, N_OBS_STEPS, N_ACTION_STEPS)
    episode_ends = np.cumsum(SYNTHETIC_LENGTHS)
    expected_steps = reference_windows(episode_ends, range(len(episode_ends)), HORIZON, 1, 7)
    assert len(dataset) == len(expected_steps)
    for index, steps in enumerate(expected_steps):
        item = dataset[index]
        assert item["obs"].dtype == torch.float32 and item["obs"].shape == (HORIZON, 20)
        assert item["action"].dtype == torch.float32 and item["action"].shape == (HORIZON, 2)
        window_code = code[steps]
        keypoints = np.repeat(window_code[:, None], 18, axis=1)
        np.testing.assert_array_equal(item["obs"][:, :18].numpy(), keypoints)
        np.testing.assert_array_equal(item["obs"][:, 18].numpy(), window_code)
        np.testing.assert_array_equal(item["obs"][:, 19].numpy(), window_code + 0.5)
        action = np.stack([window_code, -window_code], axis=1)
        np.testing.assert_array_equal(item["action"].numpy(), action)


def test_edge_padding_repeats_first_and_last_step(synthetic):
    path, code = synthetic
    dataset = PushTLowdimDataset(path, HORIZON, N_OBS_STEPS, N_ACTION_STEPS, episodes=[1])
    # Episode 1 holds codes 1000..1019.
    first = dataset[0]["action"][:, 0].numpy()
    np.testing.assert_array_equal(first[:2], [1000, 1000])
    np.testing.assert_array_equal(first[2:], np.arange(1001, 1015))
    last = dataset[len(dataset) - 1]["action"][:, 0].numpy()
    np.testing.assert_array_equal(last[:9], np.arange(1011, 1020))
    np.testing.assert_array_equal(last[9:], np.full(7, 1019))
    # No window of any episode reads another episode's steps.
    full = PushTLowdimDataset(path, HORIZON, N_OBS_STEPS, N_ACTION_STEPS)
    episode_of_window = full.batch(np.arange(len(full)))["action"][:, :, 0].numpy() // 1000
    assert np.all(episode_of_window == episode_of_window[:, :1])


def test_episode_selection_and_errors(synthetic, tmp_path):
    path, _ = synthetic
    subset = PushTLowdimDataset(path, episodes=[3, 0, 3])
    np.testing.assert_array_equal(subset.episodes, [0, 3])
    assert len(subset) == 5 + 2
    with pytest.raises(ValueError):
        PushTLowdimDataset(path, episodes=[4])
    missing = tmp_path / "missing.zarr"
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        PushTLowdimDataset(missing)
    incomplete = tmp_path / "incomplete.zarr"
    zarr.open_group(str(incomplete), mode="w").create_dataset("data/action", data=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="incomplete.zarr"):
        PushTLowdimDataset(incomplete)


def test_statistics_cover_selected_episodes(synthetic):
    path, code = synthetic
    dataset = PushTLowdimDataset(path, episodes=[1, 3])
    stats = dataset.statistics()
    assert stats["obs"]["min"].shape == (20,) and stats["obs"]["max"].shape == (20,)
    assert stats["action"]["min"].shape == (2,) and stats["action"]["max"].shape == (2,)
    np.testing.assert_array_equal(stats["action"]["min"], [1000, -3008])
    np.testing.assert_array_equal(stats["action"]["max"], [3008, -1000])
    np.testing.assert_array_equal(stats["obs"]["min"][:19], np.full(19, 1000))
    assert stats["obs"]["max"][19] == 3008.5


def test_real_data_window_count_and_statistics(real_dataset):
    episode_ends = real_dataset.episode_ends
    lengths = np.diff(np.concatenate([[0], episode_ends]))
    assert len(episode_ends) == 206 and episode_ends[-1] == 25650
    assert len(real_dataset) == int(np.sum(np.maximum(0, lengths - 7)))

    root = zarr.open(str(real_dataset.zarr_path), mode="r")
    keypoint = root["data/keypoint"][:].reshape(-1, 18)
    agent = root["data/state"][:, :2]
    action = root["data/action"][:]
    stats = real_dataset.statistics()
    obs = np.concatenate([keypoint, agent], axis=1)
    np.testing.assert_array_equal(stats["obs"]["min"], obs.min(0))
    np.testing.assert_array_equal(stats["obs"]["max"], obs.max(0))
    np.testing.assert_array_equal(stats["action"]["min"], action.min(0))
    np.testing.assert_array_equal(stats["action"]["max"], action.max(0))
    assert np.all(stats["action"]["min"] >= 0) and np.all(stats["action"]["max"] <= 512)


def test_real_data_batch_equals_stacked_items(real_dataset):
    indices = np.random.default_rng(0).integers(0, len(real_dataset), size=64)
    batch = real_dataset.batch(indices)
    assert batch["obs"].shape == (64, HORIZON, 20) and batch["action"].shape == (64, HORIZON, 2)
    items = [real_dataset[int(i)] for i in indices]
    for key in ("obs", "action"):
        stacked = torch.stack([item[key] for item in items])
        torch.testing.assert_close(batch[key], stacked, rtol=0, atol=0)


def test_real_data_windows_match_sequence_sampler(real_dataset):
    episodes = [0, 57, 205]
    dataset = PushTLowdimDataset(
        real_dataset.zarr_path, HORIZON, N_OBS_STEPS, N_ACTION_STEPS, episodes=episodes
    )
    expected_steps = reference_windows(real_dataset.episode_ends, episodes, HORIZON, 1, 7)
    root = zarr.open(str(real_dataset.zarr_path), mode="r")
    keypoint = root["data/keypoint"][:]
    state = root["data/state"][:]
    action = root["data/action"][:]
    batch = dataset.batch(np.arange(len(dataset)))
    expected_keypoints = keypoint[expected_steps].reshape(-1, HORIZON, 18)
    np.testing.assert_array_equal(batch["obs"][:, :, :18].numpy(), expected_keypoints)
    np.testing.assert_array_equal(batch["obs"][:, :, 18:].numpy(), state[expected_steps][:, :, :2])
    np.testing.assert_array_equal(batch["action"].numpy(), action[expected_steps])


def test_observation_windows_are_deterministic(real_dataset):
    windows = real_dataset.observation_windows(32, seed=3)
    assert windows.shape == (32, N_OBS_STEPS, 20) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows, real_dataset.observation_windows(32, seed=3))
    assert not np.array_equal(windows, real_dataset.observation_windows(32, seed=4))
    all_starts = real_dataset.batch(np.arange(len(real_dataset)))["obs"][:, :N_OBS_STEPS].numpy()
    flat = all_starts.reshape(len(all_starts), -1)
    for window in windows:
        assert np.any(np.all(flat == window.reshape(-1), axis=1))
