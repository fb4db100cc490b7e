"""`paradigms-policy eval`: Push-T task score of a policy per sampler, as the Diffusion Policy paper.

Protocol: episodes with seeds S, S+1, ... (default the paper's 50 test seeds from 100000), at most
300 environment steps, n_action_steps actions executed per predicted chunk, the observation window
padded at the start by repeating the first observation. Score of an episode = max over its steps of
clip(coverage / 0.95, 0, 1); success = coverage >= 0.95 at some step (the episode then ends).

Episodes run in worker processes, one policy per worker; every (sampler, seed) pair is one task,
so all samplers share the workers and their latencies are measured in the same run. Each episode
seeds the sampler's generator with its own seed, so samplers see the same noise stream.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

PAPER_FIRST_SEED = 100000
PAPER_EPISODES = 50
MAX_EPISODE_STEPS = 300

_worker_policy = None


def run_episode(policy, seed: int, max_steps: int = MAX_EPISODE_STEPS, video_path: str | Path | None = None,
                delay_steps: int = 0, replan_every: int | None = None) -> dict[str, Any]:
    """One Push-T episode; returns its score, success and per-chunk sampler statistics.

    By default the protocol of the paper: plan from the observation at step t, execute its
    n_action_steps actions at t, t+1, ..., then plan again. delay_steps and replan_every emulate a
    controller that runs in real time, as policy_node does: a chunk is planned every
    `replan_every` steps, its actions arrive `delay_steps` steps late (the previous chunk's, or
    holding the agent still, fill the gap), and actions delay_steps .. delay_steps + replan_every - 1
    of it are executed.
    """
    import torch

    from ..pusht.env import PushTKeypointsEnv, episode_score

    replan_every = checked_replan_every(policy.config, delay_steps, replan_every)
    env = PushTKeypointsEnv(render=video_path is not None)
    policy.reset()
    try:
        observation = env.reset(seed=seed)
        history = deque([observation] * policy.config.n_obs_steps, maxlen=policy.config.n_obs_steps)
        generator = torch.Generator().manual_seed(seed)
        coverages, latencies, rounds, evals, frames = [], [], [], [], []
        planned: dict[int, np.ndarray] = {}  # step -> action
        action = observation[-2:]  # before the first chunk arrives the agent holds still
        done = False
        while not done and len(coverages) < max_steps:
            step = len(coverages)
            if step % replan_every == 0:
                output = policy.predict(np.stack(history), generator=generator)
                latencies.append(output.latency_s)
                rounds.append(output.stats.rounds)
                evals.append(output.stats.model_evals)
                ahead = policy.executed_actions(output.action_horizon, delay_steps + replan_every)
                planned.update({step + j: ahead[j] for j in range(delay_steps, delay_steps + replan_every)})
            action = planned.pop(step, action)
            observation, coverage, done, _ = env.step(action)
            history.append(observation)
            coverages.append(coverage)
            if video_path is not None:
                frames.append(env.render()[::2, ::2])
        score, success = episode_score(coverages)
        if video_path is not None:
            import imageio.v2 as imageio

            imageio.mimsave(video_path, frames, duration=0.1, loop=0)
    finally:
        env.close()
    return {
        "seed": seed,
        "score": float(score),
        "success": bool(success),
        "max_coverage": float(max(coverages)),
        "steps": len(coverages),
        "chunks": len(latencies),
        "latency_p50_ms": 1000 * float(np.median(latencies)),
        "latency_max_ms": 1000 * float(np.max(latencies)),
        "rounds_median": float(np.median(rounds)),
        "model_evals_median": float(np.median(evals)),
    }


def checked_replan_every(config, delay_steps: int = 0, replan_every: int | None = None) -> int:
    """replan_every (default n_action_steps) if the policy predicts enough actions for it, else a ValueError."""
    replan_every = replan_every or config.n_action_steps
    available = config.max_executed_actions
    if delay_steps < 0 or replan_every < 1 or delay_steps + replan_every > available:
        raise ValueError(f"need delay_steps >= 0, replan_every >= 1 and delay_steps + replan_every <= {available}, "
                         f"got {delay_steps} and {replan_every}")
    return replan_every


def summarize(sampler: str, options: dict[str, Any], episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean score with a 95% confidence interval (normal approximation), success rate with Wilson's interval."""
    episodes = sorted(episodes, key=lambda row: row["seed"])
    scores = np.array([row["score"] for row in episodes])
    successes = sum(row["success"] for row in episodes)
    count = len(episodes)
    half_width = 1.96 * scores.std(ddof=1) / math.sqrt(count) if count > 1 else float("nan")
    return {
        "sampler": sampler,
        "label": sampler + "".join(f" {key}={value}" for key, value in options.items()),
        "options": options,
        "episodes": count,
        "mean_score": float(scores.mean()),
        "score_ci95": [float(scores.mean() - half_width), float(scores.mean() + half_width)],
        "success_rate": successes / count,
        "success_ci95": list(_wilson_interval(successes, count)),
        "rounds_median": float(np.median([row["rounds_median"] for row in episodes])),
        "model_evals_median": float(np.median([row["model_evals_median"] for row in episodes])),
        "latency_p50_ms": float(np.median([row["latency_p50_ms"] for row in episodes])),
        "per_episode": episodes,
    }


