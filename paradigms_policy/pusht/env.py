"""Push-T simulation harness on gym-pusht, in Diffusion Policy's low-dim layout.

gym-pusht reports the raw state (agent x, y, block x, y, block angle); the
policy consumes the 20-value observation of the demonstration data (9 block
keypoints, then the agent position). This module converts between the two,
restores recorded states faithfully, and scores episodes with the Diffusion
Policy protocol.
"""

import numpy as np


# Body-frame (x, y) coordinates, in pixels, of the nine keypoints of Diffusion
# Policy's low-dim Push-T observation. They are not stored in the data; they
# were recovered once with ``dataset.recover_local_keypoints`` on
# pusht_cchi_v7_replay.zarr by inverting keypoint = R(angle) @ local + block
# position over all 25,650 frames (per-coordinate median, rounded to 1e-4 px).
# Placed rigidly, they reproduce every recorded frame's keypoints within
# 1e-4 px. The origin is gym-pusht's block body origin (the midpoint of the outer
# long edge of the T's bar), not its centre of gravity.
KEYPOINTS_LOCAL = np.array(
    [
        [9.2698, 90.0410],
        [-60.9835, -1.1867],
        [60.9128, -1.3934],
        [-0.2705, 25.5436],
        [-14.0649, 122.8159],
        [39.0027, 32.8574],
        [-39.9664, 32.7297],
        [-16.8243, 62.8632],
        [23.5415, -1.7003],
    ]
)

SUCCESS_COVERAGE = 0.95


def keypoints_from_block_pose(block_xy, angle):
    """World keypoints (..., 9, 2) of a block at ``block_xy`` (..., 2), turned by ``angle``."""
    block_xy = np.asarray(block_xy, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    local_x, local_y = KEYPOINTS_LOCAL[:, 0], KEYPOINTS_LOCAL[:, 1]
    world_x = cos * local_x - sin * local_y + block_xy[..., 0:1]
    world_y = sin * local_x + cos * local_y + block_xy[..., 1:2]
    return np.stack([world_x, world_y], axis=-1)


def observation_from_state(state):
    """20-value observation (9 keypoints flattened, agent x, y) of a 5-value state.

    The state is (agent x, agent y, block x, block y, block angle).
    """
    state = np.asarray(state, dtype=np.float64)
    keypoints = keypoints_from_block_pose(state[2:4], state[4])
    return np.concatenate([keypoints.reshape(-1), state[:2]])


def episode_score(coverages):
    """Diffusion Policy's Push-T episode score from per-step goal coverages.

    Returns (score, success): score = max over the episode of
    clip(coverage / 0.95, 0, 1); success = the coverage reached 0.95.
    """
    coverages = np.asarray(coverages, dtype=np.float64)
    if coverages.size == 0:
        raise ValueError("episode_score needs at least one coverage value")
    score = float(np.max(np.clip(coverages / SUCCESS_COVERAGE, 0.0, 1.0)))
    success = bool(np.max(coverages) >= SUCCESS_COVERAGE)
    return score, success


class PushTKeypointsEnv:
    """gym-pusht's ``gym_pusht/PushT-v0`` with 20-value keypoint observations.

    Episodes end when the coverage exceeds 0.95 (gym-pusht's termination) or
    after 300 steps (its registered time limit).

    Args:
        render: create the simulator with ``render_mode="rgb_array"`` so that
            ``render()`` returns frames; off by default because drawing is
            not needed for state observations.
    """

    def __init__(self, render=False):
        import gymnasium
        import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

        self._render_enabled = render
        self._env = gymnasium.make(
            "gym_pusht/PushT-v0",
            obs_type="state",
            render_mode="rgb_array" if render else None,
        )
        self._sim = self._env.unwrapped

    def reset(self, seed=None):
        """Start an episode from gym-pusht's random initial state; returns the observation (20,).

        gym-pusht draws the state with gymnasium's seeded RNG, so a seed gives
        the same start every time but not the start Diffusion Policy's own
        environment drew for that seed.
        """
        state, _ = self._env.reset(seed=seed)
        return observation_from_state(state)

    def step(self, action):
        """Move the agent towards ``action`` (x, y) for one control step (0.1 s).

        Returns (observation (20,), coverage, done, info) where coverage is the
        raw fraction of the goal area covered by the block, in [0, 1], and
        info is gym-pusht's info dict.
        """
        action = np.asarray(action, dtype=np.float64)
        state, _, terminated, truncated, info = self._env.step(action)
        done = bool(terminated or truncated)
        return observation_from_state(state), float(info["coverage"]), done, info

    def set_state(self, state):
        """Restore a recorded state (agent x, y, block x, y, block angle); returns the observation.

        gym-pusht's ``reset_to_state`` sets the block's position before its
        angle; pymunk rotates a body about its centre of gravity, so the block
        would then land away from the requested pose. Setting the angle first
        reproduces the recorded demonstrations.
        """
        state = np.asarray(state, dtype=np.float64)
        # reset() restarts the episode's time limit; _setup() then rebuilds an
        # empty physics space so no velocity or contact of the random initial
        # state survives into the restored one.
        self._env.reset()
        self._sim._setup()
        self._sim.agent.position = state[:2].tolist()
        self._sim.block.angle = float(state[4])
        self._sim.block.position = state[2:4].tolist()
        # One physics step lets the new pose take effect, as gym-pusht's own
        # state setter does.
        self._sim.space.step(self._sim.dt)
        return observation_from_state(self.get_state())

    def get_state(self):
        """Current state (agent x, y, block x, y, block angle in [0, 2*pi))."""
        return self._sim.get_obs()

    def frame(self, size=96):
        """The policy's camera: the scene drawn at size x size (96, as the demonstrations' data/img), HxWx3 uint8.

        gym-pusht's own observation drawing (its `pixels` observation), available whatever the render mode.
        """
        return self._sim._get_img(self._sim._draw(), width=size, height=size)

    def render(self):
        """The current scene as an HxWx3 uint8 frame (680x680 by default)."""
        if not self._render_enabled:
            raise RuntimeError("PushTKeypointsEnv was created with render=False")
        return self._env.render()

    def close(self):
        self._env.close()
