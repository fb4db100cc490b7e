"""ament_python package setup for paradigms_policy.

The same file serves `colcon build` on a ROS 2 install and `pip install` in a virtual
environment. torch is requested as a range so that an existing (CUDA) torch is kept.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "paradigms_policy"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/checkpoints/pusht_lowdim", glob("checkpoints/pusht_lowdim/*")),
        (f"share/{PACKAGE}/checkpoints/pusht_image", glob("checkpoints/pusht_image/*")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.30",
        "safetensors>=0.4",
        "numpy>=1.24",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
    ],
    extras_require={
        # Simulation harness, dataset and training on the Push-T demonstrations.
        "sim": ["zarr>=2.16,<3", "gym-pusht>=0.1.6", "pymunk>=6.6,<7", "gymnasium>=0.29", "imageio>=2.30"],
        # ROS 2 Kilted from PyPI, for machines without a ROS 2 install.
        "ros": [
            "ros-kilted-rclpy",
            "ros-kilted-rmw-fastrtps-cpp",
            "ros-kilted-std-msgs",
            "ros-kilted-trajectory-msgs",
            "ros-kilted-sensor-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-lifecycle-msgs",
        ],
        # Test-only: writing original-format Diffusion Policy checkpoints as the original does.
        "test": ["pytest>=7", "dill", "omegaconf"],
    },
    zip_safe=True,
    maintainer="paradigms_policy maintainers",
    maintainer_email="maintainers@paradigms-policy.dev",
    description="Diffusion Policy with parallel-in-time denoising for ROS 2 control loops.",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "paradigms-policy = paradigms_policy.commands.cli:main",
            "policy_node = paradigms_policy.ros.policy_node:main",
            "lifecycle_policy_node = paradigms_policy.ros.lifecycle_policy_node:main",
            "pusht_sim_node = paradigms_policy.ros.pusht_sim_node:main",
        ],
    },
)
