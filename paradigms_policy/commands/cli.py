"""`paradigms-policy`: the command-line entry point (bench, eval, curve, train, demo, soak)."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .options import int_list

DEFAULT_ZARR = Path("..") / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"

# command -> (module of this package with add_arguments(parser) and run(args), one-line help)
COMMANDS = {
    "bench": ("bench", "latency, rounds and accuracy of the samplers per action chunk"),
    "gpu-check": ("gpu_check", "the GPU comparison in one run: JSON and PNG named by device and date"),
    "eval": ("evaluate", "Push-T task score per sampler (Diffusion Policy protocol)"),
    "delays": ("delays", "Push-T score against inference delay: plain delayed execution and real-time chunking"),
    "curve": ("curve", "Push-T score of every checkpoint of a training run"),
    "train": (None, "train a Diffusion Policy (low-dim or image) on the Push-T demonstrations"),
    "demo": ("demo", "policy node + Push-T simulation node over ROS 2 (no ros2 launch needed)"),
    "soak": ("soak", "run the policy node for many control cycles and watch its memory"),
}


def _add_train_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_ZARR), help="Push-T replay zarr (default: %(default)s)")
    parser.add_argument("--output", required=True, help="run directory: checkpoints, log and resume state")
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=5000)
    parser.add_argument("--down-dims", default="64,128,256", help="U-Net widths, comma separated")
    parser.add_argument("--step-embed-dim", type=int, default=128)
    parser.add_argument("--kernel-size", type=int, default=5)
    parser.add_argument("--observation", choices=("low_dim", "image"), default="low_dim",
                        help="low_dim: block keypoints + agent position; image: the recorded frames + agent position")
    parser.add_argument("--vision-width", type=int, default=16, help="image encoder: ResNet-18 conv1 channels")
    parser.add_argument("--vision-feature-dim", type=int, default=64, help="image encoder: features per frame")
    parser.add_argument("--crop-size", type=int, default=84, help="image encoder: random crop in training")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the run directory has a resume state")


def _run_train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(zarr_path=args.data, output_dir=args.output, steps=args.steps, batch_size=args.batch_size,
                         learning_rate=args.lr, warmup_steps=args.warmup_steps,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
                         down_dims=int_list(args.down_dims), diffusion_step_embed_dim=args.step_embed_dim,
                         kernel_size=args.kernel_size, observation=args.observation,
                         vision_width=args.vision_width, vision_feature_dim=args.vision_feature_dim,
                         crop_size=args.crop_size)
    final = train(config, resume=not args.no_resume)
    print(f"final checkpoint: {final}")
    return 0




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paradigms-policy", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = subparsers.add_parser(name, help=help_text)
        if module_name is None:
            _add_train_arguments(command)
            command.set_defaults(handler=_run_train)
            continue
        module = importlib.import_module(f".{module_name}", __package__)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..checkpoint import CheckpointError
    from ..config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"paradigms-policy {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"paradigms-policy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
