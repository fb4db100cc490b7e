"""The rclpy glue that the nodes, the demo and the soak share.

Parameters declared from `ParamSpec`s (with descriptors), stamps, QoS profiles, the body of a node
executable (`run_node`: --help, start-up, spinning, a clean stop on SIGINT/SIGTERM at any moment),
and `LocalSession`: rclpy inside one process on this host.
"""
from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any, Callable

import rclpy
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time as TimeMsg
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from ..control.parameters import ParamSpec
from ..control.shutdown import ShutdownRequested, StopSignals
from ..control.timing import NS_PER_S
from ..control.usage import asks_for_help, usage

# Observations: best effort, keep last 5 (a reliable publisher matches too).
SENSOR_QOS = qos_profile_sensor_data
# Trajectories: every command arrives, none is replayed to a late subscriber.
RELIABLE_COMMANDS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Episode scores: a subscriber that starts late still gets the recent ones.
SCORE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
DISCOVERY_RANGE_VARIABLE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


class StartupError(RuntimeError):
    """The node cannot start; the message is one line saying why."""


# ----------------------------------------------------------------------------------------------
# Parameters


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS parameter descriptor of a spec: description, read-only flag, constraints and range."""
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                     additional_constraints=spec.constraints)
    if spec.minimum is None and spec.maximum is None or isinstance(spec.default, bool):
        return descriptor
    if isinstance(spec.default, float):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum if spec.minimum is not None else -math.inf),
            to_value=float(spec.maximum if spec.maximum is not None else math.inf), step=0.0)]
    elif isinstance(spec.default, int):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.minimum if spec.minimum is not None else -(2**63)),
            to_value=int(spec.maximum if spec.maximum is not None else 2**63 - 1), step=1)]
    return descriptor


def declare_parameters(node: Node, specs) -> dict[str, Any]:
    """Declare every spec'd parameter (values from parameter files/overrides); StartupError on a bad one."""
    values = {}
    for spec in specs:
        try:
            declare = _declare_empty_list if spec.default == [] else _declare
            value = declare(node, spec)
        except ParameterException as err:
            raise StartupError(f"invalid parameter '{spec.name}': {err.args[0]}") from None
        values[spec.name] = plain_value(value)
    return values


def _declare(node: Node, spec: ParamSpec) -> Any:
    return node.declare_parameter(spec.name, spec.default, descriptor_for(spec)).value


def _declare_empty_list(node: Node, spec: ParamSpec) -> list:
    """A string array defaulting to []: rclpy would type an empty default as a byte array, and an empty
    YAML list as unset, so it is declared typed, set to [] when nothing else is given, then made read-only."""
    writable, final = descriptor_for(spec), descriptor_for(spec)  # two objects: the node keeps the one it gets
    writable.type = final.type = Parameter.Type.STRING_ARRAY.value
    writable.read_only = False
    if node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, writable).value is None:
        node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
    node.set_descriptor(spec.name, final)
    return node.get_parameter(spec.name).value


def parameter_values(node: Node, specs) -> dict[str, Any]:
    """The current values of the spec'd (declared) parameters."""
    return {spec.name: plain_value(node.get_parameter(spec.name).value) for spec in specs}


def plain_value(value: Any) -> Any:
    """A parameter value with arrays (tuples, array.array) as lists."""
    return list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "array" else value


def parameter_overrides(values: dict[str, Any]) -> list[Parameter]:
    """Node parameter overrides from a {name: value} dict."""
    return [Parameter(name, value=value) for name, value in values.items()]


