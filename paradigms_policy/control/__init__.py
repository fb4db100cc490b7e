"""ROS-free control logic of the nodes: chunk timing, observation checks, parameters, sampler options,
the chunk ledger, diagnostics levels, statistics, playback and process memory.

Plain Python and numpy, unit-tested without ROS; `paradigms_policy.ros` wires it to topics.
"""
