"""Where the installed resources live: the shipped checkpoint and the parameter files.

Each is looked up in the ament index (a colcon install), then under `sys.prefix/share` (a pip
install), then in the source tree; the first place that has it wins.
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "paradigms_policy"
SOURCE_TREE = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINT = Path("checkpoints") / "pusht_lowdim"
SHIPPED_IMAGE_CHECKPOINT = Path("checkpoints") / "pusht_image"  # frames + agent position, trained on a 2-core CPU
CONFIG_DIR = Path("config")
POLICY_PARAMS = "policy.yaml"
SIM_PARAMS = "pusht_sim.yaml"
CPU_OVERLAY = "policy_cpu.yaml"  # DDIM-16 instead of the checkpoint's DDPM-100 where no GPU meets the deadline
LOCKSTEP_OVERLAY = "lockstep.yaml"  # both nodes on the simulation's clock


def _share_roots() -> list[Path]:
    roots = []
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # no ament index (pip install) or the package is not in it
        pass
    return roots + [Path(sys.prefix) / "share" / PACKAGE, SOURCE_TREE]


def _find(relative: Path, required: tuple[str, ...]) -> Path:
    for root in _share_roots():
        if all((root / relative / name).is_file() for name in required):
            return root / relative
    return SOURCE_TREE / relative


def shipped_checkpoint(image: bool = False) -> Path:
    """The Push-T checkpoint shipped with the package: the low-dim policy, or with `image` the image policy."""
    return _find(SHIPPED_IMAGE_CHECKPOINT if image else SHIPPED_CHECKPOINT, ("config.json",))


def config_dir() -> Path:
    """The package's parameter files (`config/`)."""
    return _find(CONFIG_DIR, (POLICY_PARAMS, SIM_PARAMS))


def default_params_files(on_cpu: bool) -> list[str]:
    """The nodes' parameter files, with the CPU overlay last when the policy runs on a CPU."""
    names = (POLICY_PARAMS, SIM_PARAMS) + ((CPU_OVERLAY,) if on_cpu else ())
    return [str(config_dir() / name) for name in names]


def lockstep_params_file() -> str:
    return str(config_dir() / LOCKSTEP_OVERLAY)
