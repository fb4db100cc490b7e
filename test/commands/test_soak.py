"""A short soak run: the policy node, the observation publisher and the memory sampling end to end."""
import argparse
import json
import os
import sys
import time

import pytest

from paradigms_policy.commands.soak import add_arguments, pusht_observation, run

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

# A domain of its own, away from test_policy_node's 1 + pid % 100.
DOMAIN_ID = 101 + os.getpid() % 100


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_observations_differ_from_cycle_to_cycle_and_stay_on_the_table():
    first, second = pusht_observation(0, 50.0), pusht_observation(1, 50.0)
    assert first.shape == (20,) and (first != second).any()
    assert ((first > 0) & (first < 512)).all()


@pytest.mark.dds
def test_short_soak_writes_summary(tmp_path, capsys):
    pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                        "or source a ROS 2 install)")
    out = tmp_path / "soak.json"
    started = time.monotonic()
    code = run(parse(["--random-tiny", "--cycles", "100", "--rate", "25", "--sample-every", "10",
                           "--sampler", "sequential", "--domain-id", str(DOMAIN_ID), "--json", str(out),
                           "--quiet"]))
    assert code == 0
    assert time.monotonic() - started < 15
    document = json.loads(out.read_text())
    summary, samples = document["summary"], document["samples"]
    assert summary["cycles"] == 100 and 0 < summary["observations_received"] <= 100
    assert summary["observations_received"] == summary["observations_accepted"] + summary["observations_rejected"]
    assert summary["trajectories_received"] > 0 and summary["chunks_published"] >= summary["trajectories_received"]
    assert summary["deadline_misses"] == summary["miss_late"] + summary["miss_no_time"] + summary["miss_outdated"]
    assert (summary["sampler"], summary["window"], summary["tolerance"]) == ("sequential", "n/a", None)
    assert summary["warmup_cycles"] == 10
    assert summary["rss_source"] == ("VmRSS" if sys.platform == "linux" else "ru_maxrss (peak)")
    assert 0 < summary["rss_min_mib"] <= summary["rss_start_mib"] <= summary["rss_max_mib"]
    assert summary["rss_min_mib"] <= summary["rss_end_mib"] <= summary["rss_max_mib"]
    assert isinstance(summary["rss_slope_kib_per_1000_cycles"], float)
    assert summary["verdict"].startswith("verdict:")
    assert [s["cycle"] for s in samples] == list(range(0, 101, 10))
    assert all(s["rss_kib"] > 0 for s in samples)
    assert summary["verdict"] in capsys.readouterr().out


def test_bad_arguments_exit_2():
    assert run(parse(["--random-tiny", "--cycles", "0"])) == 2
    assert run(parse(["--random-tiny", "--rate", "-1"])) == 2
