"""control/observations.py: the checks of incoming observations and the observation window."""
from types import SimpleNamespace

import numpy as np

from paradigms_policy.config import PolicyConfig
from paradigms_policy.control.observations import ObservationGate, ObservationWindow
from paradigms_policy.control.timing import NS_PER_MS

P = 100 * NS_PER_MS
S = 1_700_000_000 * 10**9


def test_observation_gate_reasons():
    gate = ObservationGate(obs_dim=3, max_age_ns=200 * NS_PER_MS)
    now = S + 10 * NS_PER_MS
    assert gate.check([1, 2], S, now).reason == "wrong_length"
    assert gate.check([1, np.nan, 2], S, now).reason == "non_finite"
    assert gate.check([1, np.inf, 2], S, now).reason == "non_finite"
    assert gate.check([1, 2, 3], 0, now).reason == "no_stamp"
    assert gate.check([1, 2, 3], now - 300 * NS_PER_MS, now).reason == "stale"
    assert gate.check([1, 2, 3], now + 300 * NS_PER_MS, now).reason == "future"
    assert gate.check([1, 2, 3], S, now).accepted
    assert gate.check([1, 2, 3], S, now).reason == "out_of_order"  # duplicate
    assert gate.check([1, 2, 3], S - 1, now).reason == "out_of_order"
    assert gate.check([1, 2, 3], S + 1, now).accepted
    # Unstamped: no age or order check.
    unstamped = ObservationGate(obs_dim=3, max_age_ns=200 * NS_PER_MS, stamped=False)
    assert unstamped.check([1, 2, 3], 0, now).accepted and unstamped.check([1, 2, 3], 0, now).accepted


def test_observation_window_needs_contiguous_stamps():
    window = ObservationWindow(n_obs_steps=2, obs_dim=3)
    window.push([1, 1, 1], S)
    assert window.snapshot(150 * NS_PER_MS) is None
    window.push([2, 2, 2], S + P)
    values, stamp = window.snapshot(150 * NS_PER_MS)
    assert stamp == S + P and values.shape == (2, 3) and values[1, 0] == 2
    window.push([3, 3, 3], S + 5 * P)  # after a gap (e.g. an episode reset)
    assert window.snapshot(150 * NS_PER_MS) is None
    assert window.sequence == 3


def test_image_policy_window_steps_are_dicts_of_the_keys():
    from image_policy import image_policy_config

    from paradigms_policy.control.observations import low_dim_parts, step_layout

    config = image_policy_config(cameras=(("image", (3, 24, 32)),), crop_shape=None)
    layout = step_layout(config)
    assert layout == {"image": (3, 24, 32), "agent_pos": (2,)} and step_layout(PolicyConfig()) is None
    window = ObservationWindow(n_obs_steps=2, obs_dim=2, layout=layout)
    first = {"image": np.full((3, 24, 32), 0.25), **low_dim_parts(config, [10.0, 20.0])}
    window.push(first, S)
    first["image"][:] = 1.0  # the window holds a copy
    window.push({"image": np.full((3, 24, 32), 0.75), "agent_pos": [30.0, 40.0]}, S + P)
    values, stamp = window.snapshot(150 * NS_PER_MS)
    assert stamp == S + P and set(values) == {"image", "agent_pos"}
    assert values["image"].dtype == np.float32 and values["image"].shape == (2, 3, 24, 32)
    assert np.array_equal(values["image"][:, 0, 0, 0], [0.25, 0.75])
    assert np.array_equal(values["agent_pos"], [[10.0, 20.0], [30.0, 40.0]])
    window.push({"image": np.zeros((3, 24, 32)), "agent_pos": [0.0, 0.0]}, S + 5 * P)  # after a gap
    assert window.snapshot(150 * NS_PER_MS) is None


def test_low_dim_parts_split_the_joint_state_in_config_order():
    from paradigms_policy.config import ObservationSpec
    from paradigms_policy.control.observations import low_dim_parts

    observations = (ObservationSpec("gripper", (1,)), ObservationSpec("image", (3, 16, 16), "image"),
                    ObservationSpec("arm", (3,)))
    config = SimpleNamespace(obs_dim=4, observations=observations)
    parts = low_dim_parts(config, [1.0, 2.0, 3.0, 4.0])
    assert list(parts) == ["gripper", "arm"]
    assert np.array_equal(parts["gripper"], [1.0]) and np.array_equal(parts["arm"], [2.0, 3.0, 4.0])


def test_the_warm_up_window_repeats_the_middle_values_and_mid_grey_frames():
    from image_policy import image_policy_config

    from paradigms_policy.control.observations import neutral_window

    low_dim = neutral_window(PolicyConfig.for_shapes(3, 2), [1.0, 2.0, 3.0])
    assert low_dim.dtype == np.float32 and np.array_equal(low_dim, [[1.0, 2.0, 3.0]] * 2)
    window = neutral_window(image_policy_config(), [256.0, 128.0])
    assert window["image"].shape == (2, 3, 96, 96) and np.all(window["image"] == 0.5)
    assert np.array_equal(window["agent_pos"], [[256.0, 128.0]] * 2)
