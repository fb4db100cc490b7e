"""control/parameters.py: the nodes' parameters, their validation, and the shipped parameter files."""
from pathlib import Path

import pytest
import yaml

from paradigms_policy.control.parameters import (POLICY_NODE_PARAMETERS, SIM_NODE_PARAMETERS, spec_defaults,
                                                 validate_against_policy, validate_policy_parameters,
                                                 validate_sim_parameters)
from paradigms_policy.samplers import SAMPLERS, paradigms, parataa

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS = {spec.name: spec for spec in POLICY_NODE_PARAMETERS}


def test_parameter_validation_messages():
    values = spec_defaults(POLICY_NODE_PARAMETERS)
    assert validate_policy_parameters(values) == []
    problems = validate_policy_parameters(dict(values, window=-1))
    assert any("window must be >= 0" in p for p in problems)
    bad = dict(values, sampler="fast", device="gpu", joint_names=["x", "x"], action_min=[1.0, 600.0],
               real_time_chunking_overlap="blend")
    text = "; ".join(validate_policy_parameters(bad))
    for fragment in ("sampler must be one of sequential, paradigms, parataa (got 'fast')", "device must be",
                     "joint_names must be unique", "action_min must be below action_max",
                     "real_time_chunking_overlap must be one of hard, soft, guided (got 'blend')"):
        assert fragment in text
    assert "control_rate must be of type float" in validate_policy_parameters(dict(values, control_rate="x"))[0]
    assert validate_against_policy(values, action_dim=2, horizon=16, n_obs_steps=2, checkpoint_n_action_steps=8) == []
    problems = validate_against_policy(dict(values, joint_names=["a"], n_action_steps=20), 2, 16, 2, 8)
    assert any("joint_names has 1 entries" in p for p in problems)
    assert any("n_action_steps 20 exceeds" in p for p in problems)
    problems = validate_against_policy(dict(values, deadline_ms=700.0), 2, 16, 2, 8)
    assert problems and "deadline_ms 700 must be below" in problems[0]
    assert validate_sim_parameters(spec_defaults(SIM_NODE_PARAMETERS)) == []
    too_long = dict(spec_defaults(SIM_NODE_PARAMETERS), max_steps=301)
    assert "max_steps must be <= 300" in validate_sim_parameters(too_long)[0]


@pytest.mark.parametrize("tolerance, valid", [(-1.0, True), (0.0, True), (2e-4, True), (-0.5, False), (-2.0, False)])
def test_tolerance_is_the_sampler_default_or_non_negative(tolerance, valid):
    problems = validate_policy_parameters(dict(spec_defaults(POLICY_NODE_PARAMETERS), tolerance=tolerance))
    assert (problems == []) == valid, problems


def test_sampler_parameters_default_to_parataa_with_each_samplers_own_options():
    assert SPECS["sampler"].default == "parataa" and not SPECS["sampler"].read_only
    assert (SPECS["window"].default, SPECS["window"].minimum) == (0, 0)
    assert (SPECS["tolerance"].default, SPECS["tolerance"].minimum) == (-1.0, -1.0)
    for name in SAMPLERS:
        assert name in SPECS["sampler"].description
    # The descriptions give each sampler's default and unit.
    assert f"paradigms: {paradigms.DEFAULT_WINDOW}, parataa: the whole chain" in SPECS["window"].description
    tolerance = SPECS["tolerance"].description
    assert f"paradigms: {paradigms.DEFAULT_TOLERANCE:g}, parataa: {parataa.DEFAULT_TOLERANCE:g}" in tolerance
    assert "noise std" in tolerance and "normalised action units" in tolerance


@pytest.mark.parametrize("file_name, node_name, specs", [
    ("policy.yaml", "policy_node", POLICY_NODE_PARAMETERS),
    ("pusht_sim.yaml", "pusht_sim_node", SIM_NODE_PARAMETERS),
])
def test_config_files_match_declared_defaults(file_name, node_name, specs):
    document = yaml.safe_load((REPO_ROOT / "config" / file_name).read_text())
    values = document[node_name]["ros__parameters"]
    defaults = spec_defaults(specs)
    assert values == defaults
    for name, value in values.items():  # same ROS parameter type (a YAML 10 would be an integer)
        assert type(value) is type(defaults[name]), name


