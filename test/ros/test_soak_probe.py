"""ros/soak_probe.py: the policy node fed by the probe, over real DDS on loopback."""
import os
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' or source a ROS 2 install)")

from paradigms_policy.checkpoint import save_policy  # noqa: E402
from paradigms_policy.config import SchedulerConfig  # noqa: E402
from paradigms_policy.ros.soak_probe import SoakProbe  # noqa: E402

from conftest import pixel_normalizers, small_config, small_model, wait_for  # noqa: E402

pytestmark = pytest.mark.dds
DOMAIN_ID = 1 + (os.getpid() + 91) % 100


def test_the_probe_feeds_the_node_and_counts_what_comes_back(tmp_path):
    config = small_config(SchedulerConfig(name="ddim", num_inference_steps=10))
    checkpoint = save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())
    probe = SoakProbe({"checkpoint": str(checkpoint), "sampler": "parataa", "control_rate": 20.0, "deadline_ms": 300.0,
                       "num_threads": 1, "warmup_runs": 1, "diagnostics_rate": 10.0}, domain_id=DOMAIN_ID)
    try:
        assert probe.wait_for_discovery(10.0)
        for k in range(10):
            probe.publish(np.full(20, 250.0 + k))
            time.sleep(0.05)
        node = probe.node
        assert wait_for(lambda: node.statistics()["observations_received"] == 10)
        stats = node.statistics()
        assert stats["observations_accepted"] == 10 and stats["sampler"] == "parataa"
        assert wait_for(lambda: probe.counts["trajectories"] == node.statistics()["chunks_published"] >= 1)
        assert wait_for(lambda: probe.counts["diagnostics"] >= 2)
        counts = probe.counts
        assert counts["diagnostics_ok"] + counts["diagnostics_warn"] + counts["diagnostics_error"] == counts["diagnostics"]
        assert counts["diagnostics_error"] == 0
    finally:
        probe.close()
    assert not probe.session.context.ok()