# ----------------------------------------------------------------------------------------------
# Stamps


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time_msg(ns: int) -> TimeMsg:
    return TimeMsg(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def ns_to_duration_msg(ns: int) -> DurationMsg:
    return DurationMsg(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


# ----------------------------------------------------------------------------------------------
# Node executables

# How long the tear-down waits for the executor thread (and a node for its own threads).
JOIN_TIMEOUT_S = 3.0


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None, summary: str = "",
             specs: tuple[ParamSpec, ...] = ()) -> int:
    """The body of a node executable: start, spin until SIGINT or SIGTERM, tear down; the exit code.

    0 after a stop signal at any moment, also during start-up (one line is logged); 1 when the node
    cannot start (one fatal line) or its executor failed. `--help` (before --ros-args) prints the
    usage, `summary` and the parameters `specs` without starting ROS. A node's `request_stop()`
    runs first on a stop, while the executor still spins; `destroy_node()` last.
    """
    argv = sys.argv[1:] if args is None else args
    if asks_for_help(argv):
        print(usage(name, summary, specs), end="")
        return 0
    signals = StopSignals().install()
    nodes: list[Node] = []
    try:
        code = _start_and_spin(make_node, name, args, signals, nodes)
    except ShutdownRequested as stop:  # a stop signal during start-up
        rclpy.logging.get_logger(name).info(f"{stop}: stopping during start-up")
        code = 0
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(uninstall_handlers=False)  # rclpy's uninstall would put back SIG_DFL for SIGINT
    signals.ignore_from_now_on()
    return code


def _start_and_spin(make_node, name: str, args, signals: StopSignals, nodes: list[Node]) -> int:
    # rclpy's own handlers would shut the context down under the running node, and re-raise
    # KeyboardInterrupt in the main thread: StopSignals handles both signals instead.
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        nodes.append(make_node())
    except Exception as err:  # StartupError, or what a library made of a ShutdownRequested raised inside it
        signals.defer()
        if signals.received is not None:
            raise ShutdownRequested(signals.received) from None
        if not isinstance(err, StartupError):
            raise
        rclpy.logging.get_logger(name).fatal(f"cannot start: {err}")
        return 1
    signals.defer()
    return spin_until_stopped(nodes[0], signals)


def spin_until_stopped(node: Node, signals: StopSignals) -> int:
    """Spin `node` on an executor thread until a stop signal (0) or until the executor fails (1)."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    failures: list[BaseException] = []
    spinner = threading.Thread(target=_spin, args=(executor, signals, failures), name=f"{node.get_name()}-executor")
    spinner.start()
    received = signals.wait()
    if received is not None:
        node.get_logger().info(f"{received}: shutting down")
    node.request_stop()
    executor.shutdown(timeout_sec=JOIN_TIMEOUT_S)
    spinner.join(JOIN_TIMEOUT_S)
    if failures:
        node.get_logger().error(f"the executor failed: {type(failures[0]).__name__}: {failures[0]}")
    return 1 if failures else 0


def _spin(executor: SingleThreadedExecutor, signals: StopSignals, failures: list[BaseException]) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except Exception as err:  # a callback raised: end the process with an error
        failures.append(err)
    finally:
        signals.end()


# ----------------------------------------------------------------------------------------------
# In-process sessions (demo, soak, tests)


def local_domain_id(explicit: int | None = None) -> int:
    """`explicit`, else $ROS_DOMAIN_ID, else one derived from the process id (1..100)."""
    if explicit is not None:
        return explicit
    variable = os.environ.get("ROS_DOMAIN_ID", "")
    return int(variable) if variable.isdigit() else 1 + os.getpid() % 100


class LocalSession:
    """rclpy inside this process: a Context of its own in one ROS domain, discovery on this host, and
    a SingleThreadedExecutor spinning the session's nodes on a thread of its own once started.

    Discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) unless the
    environment chose otherwise. Use it as a context manager, or call `close`.
    """

    def __init__(self, domain_id: int | None = None, name: str = "session"):
        os.environ.setdefault(DISCOVERY_RANGE_VARIABLE, "LOCALHOST")
        self.discovery_range = os.environ[DISCOVERY_RANGE_VARIABLE]
        self.domain_id = local_domain_id(domain_id)
        self.name = name
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.nodes: list[Node] = []
        self.executor = SingleThreadedExecutor(context=self.context)
        self._spinner: threading.Thread | None = None

    def add(self, node: Node) -> Node:
        """Spin `node` with the session's executor; the session destroys it on close."""
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def create_node(self, name: str) -> Node:
        """A plain node of the session (probes)."""
        return self.add(rclpy.create_node(name, context=self.context))

    def start(self) -> None:
        """Spin the executor on a thread of its own."""
        self._spinner = threading.Thread(target=self._spin, name=f"{self.name}-executor", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:  # Ctrl-C shut the context down
            pass

    def close(self) -> None:
        """Stop the executor and its thread, destroy the nodes (newest first) and shut the context down."""
        self.executor.shutdown()
        if self._spinner is not None:
            self._spinner.join(timeout=5.0)
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes.clear()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> "LocalSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def run_nodes(make: Callable[[], Any], body: Callable[[Any], int], prog: str) -> int:
    """A command's run: `make()` its nodes (an object with `close`), return `body(nodes)` and close them.

    A StartupError is printed as `prog: error: ...` (exit code 2), Ctrl-C as `prog: interrupted` (130).
    """
    try:
        nodes = make()
        try:
            return body(nodes)
        finally:
            nodes.close()
    except StartupError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
