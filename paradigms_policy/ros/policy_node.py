"""`policy_node`: a Diffusion Policy as a ROS 2 node that turns observations into timed trajectories.

    observation (sensor_msgs/JointState, stamped; or std_msgs/Float32MultiArray, unstamped)
        --subscription: check, buffer the last n_obs_steps-->  worker thread: policy.predict
        --> joint_trajectory (trajectory_msgs/JointTrajectory, reliable)   + /diagnostics

Topics (names relative, so remappable, except /diagnostics):
    observation       subscribed, sensor-data QoS (best effort, keep last 5; accepts reliable
                      publishers too); JointState.position is the observation vector and
                      header.stamp its time; Float32MultiArray.data when observation_type is
                      float32_multi_array (unstamped: arrival time, no age/order checks)
    image (per camera) image policies: subscribed, sensor-data QoS, sensor_msgs/Image rgb8 or
                      bgr8 of each image key's size, on image_topics (default: the key's name);
                      the JointState's position holds the low-dim keys, and each window step is
                      a joint state with a frame of every camera stamped within
                      image_stamp_tolerance_ms of it (ros/image_inputs.py)
    joint_trajectory  published, reliable, volatile, keep last 10
    /diagnostics      published, diagnostic_msgs/DiagnosticArray, reliable, at diagnostics_rate

Shutdown: SIGINT or SIGTERM at any moment (checkpoint load, warm-up, inference, idle) ends the
process with exit code 0 and one log line; the running chunk is dropped within one network
evaluation and the inference thread joined; later signals are ignored (`common.run_node`).
`--help` prints the parameters. `lifecycle_policy_node` is the same node as a managed node.

Threads: the subscription callback only checks an observation and appends it to the window; the
inference runs on a worker thread of its own, so the executor keeps its rate while it runs. The
executor is single-threaded: every callback is short, and on a 2-core machine rclpy's
MultiThreadedExecutor delivered messages 40 ms late at the median (up to seconds) where the
single-threaded one took under 1 ms.

Timing (see `control.timing` for the conventions): action k of a chunk planned from the observation
stamped s is due at s + k / control_rate. When the chunk is ready at r, the actions due before r
are dropped, header.stamp is the due time of the first kept action and time_from_start grows by one
period per point. A chunk ready after s + deadline_ms is a deadline miss: it is counted and not
published, and the previous trajectory runs out (the controller holds its last point).

Sampler: `sampler` names a registered sampler (default parataa); for a parallel one (ParaDiGMS,
ParaTAA) `window` 0 and `tolerance` -1 take that sampler's own defaults and any other value is
passed to it (`control.sampling`); on CUDA the window has a fixed shape, so the denoiser's CUDA
graph captured at start-up serves every round. The options in use are in the statistics.

Round cap: for a parallel sampler the rounds of a chunk are capped at
min(round_cap if > 0, auto cap); with auto_round_cap the auto cap is the number of rounds that fit
in the time left until the deadline minus a 10% margin, from the measured time per round (90th
percentile of the last 10 chunks, seeded by the start-up warm-up). If not one round fits, the
inference is skipped and counted as a miss. The sequential sampler cannot be capped.

When to plan: the worker plans for the newest observation when no chunk is running, or when
waiting for the next observation would let the running chunk end before a new one can arrive
(expected arrival = the recent observation-to-ready latency, at most the deadline). The window's
observations must be at most 1.5 periods apart (the policy was trained on consecutive steps), so
after a gap, e.g. a simulation reset, the node waits for n_obs_steps fresh observations.
"""
from __future__ import annotations

import sys

from rclpy.node import Node

from ..control.parameters import POLICY_NODE_PARAMETERS
from .common import run_node
from .policy_core import PolicyBehaviour

SUMMARY = ("policy_node: a Diffusion Policy as a ROS 2 node; observations on 'observation' (sensor_msgs/JointState), "
           "for an image policy camera frames (sensor_msgs/Image) on 'image_topics', timed trajectories on "
           "'joint_trajectory' (trajectory_msgs/JointTrajectory), status on /diagnostics.")


class PolicyNode(PolicyBehaviour, Node):
    """The policy node. Parameters come from the parameter file / overrides (see `POLICY_NODE_PARAMETERS`).

    `policy` (optional) is an already loaded `DiffusionPolicy` to use instead of loading the
    `checkpoint` parameter (tests, embedding). Raises `StartupError` with a one-line message when
    a parameter is invalid or the checkpoint cannot be used; the node is then already destroyed.
    `ledger` holds the counters and the recent chunk records; `statistics()` sums them up.
    """

    def __init__(self, node_name: str = "policy_node", *, policy=None, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self._init_behaviour()
        try:
            self._bring_up(self._declare_values(), policy)
            self._set_active(True)
        except BaseException:
            self.destroy_node()
            raise


def main(args: list[str] | None = None) -> int:
    """`ros2 run paradigms_policy policy_node [--ros-args --params-file config/policy.yaml ...]`."""
    return run_node(PolicyNode, "policy_node", args, SUMMARY, POLICY_NODE_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
