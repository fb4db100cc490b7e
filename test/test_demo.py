"""`paradigms-policy demo`, the README's main job: both nodes over real DDS on loopback, one short episode."""
import os

import pytest
import torch

from paradigms_policy.checkpoint import save_policy

from conftest import pixel_normalizers, small_config, small_model

pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' or source a ROS 2 install)")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")


def test_demo_runs_an_episode_and_reports_score_and_latency(tmp_path, capsys, monkeypatch):
    from paradigms_policy.cli import main

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
