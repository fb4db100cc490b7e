"""`paradigms-policy delays`: task score against inference delay, plain delayed execution and real-time chunking.

For every delay D (in control steps) each seed runs once per execution: the new chunk's actions
replace the running ones D steps after its observation (plain), the same with the chunk inpainted
with the actions committed meanwhile (real-time chunking, hard inpainting), and optionally with the
rest of the running chunk's overlap pulled softly too (soft) or guided towards (guided, RTC's
guidance). The baseline is D = 0 plain, the paper's protocol when the replanning period is
n_action_steps. Differences are paired by seed.
All rows share one episode log, so an interrupted study resumes where it stopped.
"""
from __future__ import annotations

import argparse
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

# execution name -> run_episode's options beyond the delay and the replanning period
EXECUTIONS = {"plain": {"real_time_chunking": False},
              "hard": {"real_time_chunking": True},
              "soft": {"real_time_chunking": True, "soft_overlap": True},
              "guided": {"real_time_chunking": True, "guided_overlap": True}}
LABELS = {"plain": "plain delayed execution", "hard": "real-time chunking",
          "soft": "real-time chunking, soft overlap", "guided": "real-time chunking, guided overlap"}


def _executions(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXECUTIONS]
    if unknown or not names or names[0] != "plain":
        raise argparse.ArgumentTypeError(f"must list {', '.join(EXECUTIONS)} names, plain first (got {text!r})")
    return names


def _execution_of(row: dict[str, Any]) -> str:
    """A row's execution name (rows written before soft overlap existed carry only real_time_chunking)."""
    return row.get("mode", "hard" if row["real_time_chunking"] else "plain")


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
    parser.add_argument("--executions", default="plain,hard", type=_executions,
                        help=f"comma-separated, from {', '.join(EXECUTIONS)} (plain first: it is the baseline)")
    add_scheduler_options(parser)
    add_sampler_options(parser)


def run(args) -> int:
    [spec] = sampler_specs(args.sampler, parallel_options(args))
    seeds = list(range(args.seed, args.seed + args.episodes))
    rows = []
    for delay in args.delays:
        for name in args.executions:
            execution = {"delay_steps": delay, "replan_every": args.replan_every, **EXECUTIONS[name]}
            [summary] = evaluate(args.checkpoint or shipped_checkpoint(), [(spec.name, spec.options)], seeds,
                                 workers=args.workers, max_steps=args.max_steps, episode_log=f"{args.json}.episodes.jsonl",
                                 scheduler=scheduler_overrides(args), execution={k: v for k, v in execution.items() if v})
            rows.append({"delay_steps": delay, "mode": name,
                         "real_time_chunking": EXECUTIONS[name]["real_time_chunking"], **summary})
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
        lines.append(f"| {row['delay_steps']} | {LABELS[_execution_of(row)]} | "
                     f"{row['mean_score']:.3f} ({low:.3f}-{high:.3f}) | {paired['mean']:+.3f} +- "
                     f"{paired['half_width_95']:.3f} | {row['switch_jump_mean']:.1f} / {row['switch_jump_max']:.1f} | "
                     f"{row['step_mean']:.1f} |")
    return "\n".join(lines)


def plot_delays(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Mean score (95% CI) and the mean jump at chunk switches against delay, one line per execution."""
    with saved_figure(path, ncols=2, figsize=(10, 3.8)) as (score_axis, jump_axis):
        for name, label in LABELS.items():
            mine = [row for row in rows if _execution_of(row) == name]
            if not mine:
                continue
            delays = [row["delay_steps"] for row in mine]
            means = np.array([row["mean_score"] for row in mine])
            errors = np.array([[m - row["score_ci95"][0], row["score_ci95"][1] - m] for m, row in zip(means, mine)]).T
            score_axis.errorbar(delays, means, yerr=errors, marker="o", capsize=4, label=label)
            jump_axis.plot(delays, [row["switch_jump_mean"] for row in mine], marker="o", label=label)
        step = np.mean([row["step_mean"] for row in rows])
        jump_axis.axhline(step, color="black", linestyle="--", label=f"mean step within a chunk ({step:.1f} px)")
        score_axis.set_xlabel("delay (control steps)")
        score_axis.set_ylabel("mean score (95% CI)")
        score_axis.set_title(f"Push-T, {rows[0]['episodes']} episodes per point, "
                             f"a new chunk every {rows[0]['execution']['replan_every']} steps")
        jump_axis.set_xlabel("delay (control steps)")
        jump_axis.set_ylabel("mean jump at a chunk switch (px)")
        jump_axis.set_title("smoothness at chunk switches")
        for axis in (score_axis, jump_axis):
            axis.set_xticks(sorted({row["delay_steps"] for row in rows}))
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
