"""`paradigms-policy demo` with an image policy: the simulation publishes its camera frames and the agent
position, the policy node pairs them by stamp, both over real DDS on loopback."""
import json
import os

import numpy as np
import pytest

from image_policy import save_image_policy

pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' or source a ROS 2 install)")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")

pytestmark = pytest.mark.dds
# A random tiny image policy pushes the T on this seed, and its rollout depends on the frames' colours.
SEED = 100030


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_image_policy(tmp_path_factory.mktemp("ckpt") / "tiny_image")


def test_lockstep_image_demo_reproduces_the_eval_rollout(checkpoint, tmp_path, monkeypatch):
    """On simulated time the node sees evaluation's inputs (`image_input` of `env.frame()`, the agent
    position) and executes chunks as `eval` does: the same episode, one step later (the demo's first
    step waits for the policy's second observation)."""
    from paradigms_policy.checkpoint import load_policy
    from paradigms_policy.commands import evaluate
    from paradigms_policy.commands.cli import main
    from paradigms_policy.resources import config_dir
    from paradigms_policy.vision import image_input

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text(f"policy_node:\n  ros__parameters:\n    seed: {SEED}\n")
    report = tmp_path / "demo.json"
    configs = config_dir()
    code = main(["demo", "--lockstep", "--checkpoint", str(checkpoint), "--sampler", "sequential",
                 "--episodes", "1", "--seed", str(SEED), "--max-steps", "17", "--json", str(report),
                 "--params-file", str(configs / "policy.yaml"), "--params-file", str(configs / "pusht_sim.yaml"),
                 "--params-file", str(seeded), "--domain-id", str(1 + (os.getpid() + 59) % 100)])
    assert code == 0
    summary = json.loads(report.read_text())
    assert summary["lockstep"] and summary["observation"] == "image"
    assert (summary["deadline_misses"], summary["frames_rejected"]) == (0, 0)
    episode = summary["per_episode"][0]
    assert (episode["steps"], episode["held_steps"], episode["chunks"]) == (17, 1, 2)

    expected = evaluate.run_episode(load_policy(checkpoint), seed=SEED, max_steps=16)
    assert expected["chunks"] == 2 and expected["max_coverage"] > 0.02  # the T is pushed into the goal
    assert episode["max_coverage"] == pytest.approx(expected["max_coverage"], abs=1e-9)
    assert episode["score"] == pytest.approx(expected["score"], abs=1e-9)
    # The match means something: fed channel-swapped frames, evaluation's rollout ends elsewhere.
    monkeypatch.setattr(evaluate, "image_input", lambda frame: image_input(np.ascontiguousarray(frame[..., ::-1])))
    swapped = evaluate.run_episode(load_policy(checkpoint), seed=SEED, max_steps=16)
    assert abs(swapped["max_coverage"] - expected["max_coverage"]) > 1e-3


def test_image_demo_runs_in_real_time(checkpoint, capsys, monkeypatch):
    from paradigms_policy.commands.cli import main

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    code = main(["demo", "--checkpoint", str(checkpoint), "--episodes", "1", "--max-steps", "12",
                 "--domain-id", str(1 + (os.getpid() + 47) % 100)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "observing 96x96 frames on 'image' and the agent position" in out
    assert "episode 1/1 seed 100000: score" in out and "12 steps" in out
    assert "0 observations rejected, 0 frames rejected" in out
    published = int(out.split(" chunks published")[0].rsplit(" ", 1)[-1])
    assert published >= 1, out
