"""ros/common.py: parameter descriptors, stamps, the command runner and the in-process LocalSession."""
import os

import pytest

DOMAIN_ID = 1 + (os.getpid() + 71) % 100
rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")

from rcl_interfaces.msg import ParameterDescriptor  # noqa: E402

from paradigms_policy.control.parameters import ParamSpec  # noqa: E402
from paradigms_policy.ros.common import (LocalSession, StartupError, declare_parameters, descriptor_for,  # noqa: E402
                                         local_domain_id, ns_to_duration_msg, ns_to_time_msg, parameter_overrides,
                                         run_nodes, stamp_to_ns)

SPECS = (ParamSpec("rate", 10.0, "A rate.", read_only=False, minimum=0.1, maximum=100.0),
         ParamSpec("count", 3, "A count.", minimum=0),
         ParamSpec("flag", True, "A flag.", minimum=0),
         ParamSpec("names", ["a", "b"], "Names.", constraints="two names"))


def test_descriptors_carry_description_ranges_and_constraints():
    rate, count, flag, names = (descriptor_for(spec) for spec in SPECS)
    assert isinstance(rate, ParameterDescriptor) and rate.description == "A rate." and not rate.read_only
    assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (0.1, 100.0)
    assert not rate.integer_range
    assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (0, 2**63 - 1) and count.read_only
    assert not flag.integer_range and not flag.floating_point_range  # a bool has no range
    assert names.additional_constraints == "two names" and not names.integer_range


def test_stamps_convert_both_ways():
    ns = 1_700_000_123_456_789_012
    stamp = ns_to_time_msg(ns)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_123, 456_789_012) and stamp_to_ns(stamp) == ns
    duration = ns_to_duration_msg(1_500_000_000)
    assert (duration.sec, duration.nanosec) == (1, 500_000_000) and stamp_to_ns(duration) == 1_500_000_000


def test_local_domain_id(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert local_domain_id(7) == 7 and local_domain_id() == 42
    monkeypatch.setenv("ROS_DOMAIN_ID", "")
    assert local_domain_id() == 1 + os.getpid() % 100


class Nodes:
    closed = False

    def close(self):
        self.closed = True


def test_run_nodes_closes_the_nodes_and_turns_failures_into_exit_codes(capsys):
    nodes = Nodes()
    assert run_nodes(lambda: nodes, lambda n: 5, "prog") == 5 and nodes.closed

    def fail():
        raise StartupError("no checkpoint")

    assert run_nodes(fail, lambda n: 0, "prog") == 2
    assert capsys.readouterr().err == "prog: error: no checkpoint\n"
    interrupted = Nodes()

    def interrupt(_nodes):
        raise KeyboardInterrupt

    assert run_nodes(lambda: interrupted, interrupt, "prog") == 130 and interrupted.closed
    assert capsys.readouterr().err == "prog: interrupted\n"


@pytest.mark.dds
def test_local_session_stays_on_this_host_and_declares_parameters(monkeypatch):
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    session = LocalSession(DOMAIN_ID, name="test")
    try:
        assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" == session.discovery_range
        assert session.context.get_domain_id() == DOMAIN_ID and session.context.ok()
        node = rclpy.create_node("declares", context=session.context,
                                 parameter_overrides=parameter_overrides({"count": 5, "names": ["x", "y"]}))
        session.add(node)
        assert declare_parameters(node, SPECS) == {"rate": 10.0, "count": 5, "flag": True, "names": ["x", "y"]}
        wrong = rclpy.create_node("wrong", context=session.context,
                                  parameter_overrides=parameter_overrides({"count": "five"}))
        session.add(wrong)
        with pytest.raises(StartupError, match="invalid parameter 'count'"):
            declare_parameters(wrong, SPECS)
        probe = session.create_node("probe")
        session.start()
        assert probe.get_name() == "probe" and len(session.nodes) == 3
    finally:
        session.close()
    assert not session.context.ok() and session.nodes == []