def evaluate(checkpoint: str | Path, samplers: list[tuple[str, dict[str, Any]]], seeds: list[int],
             workers: int = 2, device: str = "cpu", max_steps: int = MAX_EPISODE_STEPS,
             video_dir: str | Path | None = None, episode_log: str | Path | None = None,
             scheduler: dict[str, Any] | None = None, execution: dict[str, int] | None = None,
             progress: bool = True) -> list[dict[str, Any]]:
    """Run every seed with every sampler; one summary per sampler, in the order given.

    scheduler: overrides of the checkpoint's sampling scheduler, e.g. {"name": "ddim",
    "num_inference_steps": 16}; every summary records the scheduler it sampled with.
    execution: `run_episode`'s delay_steps and replan_every (default: the paper's protocol).

    episode_log: a JSON-lines file that receives every finished episode at once; episodes already
    in it (same sampler, options, seed, step limit, scheduler and execution) are not run again, so
    an interrupted or extended evaluation resumes where it stopped.

    The checkpoint is read once here, so a broken one, or an execution it cannot serve, fails with
    one error before any worker starts.
    """
    from tqdm import tqdm

    from ..checkpoint import read_weights

    config = read_weights(checkpoint).config.with_scheduler(**(scheduler or {}))
    checked_replan_every(config, **(execution or {}))
    if video_dir is not None:
        Path(video_dir).mkdir(parents=True, exist_ok=True)
    keys = [_episode_key(name, options, max_steps, scheduler, execution) for name, options in samplers]
    done = _read_episode_log(episode_log)
    results = [[done[(key, seed)] for seed in seeds if (key, seed) in done] for key in keys]
    tasks = [(index, seed) for seed in seeds for index, key in enumerate(keys) if (key, seed) not in done]
    context = multiprocessing.get_context("spawn")  # torch and OpenMP do not survive fork safely
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context, initializer=_init_worker,
                             initargs=(str(checkpoint), device, scheduler or {})) as pool:
        futures = {}
        for index, seed in tasks:
            name, options = samplers[index]
            video = None if video_dir is None else str(Path(video_dir) / f"{index}-{name}_seed{seed}.gif")
            futures[pool.submit(_worker_episode, name, options, seed, max_steps, video, execution or {})] = index
        with tqdm(total=len(futures), desc="eval", unit="episode", disable=not progress) as bar:
            for future in as_completed(futures):
                episode = future.result()
                results[futures[future]].append(episode)
                if episode_log is not None:
                    with open(episode_log, "a") as log:
                        log.write(json.dumps({"key": keys[futures[future]], **episode}) + "\n")
                bar.update(1)
    return [{**summarize(name, options, episodes), "scheduler": config.scheduler.name,
             "num_inference_steps": config.scheduler.num_inference_steps, "execution": execution or {}}
            for (name, options), episodes in zip(samplers, results)]


def _episode_key(name: str, options: dict[str, Any], max_steps: int, scheduler: dict[str, Any] | None,
                 execution: dict[str, int] | None) -> str:
    key = {"sampler": name, "options": options, "max_steps": max_steps}
    # Runs with the checkpoint's own scheduler and the paper's execution keep the keys they always had.
    if scheduler:
        key["scheduler"] = scheduler
    if execution:
        key["execution"] = execution
    return json.dumps(key, sort_keys=True)


