"""`paradigms-policy curve`: the Push-T score of every saved checkpoint of a training run."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .evaluate import evaluate
from .options import add_scheduler_options, scheduler_overrides
from .output import saved_figure, write_json


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="training run directory (its checkpoints/step_* are evaluated)")
    parser.add_argument("--sampler", default="sequential")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=100000, help="first episode seed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", help="write [{steps, summary}, ...] here")
    parser.add_argument("--plot", help="PNG of score against training steps")
    add_scheduler_options(parser)


def run(args) -> int:
    checkpoints = sorted(Path(args.run).glob("checkpoints/step_*"))
    if not checkpoints:
        raise FileNotFoundError(f"{args.run}: no checkpoints/step_* directories")
    seeds = list(range(args.seed, args.seed + args.episodes))
    scheduler = scheduler_overrides(args)
    sampling = "".join(f"_{key}{value}" for key, value in sorted(scheduler.items()))
    points = []
    for checkpoint in checkpoints:
        steps = int(checkpoint.name.split("_")[1])
        # Results are kept beside the checkpoint, so an interrupted or repeated curve resumes.
        cached = checkpoint / f"eval_{args.sampler}{sampling}_seed{args.seed}_n{args.episodes}.json"
        if cached.exists():
            summary = json.loads(cached.read_text())
        else:
            summary = evaluate(checkpoint, [(args.sampler, {})], seeds, workers=args.workers, scheduler=scheduler)[0]
            write_json(summary, cached)
        print(f"{steps:>7} steps: mean score {summary['mean_score']:.3f}, success {summary['success_rate']:.2f}")
        points.append((steps, summary))
    if args.json:
        write_json([{"steps": steps, **summary} for steps, summary in points], args.json)
    if args.plot:
        plot_training_curve(points, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot_training_curve(points: list[tuple[int, dict[str, Any]]], path: str | Path) -> None:
    """Mean score (95% CI) and success rate against training steps."""
    steps = [step for step, _ in points]
    with saved_figure(path, figsize=(6, 3.6)) as axis:
        axis.plot(steps, [summary["mean_score"] for _, summary in points], "o-", label="mean score")
        axis.fill_between(steps, [summary["score_ci95"][0] for _, summary in points],
                          [summary["score_ci95"][1] for _, summary in points], alpha=0.25, label="95% CI")
        axis.plot(steps, [summary["success_rate"] for _, summary in points], "s--", label="success rate")
        axis.set_xlabel("training steps")
        axis.set_ylim(0, 1.02)
        first = points[0][1]
        axis.set_title(f"Push-T, {first['sampler']} {first['scheduler'].upper()}-{first['num_inference_steps']}, "
                       f"{first['episodes']} episodes per checkpoint")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
