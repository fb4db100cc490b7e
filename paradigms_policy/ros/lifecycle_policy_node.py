"""`lifecycle_policy_node`: the policy node as a managed (lifecycle) node.

The same parameters, topics and behaviour as `policy_node` (the code is shared, policy_core.py);
what differs is when each part happens, driven over `<node>/change_state` (`ros2 lifecycle set`,
or launch with lifecycle:=true, whose autostart configures and activates it):

    unconfigured  parameters declared; nothing loaded
    configure     reads the parameters, loads and checks the checkpoint, warms up (CUDA graphs
                  captured), creates the topics, starts the inference thread -> inactive
                  (a bad parameter or checkpoint fails the transition: it stays unconfigured)
    activate      accepts observations and publishes trajectories -> active
    deactivate    stops publishing at once and drops the running chunk (the controller holds the
                  last point it got) and the buffered observations -> inactive
    cleanup       stops the inference thread, destroys the topics, releases the model -> unconfigured
    shutdown      as cleanup, from any state -> finalized

SIGINT or SIGTERM end the process at any moment, as for `policy_node`.
"""
from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..control.parameters import POLICY_NODE_PARAMETERS
from ..control.sampling import ChunkAbandoned
from .common import StartupError, parameter_values, run_node
from .policy_core import PolicyBehaviour

SUMMARY = ("lifecycle_policy_node: policy_node as a managed node; configure loads and warms up the policy, "
           "activate publishes, deactivate stops publishing at once, cleanup and shutdown release the model.")


class LifecyclePolicyNode(PolicyBehaviour, LifecycleNode):
    """The policy node as a lifecycle node (see the module docstring). Starts unconfigured."""

    def __init__(self, node_name: str = "policy_node", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self._init_behaviour()
        try:
            self._declare_values()
        except BaseException:
            self.destroy_node()
            raise
        self.get_logger().info("unconfigured: configure loads the policy, activate starts publishing")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._stopping.is_set():
            return TransitionCallbackReturn.FAILURE
        try:
            self._bring_up(self._current_values())
        except ChunkAbandoned:  # the process is stopping (its stop was logged)
            self._release()
            return TransitionCallbackReturn.FAILURE
        except StartupError as err:
            self._release()
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def _current_values(self) -> dict:
        values = parameter_values(self, POLICY_NODE_PARAMETERS)  # as set while unconfigured
        self._check_values(values)
        return values

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._set_active(True)
        self.get_logger().info("active: publishing trajectories")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._set_active(False)
        self.get_logger().info("inactive: publishing stopped, the running chunk dropped")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: the model is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS



def main(args: list[str] | None = None) -> int:
    """`ros2 run paradigms_policy lifecycle_policy_node [--ros-args --params-file config/policy.yaml ...]`."""
    return run_node(LifecyclePolicyNode, "lifecycle_policy_node", args, SUMMARY, POLICY_NODE_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
