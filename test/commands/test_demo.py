"""`paradigms-policy demo`, the README's main job: both nodes over real DDS on loopback, one short episode."""
import json
import os

import pytest
import torch

from paradigms_policy.checkpoint import save_policy

from conftest import pixel_normalizers, small_config, small_model

pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' or source a ROS 2 install)")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")

pytestmark = pytest.mark.dds


def test_demo_runs_an_episode_and_reports_score_and_latency(tmp_path, capsys, monkeypatch):
    from paradigms_policy.commands.cli import main

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    config = small_config()
    checkpoint = save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())
    code = main(["demo", "--checkpoint", str(checkpoint), "--episodes", "1", "--max-steps", "12",
                 "--domain-id", str(1 + (os.getpid() + 37) % 100)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "episode 1/1 seed 100000: score" in out and "12 steps" in out
    assert "mean score" in out and "latency per chunk: inference p50" in out
    if not torch.cuda.is_available():  # no GPU: the default parameter files end with the CPU overlay
        assert "policy_cpu.yaml" in out


def test_lockstep_demo_reproduces_the_eval_rollout(tmp_path, monkeypatch):
    """On simulated time both nodes execute chunks as `eval` does: with the same seeded noise, the
    same episode, one step later (the demo's first step waits for the policy's second observation)."""
    from paradigms_policy.checkpoint import load_policy
    from paradigms_policy.commands.cli import main
    from paradigms_policy.resources import config_dir
    from paradigms_policy.commands.evaluate import run_episode

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    config = small_config()
    checkpoint = save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text("policy_node:\n  ros__parameters:\n    seed: 100028\n")
    report = tmp_path / "demo.json"
    configs = config_dir()
    code = main(["demo", "--lockstep", "--checkpoint", str(checkpoint), "--sampler", "sequential",
                 "--episodes", "1", "--seed", "100028", "--max-steps", "17", "--json", str(report),
                 "--params-file", str(configs / "policy.yaml"), "--params-file", str(configs / "pusht_sim.yaml"),
                 "--params-file", str(seeded), "--domain-id", str(1 + (os.getpid() + 53) % 100)])
    assert code == 0
    summary = json.loads(report.read_text())
    assert summary["lockstep"] and summary["deadline_misses"] == 0
    episode = summary["per_episode"][0]
    assert (episode["steps"], episode["held_steps"], episode["chunks"]) == (17, 1, 2)

    expected = run_episode(load_policy(checkpoint), seed=100028, max_steps=16)
    assert expected["chunks"] == 2 and expected["max_coverage"] > 0.5  # seed chosen so that the T is pushed
    assert episode["max_coverage"] == pytest.approx(expected["max_coverage"], abs=1e-9)
    assert episode["score"] == pytest.approx(expected["score"], abs=1e-9)