def test_cpu_overlay_sets_only_declared_parameters_with_valid_values():
    overlay = yaml.safe_load((REPO_ROOT / "config" / "policy_cpu.yaml").read_text())["policy_node"]["ros__parameters"]
    defaults = spec_defaults(POLICY_NODE_PARAMETERS)
    assert overlay == {"scheduler": "ddim", "num_inference_steps": 16}
    for name, value in overlay.items():
        assert type(value) is type(defaults[name]), name
    assert validate_policy_parameters({**defaults, **overlay}) == []


def test_lockstep_overlay_sets_declared_parameters_of_both_nodes():
    overlay = yaml.safe_load((REPO_ROOT / "config" / "lockstep.yaml").read_text())
    policy, sim = overlay["policy_node"]["ros__parameters"], overlay["pusht_sim_node"]["ros__parameters"]
    policy_defaults = dict(spec_defaults(POLICY_NODE_PARAMETERS), use_sim_time=False)  # rclpy declares use_sim_time
    sim_defaults = spec_defaults(SIM_NODE_PARAMETERS)
    assert policy == {"use_sim_time": True, "plan_ahead_periods": 0, "auto_round_cap": False, "real_time_chunking": False}
    assert sim == {"lockstep": True}
    for values, defaults in ((policy, policy_defaults), (sim, sim_defaults)):
        for name, value in values.items():
            assert type(value) is type(defaults[name]), name
    assert validate_sim_parameters({**sim_defaults, **sim}) == []


def test_camera_parameters_are_checked_against_the_policy():
    from image_policy import image_policy_config

    from paradigms_policy.config import PolicyConfig
    from paradigms_policy.control.parameters import validate_cameras

    values = spec_defaults(POLICY_NODE_PARAMETERS)
    assert (values["image_topics"], values["image_stamp_tolerance_ms"]) == ([], 20.0)
    assert SPECS["image_stamp_tolerance_ms"].minimum == 0.0 and SPECS["image_topics"].read_only
    two = image_policy_config(cameras=(("left", (3, 24, 32)), ("right", (3, 24, 32))), crop_shape=None)
    assert validate_cameras(values, two) == []
    assert validate_cameras(dict(values, image_topics=["cam/left", "cam/right"]), two) == []
    assert validate_cameras(values, PolicyConfig()) == []
    problems = validate_cameras(dict(values, image_topics=["cam/left"]), two)
    assert problems == ["image_topics has 1 entries but the policy has the image keys ['left', 'right']"]
    assert "needs observation_type joint_state" in validate_cameras(
        dict(values, observation_type="float32_multi_array"), two)[0]
    assert "the policy takes no images" in validate_cameras(dict(values, image_topics=["image"]), PolicyConfig())[0]
    mono = image_policy_config(cameras=(("depth", (1, 24, 32)),), crop_shape=None)
    assert "rgb8 or bgr8 frames (3 channels), the image keys have {'depth': 1}" in validate_cameras(values, mono)[0]
    for topics in (["a", "a"], ["a", " "]):
        problems = validate_policy_parameters(dict(values, image_topics=topics))
        assert "image_topics must be distinct non-empty" in problems[0]


def test_sim_observation_parameters():
    values = spec_defaults(SIM_NODE_PARAMETERS)
    assert (values["observation"], values["image_topic"], values["image_size"]) == ("keypoints", "image", 96)
    assert validate_sim_parameters(dict(values, observation="image")) == []
    assert "observation must be one of keypoints, image" in validate_sim_parameters(dict(values, observation="rgb"))[0]
    unstamped = dict(values, observation="image", observation_type="float32_multi_array")
    assert "observation image needs observation_type joint_state" in validate_sim_parameters(unstamped)[0]
    assert "image_topic must not be empty" in validate_sim_parameters(dict(values, image_topic=""))[0]
