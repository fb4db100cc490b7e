"""Diffusion Policy with parallel-in-time denoising (ParaDiGMS, ParaTAA) for ROS 2 control loops.

The core (model, samplers, checkpoints, policy) needs only torch, diffusers and safetensors;
the ROS 2 nodes and their glue live in `ros/`, the only folder that talks to ROS 2.
"""
from .checkpoint import CheckpointError, load_policy, save_policy
from .config import PolicyConfig, SchedulerConfig, UnetConfig
from .policy import DiffusionPolicy, PolicyOutput

__all__ = ["CheckpointError", "DiffusionPolicy", "PolicyConfig", "PolicyOutput", "SchedulerConfig", "UnetConfig",
           "load_policy", "save_policy"]
