"""launch/policy.launch.py: arguments and started nodes (needs `launch` and `launch_ros` importable: a ROS 2
install, or the workspace env.sh that ../shared/ros2/install.sh writes; test_launch_real.py runs it for real)."""
import importlib.util
from pathlib import Path

import pytest

REASON = "launch is not installable from PyPI; needs a ROS 2 install"
launch = pytest.importorskip("launch", reason=REASON)
pytest.importorskip("launch_ros", reason=REASON)

from launch import LaunchContext, LaunchDescription  # noqa: E402
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch.utilities import perform_substitutions  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "policy.launch.py"
ARGUMENTS = {"checkpoint", "sampler", "use_sim", "params_file", "cpu_profile", "lockstep", "lifecycle", "autostart"}


@pytest.fixture
def launch_module():
    spec = importlib.util.spec_from_file_location("policy_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module._config("policy.yaml")
    except Exception as err:  # PackageNotFoundError: not built with colcon / not sourced
        pytest.skip(f"paradigms_policy is not in the ament index ({err}); colcon build and source install/setup.bash")
    return module


def _arguments(description):
    return {entity.name: entity for entity in description.entities if isinstance(entity, DeclareLaunchArgument)}


def _nodes(module, monkeypatch, **arguments):
    """Run the launch file's node factory with these argument values; Node(...) calls are recorded."""
    description = module.generate_launch_description()
    context = LaunchContext()
    for name, argument in _arguments(description).items():
        context.launch_configurations[name] = perform_substitutions(context, argument.default_value)
    context.launch_configurations.update(arguments)
    monkeypatch.setattr(module, "Node", lambda **kwargs: kwargs)
    factory = next(entity for entity in description.entities if isinstance(entity, OpaqueFunction))
    return factory.execute(context)


def test_launch_description_declares_the_arguments(launch_module):
    description = launch_module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    arguments = _arguments(description)
    assert set(arguments) == ARGUMENTS
    context = LaunchContext()
    defaults = {name: perform_substitutions(context, arg.default_value) for name, arg in arguments.items()}
    assert defaults["checkpoint"] == "" and defaults["sampler"] == "" and defaults["use_sim"] == "false"
    assert defaults["cpu_profile"] == "false" and defaults["lockstep"] == "false"
    assert defaults["lifecycle"] == "false" and defaults["autostart"] == "true"
    assert Path(defaults["params_file"]).is_file() and Path(defaults["params_file"]).name == "policy.yaml"
    assert Path(launch_module._config("pusht_sim.yaml")).is_file()


def test_default_launch_starts_only_the_policy_node_with_the_params_file(launch_module, monkeypatch):
    nodes = _nodes(launch_module, monkeypatch)
    assert len(nodes) == 1
    node = nodes[0]
    assert node["package"] == "paradigms_policy" and node["executable"] == "policy_node"
    assert node["name"] == "policy_node"
    assert node["parameters"] == [launch_module._config("policy.yaml")]  # empty arguments override nothing


def test_arguments_override_and_use_sim_starts_the_simulation(launch_module, monkeypatch, tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text("policy_node:\n  ros__parameters:\n    deadline_ms: 400.0\n")
    nodes = _nodes(launch_module, monkeypatch, checkpoint="/models/pusht", sampler="sequential", use_sim="true",
                   params_file=str(params))
    assert [node["executable"] for node in nodes] == ["policy_node", "pusht_sim_node"]
    policy, sim = nodes
    assert policy["parameters"] == [str(params), {"checkpoint": "/models/pusht", "sampler": "sequential"}]
    assert sim["parameters"] == [launch_module._config("pusht_sim.yaml"), str(params)]
    assert sim["name"] == "pusht_sim_node"


def test_cpu_profile_loads_the_cpu_overlay_after_the_params_file(launch_module, monkeypatch):
    nodes = _nodes(launch_module, monkeypatch, cpu_profile="true", sampler="paradigms")
    assert nodes[0]["parameters"] == [launch_module._config("policy.yaml"), launch_module._config("policy_cpu.yaml"),
                                      {"sampler": "paradigms"}]


def test_lockstep_loads_the_lockstep_overlay_into_both_nodes_last(launch_module, monkeypatch):
    nodes = _nodes(launch_module, monkeypatch, use_sim="true", lockstep="true")
    policy, sim = nodes
    overlay = launch_module._config("lockstep.yaml")
    assert policy["parameters"] == [launch_module._config("policy.yaml"), overlay]
    assert sim["parameters"] == [launch_module._config("pusht_sim.yaml"), launch_module._config("policy.yaml"), overlay]


def test_lifecycle_starts_the_managed_node_and_autostart_configures_then_activates_it(launch_module, monkeypatch):
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode
    from lifecycle_msgs.msg import Transition

    handler, node, configure, sim = _nodes(launch_module, monkeypatch, lifecycle="true", use_sim="true")
    assert isinstance(node, LifecycleNode) and sim["executable"] == "pusht_sim_node"
    assert (node.node_package, node.node_executable) == ("paradigms_policy", "lifecycle_policy_node")
    assert isinstance(configure, EmitEvent) and configure.event.transition_id == Transition.TRANSITION_CONFIGURE
    assert configure.event.lifecycle_node_matcher(node)
    assert isinstance(handler, RegisterEventHandler)
    [activate] = handler.event_handler.entities
    assert activate.event.transition_id == Transition.TRANSITION_ACTIVATE and activate.event.lifecycle_node_matcher(node)

    manual = _nodes(launch_module, monkeypatch, lifecycle="true", autostart="false")
    assert len(manual) == 1 and isinstance(manual[0], LifecycleNode)