def _read_episode_log(path: str | Path | None) -> dict[tuple[str, int], dict[str, Any]]:
    if path is None or not Path(path).exists():
        return {}
    done = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            done[(record.pop("key"), record["seed"])] = record
    return done


def plot_comparison(summaries: list[dict[str, Any]], path: str | Path) -> None:
    """Score (mean, 95% CI) and latency per chunk for each sampler, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["label"].replace(" ", "\n") for row in summaries]
    # Room for the option-laden labels of every sampler, one per line.
    figure, (score_axis, latency_axis) = plt.subplots(1, 2, figsize=(max(9.0, 2.8 * len(summaries)), 3.8))
    means = [row["mean_score"] for row in summaries]
    errors = [[row["mean_score"] - row["score_ci95"][0] for row in summaries],
              [row["score_ci95"][1] - row["mean_score"] for row in summaries]]
    score_axis.bar(labels, means, yerr=errors, capsize=6, color="tab:blue")
    score_axis.set_ylim(min(0.8, min(means) - 0.05), 1.0)
    score_axis.set_ylabel("mean score (95% CI)")
    score_axis.set_title(f"Push-T, {summaries[0]['episodes']} episodes")
    latencies = [row["latency_p50_ms"] for row in summaries]
    bars = latency_axis.bar(labels, latencies, color="tab:orange")
    for bar, row in zip(bars, summaries):
        latency_axis.annotate(f"{row['rounds_median']:g} rounds", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                              ha="center", va="bottom", fontsize=9)
    latency_axis.set_ylabel("latency per chunk, p50 (ms)")
    latency_axis.set_title("sampling time per chunk")
    for axis in (score_axis, latency_axis):
        axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_training_curve(points: list[tuple[int, dict[str, Any]]], path: str | Path) -> None:
    """Mean score (95% CI) and success rate against training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [step for step, _ in points]
    means = np.array([summary["mean_score"] for _, summary in points])
    lows = np.array([summary["score_ci95"][0] for _, summary in points])
    highs = np.array([summary["score_ci95"][1] for _, summary in points])
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(steps, means, "o-", label="mean score")
    axis.fill_between(steps, lows, highs, alpha=0.25, label="95% CI")
    axis.plot(steps, [summary["success_rate"] for _, summary in points], "s--", label="success rate")
    axis.set_xlabel("training steps")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"Push-T, {points[0][1]['sampler']}, {points[0][1]['episodes']} episodes per checkpoint")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def format_table(summaries: list[dict[str, Any]]) -> str:
    lines = ["| sampler | episodes | mean score (95% CI) | success rate | rounds (median) | latency p50 ms | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    baseline = summaries[0]["latency_p50_ms"]
    for row in summaries:
        low, high = row["score_ci95"]
        lines.append(f"| {row['label']} | {row['episodes']} | {row['mean_score']:.3f} ({low:.3f}-{high:.3f}) | "
                     f"{row['success_rate']:.2f} | {row['rounds_median']:g} | {row['latency_p50_ms']:.1f} | "
                     f"{baseline / row['latency_p50_ms']:.2f}x |")
    return "\n".join(lines)


def _init_worker(checkpoint: str, device: str, scheduler: dict[str, Any]) -> None:
    import torch

    from ..checkpoint import load_policy

    global _worker_policy
    torch.set_num_threads(1)  # one core per worker; more threads per worker only contend
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    _worker_policy = load_policy(checkpoint, device=device)
    if scheduler:
        _worker_policy.set_scheduler(**scheduler)


def _worker_episode(sampler: str, options: dict[str, Any], seed: int, max_steps: int, video_path: str | None,
                    execution: dict[str, int]):
    _worker_policy.set_sampler(sampler, **options)
    return run_episode(_worker_policy, seed, max_steps, video_path, **execution)


def _wilson_interval(successes: int, count: int, z: float = 1.96) -> tuple[float, float]:
    if count == 0:
        return (float("nan"), float("nan"))
    p = successes / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return (max(0.0, centre - half), min(1.0, centre + half))
