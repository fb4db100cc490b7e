"""`paradigms-policy delays`: task score against inference delay, plain delayed execution and real-time chunking.

For every delay D (in control steps) each seed runs twice: the new chunk's actions replace the
running ones D steps after its observation (plain), and the same with the chunk inpainted with the
actions committed meanwhile (real-time chunking). The baseline is D = 0 without inpainting, the
paper's protocol when the replanning period is n_action_steps. Differences are paired by seed.
All rows share one episode log, so an interrupted study resumes where it stopped.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import shipped_checkpoint
from .evaluate import PAPER_EPISODES, PAPER_FIRST_SEED, evaluate
from .options import (add_sampler_options, add_scheduler_options, int_list, parallel_options, sampler_specs,
                      scheduler_overrides)
from .output import saved_figure, write_json


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", help="policy checkpoint (default: the shipped Push-T checkpoint)")
    parser.add_argument("--sampler", default="parataa", help="one sampler, name[:option=value...]")
    parser.add_argument("--delays", type=int_list, default=(0, 1, 2, 3, 4, 6), help="delays in control steps")
    parser.add_argument("--replan-every", type=int, default=8, help="steps between plans (the same in every row)")
    parser.add_argument("--episodes", type=int, default=PAPER_EPISODES)
    parser.add_argument("--seed", type=int, default=PAPER_FIRST_SEED, help="first episode seed")
    parser.add_argument("--max-steps", type=int, default=300, help="environment steps per episode")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", required=True, help="results; the episode log goes next to it")
    parser.add_argument("--plot", help="PNG of score and chunk-switch jump against delay")
    add_scheduler_options(parser)
    add_sampler_options(parser)


def run(args) -> int:
    [spec] = sampler_specs(args.sampler, parallel_options(args))
    seeds = list(range(args.seed, args.seed + args.episodes))
    rows = []
    for delay in args.delays:
        for chunking in (False, True):
            execution = {"delay_steps": delay, "replan_every": args.replan_every, "real_time_chunking": chunking}
            [summary] = evaluate(args.checkpoint or shipped_checkpoint(), [(spec.name, spec.options)], seeds,
                                 workers=args.workers, max_steps=args.max_steps, episode_log=f"{args.json}.episodes.jsonl",
                                 scheduler=scheduler_overrides(args), execution={k: v for k, v in execution.items() if v})
            rows.append({"delay_steps": delay, "real_time_chunking": chunking, **summary})
    add_paired_differences(rows)
    write_json(rows, args.json)
    print(format_table(rows))
    if args.plot:
        plot_delays(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_paired_differences(rows: list[dict[str, Any]]) -> None:
    """Each row's score minus the D = 0 plain row's, paired by seed: mean and 95% half-width."""
    baseline = {episode["seed"]: episode["score"] for episode in rows[0]["per_episode"]}
    for row in rows:
        differences = np.array([episode["score"] - baseline[episode["seed"]] for episode in row["per_episode"]])
        half = 1.96 * differences.std(ddof=1) / math.sqrt(len(differences)) if len(differences) > 1 else float("nan")
        row["paired_vs_baseline"] = {"mean": float(differences.mean()), "half_width_95": float(half)}


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| delay (steps) | execution | mean score (95% CI) | paired vs D=0 plain | jump at switch mean / max px | "
             "step within chunk px |", "|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        low, high = row["score_ci95"]
        paired = row["paired_vs_baseline"]
        lines.append(f"| {row['delay_steps']} | {'real-time chunking' if row['real_time_chunking'] else 'plain'} | "
                     f"{row['mean_score']:.3f} ({low:.3f}-{high:.3f}) | {paired['mean']:+.3f} +- "
                     f"{paired['half_width_95']:.3f} | {row['switch_jump_mean']:.1f} / {row['switch_jump_max']:.1f} | "
                     f"{row['step_mean']:.1f} |")
    return "\n".join(lines)


def plot_delays(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Mean score (95% CI) and the mean jump at chunk switches against delay, one line per execution."""
    with saved_figure(path, ncols=2, figsize=(10, 3.8)) as (score_axis, jump_axis):
        for chunking, label in ((False, "plain delayed execution"), (True, "real-time chunking")):
            mine = [row for row in rows if row["real_time_chunking"] == chunking]
            delays = [row["delay_steps"] for row in mine]
            means = np.array([row["mean_score"] for row in mine])
            errors = np.array([[m - row["score_ci95"][0], row["score_ci95"][1] - m] for m, row in zip(means, mine)]).T
            score_axis.errorbar(delays, means, yerr=errors, marker="o", capsize=4, label=label)
            jump_axis.plot(delays, [row["switch_jump_mean"] for row in mine], marker="o", label=label)
        step = np.mean([row["step_mean"] for row in rows])
        jump_axis.axhline(step, color="black", linestyle="--", label=f"mean step within a chunk ({step:.1f} px)")
        score_axis.set_xlabel("delay (control steps)")
        score_axis.set_ylabel("mean score (95% CI)")
        score_axis.set_title(f"Push-T, {rows[0]['episodes']} episodes per point")
        jump_axis.set_xlabel("delay (control steps)")
        jump_axis.set_ylabel("mean jump at a chunk switch (px)")
        jump_axis.set_title("smoothness at chunk switches")
        for axis in (score_axis, jump_axis):
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
