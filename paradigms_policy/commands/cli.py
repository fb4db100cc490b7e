"""`paradigms-policy`: the command-line entry point (bench, train, eval, demo)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from ..resources import shipped_checkpoint

DEFAULT_ZARR = Path("..") / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"


def _add_bench(subparsers) -> None:
    from .bench import RANDOM_MODEL_SIZES

    parser = subparsers.add_parser("bench", help="latency, rounds and accuracy of the samplers per action chunk")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="policy checkpoint (default: the shipped Push-T checkpoint)")
    model.add_argument("--random-model", choices=sorted(RANDOM_MODEL_SIZES),
                       help="a randomly initialised Push-T-shaped policy instead of a checkpoint")
    parser.add_argument("--data", help="Push-T replay zarr to draw observations from (default: random observations)")
    parser.add_argument("--samplers", default="sequential,paradigms",
                        help="comma-separated samplers, each name[:option=value...]")
    parser.add_argument("--suite", choices=["gpu"],
                        help="gpu: eager and CUDA-graph sequential, ParaDiGMS and ParaTAA (fixed-shape windows), bf16")
    parser.add_argument("--reference", choices=["sequential", "float64"], default="sequential",
                        help="deviation against the float32 sequential run or a float64 CPU sequential run")
    parser.add_argument("--chunks", type=int, default=20, help="action chunks (observations) per sampler")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--residual-plot", help="PNG of the residual against rounds on the first chunk")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _add_scheduler_options(parser)
    _add_sampler_options(parser)
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay the denoiser from CUDA graphs (CUDA only; elsewhere the run stays eager)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed chunks per sampler first")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_run_bench)


def _add_scheduler_options(parser) -> None:
    parser.add_argument("--scheduler", choices=["ddpm", "ddim", "dpmsolver"], help="override the checkpoint's scheduler")
    parser.add_argument("--inference-steps", type=int, help="override the number of denoising steps")


def scheduler_overrides(args) -> dict:
    """set_scheduler() keywords from --scheduler and --inference-steps (empty: the checkpoint's own)."""
    changes = {}
    if args.scheduler:
        changes["name"] = args.scheduler
    if args.inference_steps:
        changes["num_inference_steps"] = args.inference_steps
    return changes


def _add_sampler_options(parser) -> None:
    """Options of the parallel samplers (ignored by the sequential one)."""
    parser.add_argument("--window", type=int, help="parallel window (states per round)")
    parser.add_argument("--tolerance", type=float, help="convergence tolerance, in units of each step's noise std")
    parser.add_argument("--max-rounds", type=int, help="round cap of the parallel samplers")
    parser.add_argument("--warm-start", choices=["none", "temporal"],
                        help="temporal: seed each parallel solve with the previous chunk's trajectory")


def parallel_options(args) -> dict:
    names = {"window": "window", "tolerance": "tolerance", "max_rounds": "max_rounds", "warm_start": "warm_start"}
    return {option: getattr(args, attr) for attr, option in names.items() if getattr(args, attr) is not None}


def sampler_specs(names: str, options: dict) -> list:
    """Samplers from `name[:option=value[:option=value...]]`, comma separated.

    The shared options (--window, ...) apply to every parallel sampler; options written after a
    name override them for that sampler only, e.g. `sequential,paradigms,parataa:warm_start=temporal`.
    """
    from .bench import SamplerSpec
    from ..samplers import get_sampler

    specs = []
    for entry in (part.strip() for part in names.split(",") if part.strip()):
        name, *overrides = entry.split(":")
        get_sampler(name)  # unknown names fail here, before any work
        own = {} if name == "sequential" else dict(options)
        for override in overrides:
            key, separator, value = override.partition("=")
            if not separator or not key:
                raise ValueError(f"sampler option {override!r} in {entry!r} is not of the form option=value")
            own[key] = _option_value(value)
        specs.append(SamplerSpec(name, own))
    if not specs:
        raise ValueError("--samplers names no sampler")
    return specs


def _option_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _run_bench(args) -> int:
    from .bench import (format_table, gpu_suite, plot_residuals, random_observations, random_policy, run_bench, write_json)

    specs = gpu_suite(args.window or 16) if args.suite == "gpu" else sampler_specs(args.samplers, parallel_options(args))
    if args.cuda_graphs:
        specs = [replace(spec, cuda_graphs=True) for spec in specs]
    if args.random_model:
        policy = random_policy(args.random_model, device=args.device, seed=args.seed)
    else:
        from ..checkpoint import load_policy

        policy = load_policy(args.checkpoint or shipped_checkpoint(), device=args.device)
    changes = scheduler_overrides(args)
    if changes:
        policy.set_scheduler(**changes)
    if (args.cuda_graphs or args.suite) and policy.device.type != "cuda":
        print(f"note: CUDA graphs need a CUDA device; on {policy.device} every variant runs eager", file=sys.stderr)
    if args.data:
        from ..pusht.dataset import PushTLowdimDataset

        dataset = PushTLowdimDataset(args.data, policy.config.horizon, policy.config.n_obs_steps,
                                     policy.config.n_action_steps)
        # Consecutive windows of episodes, one executed chunk apart, as a rollout meets them.
        observations, episode_starts = dataset.rollout_observation_windows(args.chunks, seed=args.seed)
    else:
        observations, episode_starts = random_observations(policy, args.chunks, seed=args.seed), None
    document = run_bench(policy, observations, specs, warmup=args.warmup, seed=args.seed,
                         episode_starts=episode_starts, reference=args.reference)
    document["checkpoint"] = f"random:{args.random_model}" if args.random_model else str(args.checkpoint or shipped_checkpoint())
    document["observations"] = "dataset" if args.data else "random"
    print(format_table(document))
    if args.json:
        write_json(document, args.json)
        print(f"wrote {args.json}")
    if args.residual_plot:
        plot_residuals(document, args.residual_plot)
        print(f"wrote {args.residual_plot}")
    return 0


def _add_eval(subparsers) -> None:
    from .evaluate import PAPER_EPISODES, PAPER_FIRST_SEED

    parser = subparsers.add_parser("eval", help="Push-T task score per sampler (Diffusion Policy protocol)")
    parser.add_argument("--checkpoint", help="policy checkpoint (default: the shipped Push-T checkpoint)")
    parser.add_argument("--sampler", default="sequential", help="sampler name, or several comma-separated to compare")
    parser.add_argument("--episodes", type=int, default=PAPER_EPISODES)
    parser.add_argument("--seed", type=int, default=PAPER_FIRST_SEED, help="first episode seed")
    parser.add_argument("--max-steps", type=int, default=300, help="environment steps per episode")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel episode processes")
    parser.add_argument("--device", default="cpu", help="device of each worker's policy")
    parser.add_argument("--json", help="write the results here: one object per sampler (a list when several)")
    parser.add_argument("--plot", help="PNG comparing the samplers' scores and latencies")
    parser.add_argument("--video", metavar="DIR", help="write a GIF of every episode into DIR")
    parser.add_argument("--episode-log", help="JSON-lines file of finished episodes; episodes already in it are "
                                              "not run again (default: next to --json)")
    parser.add_argument("--delay-steps", type=int, default=0,
                        help="emulate a real-time controller: each chunk's actions arrive this many steps late")
    parser.add_argument("--replan-every", type=int,
                        help="plan a new chunk every this many steps (default: the checkpoint's n_action_steps)")
    _add_scheduler_options(parser)
    _add_sampler_options(parser)
    parser.set_defaults(handler=_run_eval)


def _run_eval(args) -> int:
    from .bench import write_json
    from .evaluate import evaluate, format_table, plot_comparison

    if args.episodes < 1:
        raise ValueError("--episodes must be at least 1")
    checkpoint = args.checkpoint or shipped_checkpoint()
    specs = sampler_specs(args.sampler, parallel_options(args))
    execution = {name: value for name, value in (("delay_steps", args.delay_steps), ("replan_every", args.replan_every))
                 if value}
    seeds = list(range(args.seed, args.seed + args.episodes))
    episode_log = args.episode_log or (f"{args.json}.episodes.jsonl" if args.json else None)
    summaries = evaluate(checkpoint, [(spec.name, spec.options) for spec in specs], seeds, workers=args.workers,
                         device=args.device, max_steps=args.max_steps, video_dir=args.video, episode_log=episode_log,
                         scheduler=scheduler_overrides(args), execution=execution)
    print(format_table(summaries))
    if args.json:
        write_json(summaries[0] if len(summaries) == 1 else summaries, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_comparison(summaries, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _add_curve(subparsers) -> None:
    parser = subparsers.add_parser("curve", help="Push-T score of every checkpoint of a training run")
    parser.add_argument("--run", required=True, help="training run directory (its checkpoints/step_* are evaluated)")
    parser.add_argument("--sampler", default="sequential")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=100000, help="first episode seed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", help="write [{steps, summary}, ...] here")
    parser.add_argument("--plot", help="PNG of score against training steps")
    parser.set_defaults(handler=_run_curve)


def _run_curve(args) -> int:
    from .bench import write_json
    from .evaluate import evaluate, plot_training_curve

    checkpoints = sorted(Path(args.run).glob("checkpoints/step_*"))
    if not checkpoints:
        raise FileNotFoundError(f"{args.run}: no checkpoints/step_* directories")
    seeds = list(range(args.seed, args.seed + args.episodes))
    points = []
    for checkpoint in checkpoints:
        steps = int(checkpoint.name.split("_")[1])
        # Results are kept beside the checkpoint, so an interrupted or repeated curve resumes.
        cached = checkpoint / f"eval_{args.sampler}_seed{args.seed}_n{args.episodes}.json"
        if cached.exists():
            summary = json.loads(cached.read_text())
        else:
            summary = evaluate(checkpoint, [(args.sampler, {})], seeds, workers=args.workers)[0]
            write_json(summary, cached)
        print(f"{steps:>7} steps: mean score {summary['mean_score']:.3f}, success {summary['success_rate']:.2f}")
        points.append((steps, summary))
    if args.json:
        write_json([{"steps": steps, **summary} for steps, summary in points], args.json)
    if args.plot:
        plot_training_curve(points, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _add_demo(subparsers) -> None:
    from .demo import add_demo_arguments, run_demo

    parser = subparsers.add_parser("demo", help="policy node + Push-T simulation node over ROS 2 (no ros2 launch needed)")
    add_demo_arguments(parser)
    parser.set_defaults(handler=run_demo)


def _add_soak(subparsers) -> None:
    from .soak import add_soak_arguments, run_soak

    parser = subparsers.add_parser("soak", help="run the policy node for many control cycles and watch its memory")
    add_soak_arguments(parser)
    parser.set_defaults(handler=run_soak)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a low-dim Diffusion Policy on the Push-T demonstrations")
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
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the run directory has a resume state")
    parser.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(zarr_path=args.data, output_dir=args.output, steps=args.steps, batch_size=args.batch_size,
                         learning_rate=args.lr, warmup_steps=args.warmup_steps,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
                         down_dims=_int_list(args.down_dims), diffusion_step_embed_dim=args.step_embed_dim,
                         kernel_size=args.kernel_size)
    final = train(config, resume=not args.no_resume)
    print(f"final checkpoint: {final}")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paradigms-policy", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_bench(subparsers)
    _add_eval(subparsers)
    _add_curve(subparsers)
    _add_train(subparsers)
    _add_demo(subparsers)
    _add_soak(subparsers)
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
