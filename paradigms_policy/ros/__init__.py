"""The ROS 2 side: the only modules that import rclpy (nodes, their shared glue, the demo's and the soak's nodes)."""
