"""Checkpoints: the native format, original Diffusion Policy `.ckpt` files and LeRobot directories.

`load_policy` recognises the format (`loader.py`), reads it into `PolicyWeights` with the format's
reader, and builds the policy; every failure is one `CheckpointError` naming the file.
"""
from .errors import CheckpointError, PolicyWeights
from .loader import build_model, detect_format, load_policy, read_weights
from .native import save_policy

__all__ = ["CheckpointError", "PolicyWeights", "build_model", "detect_format", "load_policy", "read_weights",
           "save_policy"]
