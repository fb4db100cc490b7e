"""`ros2 launch` of launch/policy.launch.py for real, as a robot runs it, and the colcon-built scripts.

A session fixture builds a colcon workspace with ../shared/ros2/install.sh (launch, launch_ros and
the ros2 command from source, beside this package, in this interpreter's environment; about a
minute), then the tests run `ros2 launch paradigms_policy policy.launch.py ...` and the `ros2`
command against the running nodes, and stop launch with one SIGINT as Ctrl-C does: every node
must be reported "finished cleanly", none died or needed SIGTERM.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DOMAIN_ID = 1 + (os.getpid() + 53) % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]')")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")

from std_msgs.msg import Float32  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from paradigms_policy.checkpoint import save_policy  # noqa: E402
from paradigms_policy.config import SchedulerConfig  # noqa: E402
from paradigms_policy.ros.common import RELIABLE_COMMANDS, SCORE_QOS, LocalSession  # noqa: E402

from conftest import pixel_normalizers, small_config, small_model, wait_for  # noqa: E402
from node_process import REPO_ROOT, NodeProcess, node_environment  # noqa: E402

pytestmark = pytest.mark.dds

SHARED_ROS2 = REPO_ROOT.parent / "shared" / "ros2"
NODE_SCRIPTS = ("policy_node", "lifecycle_policy_node", "pusht_sim_node")
CLEAN = "process has finished cleanly"
# How long the ros2 CLI (without a daemon) spins to discover the node: 3 s was too short on a loaded 2-core machine.
DISCOVERY_S = 6


def stage_package(destination: Path) -> Path:
    """The package's tracked and untracked-not-ignored files that exist (a checkout being edited may
    list files it has deleted, which install.sh would fail to copy)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    package = destination / "paradigms_policy"
    for name in filter(None, listed):
        if (REPO_ROOT / name).is_file():
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, package / name)
    return package


@pytest.fixture(autouse=True, scope="module")
def sigint_not_ignored():
    """A shell without job control starts background commands with SIGINT ignored, and children inherit that:
    `ros2 launch` would then ignore the SIGINT these tests stop it with. A handler set here is reset to the
    default in each child."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    if not (SHARED_ROS2 / "install.sh").is_file():
        pytest.skip(f"{SHARED_ROS2} (launch, launch_ros and ros2cli sources with install.sh) is not there")
    root = tmp_path_factory.mktemp("ros2_ws")
    package = stage_package(root / "stage")
    started = time.monotonic()
    build = subprocess.run(["bash", str(SHARED_ROS2 / "install.sh"), sys.executable, str(root / "ws"), str(package)],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"workspace built in {time.monotonic() - started:.1f} s")
    return root / "ws"


def in_workspace(workspace: Path, command: str) -> list[str]:
    """bash running `command` with the workspace's env.sh sourced (exec: signals reach the command)."""
    return ["bash", "-c", f"source {workspace / 'env.sh'} && exec {command}"]


