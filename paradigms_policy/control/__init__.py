"""ROS-free control logic of the nodes: chunk timing, observation checks, parameters, statistics, playback.

Plain Python and numpy, unit-tested without rclpy; `paradigms_policy.ros` wires it to topics.
"""
