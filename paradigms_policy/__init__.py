"""Diffusion Policy with parallel-in-time denoising (ParaDiGMS, ParaTAA) for ROS 2 control loops.

The core (model, samplers, checkpoints, policy) needs only torch, diffusers and safetensors;
the ROS 2 nodes live in their own modules and are the only ones that import rclpy.
"""
from .checkpoint import CheckpointError, load_policy, save_policy
from .config import PolicyConfig, SchedulerConfig, UnetConfig
from .policy import DiffusionPolicy, PolicyOutput

__all__ = ["CheckpointError", "DiffusionPolicy", "PolicyConfig", "PolicyOutput", "SchedulerConfig", "UnetConfig",
           "load_policy", "save_policy"]
