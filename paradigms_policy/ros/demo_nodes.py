"""The demo's nodes: the policy node and the Push-T simulation node in one process, over DDS on this host;
the simulation publishes keypoints, or for an image policy its camera frames and the agent position."""
from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

from .common import LocalSession, StartupError, parameter_overrides
from .policy_node import PolicyNode
from .pusht_sim_node import PushTSimNode


def sim_observation(policy: PolicyNode) -> dict[str, Any]:
    """The simulation's observation parameters for the policy node's policy: keypoints, or for an image
    policy its camera's frames (topic, size) and the agent position; StartupError if it needs more than
    Push-T's one square camera and two low-dim values."""
    config, cameras = policy.policy.config, policy.cameras
    if not cameras:
        return {"observation": "keypoints"}
    if len(cameras) != 1 or config.obs_dim != 2 or cameras[0].height != cameras[0].width:
        raise StartupError("the Push-T simulation has one square camera and the agent position (2 values); this "
                           f"policy observes {[(spec.key, list(spec.shape)) for spec in config.observations]}")
    return {"observation": "image", "image_topic": cameras[0].topic, "image_size": cameras[0].height}


class DemoNodes:
    """`PolicyNode` and `PushTSimNode` on one `LocalSession`, configured from ROS 2 parameter files.

    `policy_overrides` and `sim_overrides` ({name: value}) take precedence over the files; the
    simulation publishes what the loaded policy observes (`sim_observation`). Raises `StartupError`
    when a node cannot start (the session is then closed); otherwise both nodes spin until `close`.
    """

    def __init__(self, params_files: Sequence[str], policy_overrides: dict[str, Any], sim_overrides: dict[str, Any],
                 domain_id: int | None = None):
        cli_args = ["--ros-args"] + [arg for path in params_files for arg in ("--params-file", str(path))]
        self.session = LocalSession(domain_id, name="demo")
        try:
            self.policy = self.session.add(PolicyNode(context=self.session.context, cli_args=cli_args,
                                                      parameter_overrides=parameter_overrides(policy_overrides)))
            sim_overrides = dict(sim_overrides, **sim_observation(self.policy))
            self.sim = self.session.add(PushTSimNode(context=self.session.context, cli_args=cli_args,
                                                     parameter_overrides=parameter_overrides(sim_overrides)))
        except BaseException:
            self.session.close()
            raise
        self.session.start()

    def sim_parameters(self, *names: str) -> dict[str, Any]:
        """The simulation node's values of these parameters."""
        return {name: self.sim.get_parameter(name).value for name in names}

    def episodes(self, count: int, timeout_s: float) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(result, chunk records logged since the previous episode) of each of the first `count` episodes,
        as they finish; TimeoutError when they have not all finished within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        reported = 0
        logged = 0
        while reported < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {reported} of {count} episode(s)")
            self.sim.finished.wait(0.2)
            while reported < min(count, len(self.sim.results)):
                chunks, logged = self.policy.ledger.records_since(logged)
                yield self.sim.results[reported], chunks
                reported += 1

    def close(self) -> None:
        self.session.close()