def ros2(workspace: Path, arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(in_workspace(workspace, f"ros2 {arguments}"), capture_output=True, text=True,
                          timeout=timeout, env=node_environment(DOMAIN_ID))


def lifecycle(workspace: Path, verb: str, *arguments: str) -> str:
    """`ros2 lifecycle VERB /policy_node ...` (discovery given DISCOVERY_S)."""
    result = ros2(workspace, f"lifecycle {verb} --no-daemon --spin-time {DISCOVERY_S} /policy_node "
                             f"{' '.join(arguments)}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def param_get(workspace: Path, name: str) -> str:
    """`ros2 param get` of a policy_node parameter (discovery given DISCOVERY_S)."""
    result = ros2(workspace, f"param get --no-daemon --spin-time {DISCOVERY_S} /policy_node {name}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    """Small and fast: a tiny DDIM-4 policy, sequential; three episodes of 30 steps (on simulated time the
    first may end before the test's listener has matched the trajectory publisher)."""
    folder = tmp_path_factory.mktemp("launch")
    config = small_config(SchedulerConfig(name="ddim", num_inference_steps=4))
    checkpoint = save_policy(folder / "tiny", config, small_model(config=config), *pixel_normalizers())
    path = folder / "params.yaml"
    path.write_text(f"policy_node:\n  ros__parameters:\n    checkpoint: '{checkpoint}'\n    sampler: sequential\n"
                    "    num_threads: 1\n    warmup_runs: 1\n"
                    "pusht_sim_node:\n  ros__parameters:\n    max_steps: 30\n    episodes: 3\n")
    return path


class Listener:
    """Episode scores and trajectories heard over DDS."""

    def __init__(self):
        self.session = LocalSession(DOMAIN_ID, name="launch-test")
        node = self.session.create_node("launch_listener")
        self.scores, self.trajectories = [], []
        node.create_subscription(Float32, "episode_score", lambda msg: self.scores.append(msg.data), SCORE_QOS)
        node.create_subscription(JointTrajectory, "joint_trajectory", self.trajectories.append, RELIABLE_COMMANDS)
        self.session.start()


@pytest.fixture
def listener():
    listener = Listener()
    yield listener
    listener.session.close()


def launch(workspace: Path, arguments: str) -> NodeProcess:
    return NodeProcess(in_workspace(workspace, f"ros2 launch paradigms_policy policy.launch.py {arguments}"),
                       node_environment(DOMAIN_ID))



def stop_launch(process: NodeProcess, nodes: tuple[str, ...]) -> str:
    """One SIGINT to launch; its output, once every node finished cleanly and launch exited with 0."""
    process.send(signal.SIGINT)
    code, elapsed = process.wait_exit(30.0)
    output = process.output()
    print(f"launch stopped in {elapsed:.2f} s")
    assert code == 0, f"launch exit code {code}:\n{output}"
    for node in nodes:
        assert re.search(rf"\[{node}-\d+\]: {CLEAN}", output), f"{node} did not finish cleanly:\n{output}"
    assert "process has died" not in output and "SIGTERM" not in output, output
    assert "Traceback" not in output, output
    return output


def test_launch_runs_an_episode_and_stops_cleanly_on_one_sigint(workspace, params_file, listener):
    started = time.monotonic()
    process = launch(workspace, f"use_sim:=true lockstep:=true params_file:={params_file}")
    try:
        assert wait_for(lambda: len(listener.scores) == 3, 90.0), f"no episode scores heard:\n{process.output()}"
        assert listener.trajectories, "no trajectory heard"
        assert all(len(msg.points) > 0 and list(msg.joint_names) == ["agent_x", "agent_y"]
                   for msg in listener.trajectories)
        assert process.process.poll() is None, f"launch ended by itself:\n{process.output()}"
        stop_launch(process, ("policy_node", "pusht_sim_node"))
    finally:
        process.close()
    print(f"launch test: {time.monotonic() - started:.1f} s, {len(listener.trajectories)} trajectories, "
          f"score {listener.scores[0]:.3f}")


def test_launch_arguments_reach_the_running_node(workspace, params_file, tmp_path):
    config = small_config(SchedulerConfig(name="ddim", num_inference_steps=6))
    other = save_policy(tmp_path / "other", config, small_model(seed=3, config=config), *pixel_normalizers())
    process = launch(workspace, f"params_file:={params_file}")
    try:
        assert process.wait_for_line("policy ready", 60.0), process.output()
        baseline = process.output()
        stop_launch(process, ("policy_node",))
    finally:
        process.close()
    assert f"loading the policy from {params_file.parent / 'tiny'}" in baseline and "ddim x 4; sampler sequential" in baseline

    process = launch(workspace, f"params_file:={params_file} checkpoint:={other} sampler:=paradigms cpu_profile:=true")
    try:
        assert process.wait_for_line("policy ready", 60.0), process.output()
        output = process.output()
        assert f"loading the policy from {other}" in output  # checkpoint
        assert "sampler paradigms (window 16" in output  # sampler
        assert "ddim x 16" in output  # cpu_profile: config/policy_cpu.yaml, DDIM-16
        assert param_get(workspace, "checkpoint") == f"String value is: {other}"
        assert param_get(workspace, "num_inference_steps") == "Integer value is: 16"
        assert param_get(workspace, "num_threads") == "Integer value is: 1"  # from params_file
        stop_launch(process, ("policy_node",))
    finally:
        process.close()


def test_lifecycle_launch_autostarts_and_ros2_lifecycle_set_drives_it(workspace, params_file, listener):
    process = launch(workspace, f"lifecycle:=true use_sim:=true lockstep:=true params_file:={params_file}")
    try:
        assert wait_for(lambda: listener.scores, 90.0), f"no episode score heard:\n{process.output()}"
        assert lifecycle(workspace, "get") == "active [3]"
        assert lifecycle(workspace, "set", "deactivate") == "Transitioning successful"
        assert lifecycle(workspace, "get") == "inactive [2]"
        heard = len(listener.trajectories)
        time.sleep(1.0)
        assert len(listener.trajectories) == heard, "trajectories after deactivate"
        stop_launch(process, ("lifecycle_policy_node", "pusht_sim_node"))
    finally:
        process.close()


def test_colcon_built_scripts_use_the_path_python_and_answer_help(workspace):
    scripts = workspace / "install" / "paradigms_policy" / "lib" / "paradigms_policy"
    for name in NODE_SCRIPTS:
        assert (scripts / name).read_text().splitlines()[0] == "#!/usr/bin/env python3", name
    for name, expected in (("policy_node", "deadline_ms"), ("lifecycle_policy_node", "configure"),
                           ("pusht_sim_node", "max_steps")):
        started = time.monotonic()
        result = subprocess.run(in_workspace(workspace, f"{scripts / name} --help"), capture_output=True, text=True,
                                timeout=60, env=node_environment(DOMAIN_ID))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {name} ") and expected in result.stdout, result.stdout
        assert "[INFO]" not in result.stdout + result.stderr  # no node was started
        print(f"{name} --help: {time.monotonic() - started:.1f} s")


DEBIAN_COLCON = Path("/usr/bin/colcon")  # apt-get install colcon python3-colcon-ros


@pytest.mark.skipif(not DEBIAN_COLCON.is_file(), reason="Debian's colcon is not installed (apt-get install colcon "
                                                        "python3-colcon-ros)")
def test_debian_colcon_also_writes_scripts_that_use_the_path_python(tmp_path):
    """Debian's colcon runs setup.py with /usr/bin/python3, which would put that interpreter (no torch, no
    rclpy) into the scripts; setup.cfg's [build_scripts] executable makes it `/usr/bin/env python3`."""
    package = stage_package(tmp_path / "src")
    result = subprocess.run([str(DEBIAN_COLCON), "build", "--base-paths", str(package.parent)], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scripts = tmp_path / "install" / "paradigms_policy" / "lib" / "paradigms_policy"
    for name in NODE_SCRIPTS:
        assert (scripts / name).read_text().splitlines()[0] == "#!/usr/bin/env python3", name
    # Run with this environment's python3 first on PATH, as a sourced workspace or activated venv has it.
    env = dict(node_environment(DOMAIN_ID), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    help_text = subprocess.run([str(scripts / "policy_node"), "--help"], capture_output=True, text=True, timeout=60,
                               env=env)
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: policy_node "), help_text.stderr
