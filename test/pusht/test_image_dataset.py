"""The Push-T image dataset: frames and agent positions of each window, and gym-pusht's drawing of the frames."""
import numpy as np
import pytest

from paradigms_policy.pusht.image_dataset import (AGENT_POS_KEY, IMAGE_KEY, PushTImageDataset, frame_difference,
                                                  load_pusht_frames)

zarr = pytest.importorskip("zarr")


def write_image_zarr(path, episode_lengths):
    """A replay buffer whose step i carries the value i everywhere: in its state, its action and every pixel
    of its frame (stored as float 0..255 like data/img, chunked unevenly to exercise the chunked read)."""
    steps = int(np.sum(episode_lengths))
    code = np.arange(steps, dtype=np.float32)
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("data/action", data=np.stack([code, -code], axis=1))
    root.create_dataset("data/state", data=np.stack([code, code + 0.5, code, code, np.zeros(steps)], axis=1)
                        .astype(np.float32))
    root.create_dataset("data/keypoint", data=np.zeros((steps, 9, 2), np.float32))
    frames = np.broadcast_to(code[:, None, None, None], (steps, 96, 96, 3)).astype(np.float32)
    frames[:, 0, 0, 0] = 255.4  # rounds to 255, the top of the range
    root.create_dataset("data/img", data=frames, chunks=(7, 96, 96, 3))
    root.create_dataset("meta/episode_ends", data=np.cumsum(episode_lengths).astype(np.int64))
    return path


def test_frames_are_uint8_channels_first_and_equal_to_the_store(tmp_path):
    path = write_image_zarr(tmp_path / "replay.zarr", [30, 20])
    frames = load_pusht_frames(path, progress=False)
    assert frames.shape == (50, 3, 96, 96) and frames.dtype == np.uint8
    assert np.array_equal(frames[:, 1, 5, 7], np.arange(50)) and (frames[:, 0, 0, 0] == 255).all()


def test_a_window_serves_its_observation_frames_and_agent_positions(tmp_path):
    path = write_image_zarr(tmp_path / "replay.zarr", [30, 20])
    dataset = PushTImageDataset(path, horizon=16, n_obs_steps=2, n_action_steps=8, progress=False)
    batch = dataset.batch([0, 1, len(dataset) - 1])
    assert batch[IMAGE_KEY].shape == (3, 2, 3, 96, 96) and batch[AGENT_POS_KEY].shape == (3, 16, 2)
    # Window 0 starts one step before the first episode (edge padding), the last ends 7 steps after the second.
    assert batch[IMAGE_KEY][0, :, 2, 10, 10].tolist() == [0, 0]
    assert batch[IMAGE_KEY][1, :, 2, 10, 10].tolist() == [0, 1]
    assert batch[AGENT_POS_KEY][1, :3].tolist() == [[0, 0.5], [1, 1.5], [2, 2.5]]
    assert batch["action"][-1, -1].tolist() == [49, -49]
    assert dataset[1][IMAGE_KEY].shape == (2, 3, 96, 96)
    statistics = dataset.statistics()
    assert statistics["obs"]["min"].tolist() == [0, 0.5] and statistics["obs"]["max"].tolist() == [49, 49.5]


def test_a_store_without_frames_is_refused(tmp_path):
    root = zarr.open_group(str(tmp_path / "no_img.zarr"), mode="w")
    root.create_dataset("data/action", data=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="no data/img"):
        load_pusht_frames(tmp_path / "no_img.zarr")
    with pytest.raises(FileNotFoundError):
        load_pusht_frames(tmp_path / "missing.zarr")


def test_gym_pusht_draws_the_recorded_frames_at_the_recorded_states(pusht_zarr):
    """Restoring a recorded state and drawing it at 96x96 reproduces data/img to well under one grey level
    per pixel on average (measured 0.078 over 500 frames): the policy sees in evaluation what it saw in training."""
    pytest.importorskip("gym_pusht")
    measured = frame_difference(pusht_zarr, count=40)
    assert measured["mean_abs_difference"] < 0.2 and measured["max_frame_mean_abs_difference"] < 0.5
    assert measured["share_over_32"] < 0.005
