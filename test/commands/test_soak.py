"""A short soak run: the policy node, the observation publisher and the memory sampling end to end."""
import argparse
import json
import os
import time

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                    "or source a ROS 2 install)")

from paradigms_policy.commands.soak import add_soak_arguments, pusht_observation, run_soak, slope_per_1000

# A domain of its own, away from test_policy_node's 1 + pid % 100.
DOMAIN_ID = 101 + os.getpid() % 100


def parse(argv):
    parser = argparse.ArgumentParser()
    add_soak_arguments(parser)
    return parser.parse_args(argv)


def test_slope_and_observation():
    assert slope_per_1000([0, 1000, 2000], [10.0, 20.0, 30.0]) == pytest.approx(10.0)
    assert slope_per_1000([5], [1.0]) is None
    first, second = pusht_observation(0, 50.0), pusht_observation(1, 50.0)
    assert first.shape == (20,) and (first != second).any()
    assert ((first > 0) & (first < 512)).all()


def test_short_soak_writes_summary(tmp_path, capsys):
    out = tmp_path / "soak.json"
    started = time.monotonic()
    code = run_soak(parse(["--random-tiny", "--cycles", "100", "--rate", "25", "--sample-every", "10",
                           "--sampler", "sequential", "--domain-id", str(DOMAIN_ID), "--json", str(out),
                           "--quiet"]))
    assert code == 0
    assert time.monotonic() - started < 15
    document = json.loads(out.read_text())
    summary, samples = document["summary"], document["samples"]
    assert summary["cycles"] == 100 and summary["observations_received"] > 0
    assert summary["trajectories_received"] > 0 and summary["chunks_published"] >= summary["trajectories_received"]
    for key in ("rss_start_mib", "rss_end_mib", "rss_slope_kib_per_1000_cycles", "deadline_misses",
                "observations_rejected", "verdict"):
        assert key in summary
    assert summary["rss_start_mib"] > 0 and summary["verdict"].startswith("verdict:")
    assert samples[0]["cycle"] == 0 and samples[-1]["cycle"] == 100
    assert all(s["rss_kib"] > 0 for s in samples)
    assert "verdict:" in capsys.readouterr().out


def test_bad_arguments_exit_2():
    assert run_soak(parse(["--random-tiny", "--cycles", "0"])) == 2
    assert run_soak(parse(["--random-tiny", "--rate", "-1"])) == 2
