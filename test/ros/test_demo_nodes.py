"""ros/demo_nodes.py: both nodes in one process, episode by episode, over real DDS on loopback."""
import os

import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' or source a ROS 2 install)")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")

from paradigms_policy.checkpoint import save_policy  # noqa: E402
from paradigms_policy.resources import default_params_files  # noqa: E402
from paradigms_policy.ros.common import StartupError  # noqa: E402
from paradigms_policy.ros.demo_nodes import DemoNodes  # noqa: E402

from conftest import pixel_normalizers, small_config, small_model  # noqa: E402

pytestmark = pytest.mark.dds
DOMAIN_ID = 1 + (os.getpid() + 83) % 100


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = small_config()
    return str(save_policy(tmp_path_factory.mktemp("ckpt") / "tiny", config, small_model(config=config),
                           *pixel_normalizers()))


def test_each_episode_comes_with_the_chunks_planned_during_it(checkpoint):
    policy = {"checkpoint": checkpoint, "sampler": "sequential", "num_threads": 1, "warmup_runs": 1}
    sim = {"episodes": 2, "seed": 100003, "max_steps": 8, "reset_pause_s": 0.6}
    nodes = DemoNodes(default_params_files(on_cpu=True), policy, sim, domain_id=DOMAIN_ID)
    try:
        assert nodes.session.domain_id == DOMAIN_ID and nodes.sim_parameters("max_steps", "seed", "observation") == \
            {"max_steps": 8, "seed": 100003, "observation": "keypoints"}
        with pytest.raises(TimeoutError, match="timed out after 0 of 2 episode"):
            next(nodes.episodes(2, timeout_s=0.0))
        episodes = list(nodes.episodes(2, timeout_s=60.0))
        assert [result["seed"] for result, _ in episodes] == [100003, 100004]
        assert all(result["steps"] == 8 for result, _ in episodes)
        # Every chunk record is in exactly one episode, in the order they were logged.
        records = [record for _, chunks in episodes for record in chunks]
        assert all(chunks for _, chunks in episodes)
        assert records == nodes.policy.ledger.records()[:len(records)]
        stamps = [record["stamp_ns"] for record in records]
        assert stamps == sorted(stamps)
    finally:
        nodes.close()
    assert not nodes.session.context.ok()


def test_a_node_that_cannot_start_fails_with_a_startup_error(checkpoint):
    with pytest.raises(StartupError, match="invalid parameter 'max_steps'.*out of range"):
        DemoNodes(default_params_files(on_cpu=True), {"checkpoint": checkpoint, "warmup_runs": 0},
                  {"max_steps": 301}, domain_id=DOMAIN_ID)


def test_the_simulation_publishes_what_the_policy_observes(tmp_path):
    from image_policy import image_policy_config, save_image_policy

    image = str(save_image_policy(tmp_path / "image"))
    nodes = DemoNodes(default_params_files(on_cpu=True), {"checkpoint": image, "warmup_runs": 0}, {"episodes": 1},
                      domain_id=DOMAIN_ID)
    try:
        assert nodes.sim_parameters("observation", "image_topic", "image_size") == \
            {"observation": "image", "image_topic": "image", "image_size": 96}
    finally:
        nodes.close()
    two = image_policy_config(cameras=(("left", (3, 96, 96)), ("right", (3, 96, 96))))
    with pytest.raises(StartupError, match="one square camera and the agent position"):
        DemoNodes(default_params_files(on_cpu=True), {"checkpoint": str(save_image_policy(tmp_path / "two", two)),
                                                     "warmup_runs": 0}, {}, domain_id=DOMAIN_ID)
