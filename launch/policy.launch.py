"""Start the Diffusion Policy node, and optionally the Push-T simulation, with the package's parameter files.

    ros2 launch paradigms_policy policy.launch.py
    ros2 launch paradigms_policy policy.launch.py use_sim:=true sampler:=sequential
    ros2 launch paradigms_policy policy.launch.py checkpoint:=/path/to/ckpt params_file:=/path/to/my.yaml
    ros2 launch paradigms_policy policy.launch.py use_sim:=true cpu_profile:=true   # no GPU
    ros2 launch paradigms_policy policy.launch.py use_sim:=true lockstep:=true      # as `eval` executes
    ros2 launch paradigms_policy policy.launch.py lifecycle:=true autostart:=false  # drive it: ros2 lifecycle set

Arguments:
    checkpoint   policy checkpoint; empty (default) keeps the params file's value, whose empty
                 string means the shipped Push-T checkpoint
    sampler      sequential, paradigms or parataa; empty (default) keeps the params file's value
                 (config/policy.yaml: parataa, with each sampler's own window and tolerance)
    use_sim      also start pusht_sim_node (config/pusht_sim.yaml)
    params_file  parameter file of the policy node (default: config/policy.yaml of this package);
                 the simulation node reads config/pusht_sim.yaml and then this file, so one file
                 may configure both nodes
    cpu_profile  also load config/policy_cpu.yaml after params_file: DDIM-16 sampling, which meets
                 the deadline on a CPU where the checkpoint's DDPM-100 does not
    lockstep     also load config/lockstep.yaml into both nodes, last: the simulation runs on
                 simulated time (/clock) and waits for each chunk, the policy node follows that
                 clock (use_sim_time); for use_sim:=true
    lifecycle    start lifecycle_policy_node (a managed node, same parameters) instead of policy_node
    autostart    with lifecycle:=true: configure it on start and activate it once inactive (default
                 true); false leaves it unconfigured for `ros2 lifecycle set /policy_node ...`
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "paradigms_policy"
TRUE_WORDS = ("true", "1", "yes", "on")


def _config(name):
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def _flag(context, name):
    return LaunchConfiguration(name).perform(context).strip().lower() in TRUE_WORDS


def _policy_node(context, parameters):
    """policy_node, or lifecycle_policy_node with (autostart) the events that configure and activate it."""
    if not _flag(context, "lifecycle"):
        return [Node(package=PACKAGE, executable="policy_node", name="policy_node", output="screen",
                     parameters=parameters)]
    node = LifecycleNode(package=PACKAGE, executable="lifecycle_policy_node", name="policy_node", namespace="",
                         output="screen", parameters=parameters)
    if not _flag(context, "autostart"):
        return [node]
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=lambda action: action is node,
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=lambda action: action is node,
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    return [activate, node, configure]


def _nodes(context, *args, **kwargs):
    """The nodes, built once the launch arguments are known (empty arguments are not passed on)."""
    params_file = LaunchConfiguration("params_file").perform(context) or _config("policy.yaml")
    overrides = {}
    for name in ("checkpoint", "sampler"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    cpu_profile = _flag(context, "cpu_profile")
    lockstep = [_config("lockstep.yaml")] if _flag(context, "lockstep") else []
    policy_parameters = [params_file] + ([_config("policy_cpu.yaml")] if cpu_profile else []) + lockstep \
        + ([overrides] if overrides else [])
    actions = _policy_node(context, policy_parameters)
    if _flag(context, "use_sim"):
        actions.append(
            Node(package=PACKAGE, executable="pusht_sim_node", name="pusht_sim_node", output="screen",
                 parameters=[_config("pusht_sim.yaml"), params_file] + lockstep))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="Policy checkpoint; empty = the params file's value "
                                          "(whose empty string means the shipped Push-T checkpoint)"),
        DeclareLaunchArgument("sampler", default_value="",
                              description="Sampler (sequential, paradigms, parataa); empty = the params file's value"),
        DeclareLaunchArgument("use_sim", default_value="false", choices=["true", "false", "True", "False", "1", "0"],
                              description="Also start the Push-T simulation node"),
        DeclareLaunchArgument("cpu_profile", default_value="false", choices=["true", "false", "True", "False", "1", "0"],
                              description="Also load config/policy_cpu.yaml (DDIM-16 sampling for machines without a GPU)"),
        DeclareLaunchArgument("lockstep", default_value="false", choices=["true", "false", "True", "False", "1", "0"],
                              description="Also load config/lockstep.yaml into both nodes: the simulation runs on "
                                          "simulated time and waits for each chunk (with use_sim:=true)"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false", "True", "False", "1", "0"],
                              description="Start lifecycle_policy_node (a managed node) instead of policy_node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false", "True", "False", "1", "0"],
                              description="With lifecycle:=true: configure and activate the node on start"),
        DeclareLaunchArgument("params_file", default_value=_config("policy.yaml"),
                              description="Parameter file of the policy node (ROS 2 params layout)"),
        OpaqueFunction(function=_nodes),
    ])
