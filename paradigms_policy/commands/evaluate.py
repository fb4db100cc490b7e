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

from ..resources import shipped_checkpoint
from ..vision import image_input
from .options import add_sampler_options, add_scheduler_options, parallel_options, sampler_specs, scheduler_overrides
from .output import saved_figure, write_json

PAPER_FIRST_SEED = 100000
PAPER_EPISODES = 50
MAX_EPISODE_STEPS = 300

_worker_policy = None


def add_arguments(parser) -> None:
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
    parser.add_argument("--real-time-chunking", action="store_true",
                        help="inpaint each new chunk with the actions committed while it is computed")
    parser.add_argument("--soft-overlap", action="store_true",
                        help="with --real-time-chunking: also pull the rest of the running chunk's overlap, with "
                             "RTC's decaying weights (soft inpainting)")
    parser.add_argument("--guided-overlap", action="store_true",
                        help="with --real-time-chunking: guide the chunk towards the committed actions and the rest "
                             "of the running chunk's overlap with those weights (RTC's guidance)")
    add_scheduler_options(parser)
    add_sampler_options(parser)


def run(args) -> int:
    if args.episodes < 1:
        raise ValueError("--episodes must be at least 1")
    checkpoint = args.checkpoint or shipped_checkpoint()
    specs = sampler_specs(args.sampler, parallel_options(args))
    execution = {name: value for name, value in (("delay_steps", args.delay_steps), ("replan_every", args.replan_every),
                                                 ("real_time_chunking", args.real_time_chunking),
                                                 ("soft_overlap", args.soft_overlap),
                                                 ("guided_overlap", args.guided_overlap)) if value}
    if (args.soft_overlap or args.guided_overlap) and not args.real_time_chunking:
        raise ValueError("--soft-overlap and --guided-overlap need --real-time-chunking")
    if args.soft_overlap and args.guided_overlap:
        raise ValueError("choose one of --soft-overlap and --guided-overlap")
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


def run_episode(policy, seed: int, max_steps: int = MAX_EPISODE_STEPS, video_path: str | Path | None = None,
                delay_steps: int = 0, replan_every: int | None = None,
                real_time_chunking: bool = False, soft_overlap: bool = False,
                guided_overlap: bool = False) -> dict[str, Any]:
    """One Push-T episode; returns its score, success, per-chunk sampler statistics and smoothness.

    By default the protocol of the paper: plan from the observation at step t, execute its
    n_action_steps actions at t, t+1, ..., then plan again. delay_steps and replan_every emulate a
    controller that runs in real time, as policy_node does: a chunk is planned every
    `replan_every` steps, its actions arrive `delay_steps` steps late (the previous chunk's, or
    holding the agent still, fill the gap), and actions delay_steps .. delay_steps + replan_every - 1
    of it are executed. real_time_chunking: each new chunk is inpainted with the actions that are
    committed when it is planned (the last executed one and the delay_steps that run before it
    arrives), so it continues them; soft_overlap: the rest of the running chunk's actions that overlap
    the new one are inpainted too, with weights decaying from 1 (soft inpainting, `inpainting.soft_weights`);
    guided_overlap: the committed actions are held and the chunk is guided towards them and the rest of the
    overlap with those weights (RTC's guidance, `samplers/guidance.py`).
    """
    import torch

    from ..pusht.env import PushTKeypointsEnv, episode_score

    if soft_overlap and guided_overlap:
        raise ValueError("choose one of soft_overlap and guided_overlap")
    overlap = "soft" if soft_overlap else "guided" if guided_overlap else "hard"
    replan_every = checked_replan_every(policy.config, delay_steps, replan_every)
    env = PushTKeypointsEnv(render=video_path is not None)
    policy.reset()
    try:
        observation = env.reset(seed=seed)
        history = deque([step_observation(policy.config, env, observation)] * policy.config.n_obs_steps,
                        maxlen=policy.config.n_obs_steps)
        generator = torch.Generator().manual_seed(seed)
        player = ChunkPlayer(delay_steps, replan_every, hold=observation[-2:])
        coverages, outputs, frames = [], [], []
        done = False
        while not done and len(coverages) < max_steps:
            step = len(coverages)
            if step % replan_every == 0:
                options = commitment_options(policy, player, step, overlap) if real_time_chunking else {}
                outputs.append(policy.predict(observation_window(history), generator=generator, **options))
                player.receive(step, policy.executed_actions(outputs[-1].action_horizon,
                                                             policy.config.max_executed_actions))
            observation, coverage, done, _ = env.step(player.next_action(step))
            history.append(step_observation(policy.config, env, observation))
            coverages.append(coverage)
            if video_path is not None:
                frames.append(env.render()[::2, ::2])
        score, success = episode_score(coverages)
        if video_path is not None:
            import imageio.v2 as imageio

            imageio.mimsave(video_path, frames, duration=0.1, loop=0)
    finally:
        env.close()
    return {"seed": seed, "score": float(score), "success": bool(success), "max_coverage": float(max(coverages)),
            "steps": len(coverages), **chunk_statistics(outputs), **player.smoothness()}


def step_observation(config, env, observation: np.ndarray):
    """One step of the policy's input: the 20-value observation, or for an image policy {camera: the frame
    gym-pusht draws at the camera's size (`vision.image_input`), low-dim key: the agent position}."""
    if not config.image_keys:
        return observation
    cameras = [spec for spec in config.observations if spec.kind == "image"]
    if len(cameras) != 1 or config.obs_dim != 2 or cameras[0].shape[1] != cameras[0].shape[2]:
        raise ValueError("the Push-T harness has one square camera and the agent position (2 values); this policy "
                         f"observes {[(spec.key, list(spec.shape)) for spec in config.observations]}")
    return {cameras[0].key: image_input(env.frame(cameras[0].shape[1])),
            config.low_dim_keys[0]: observation[-2:].astype(np.float32)}


def observation_window(history):
    """The window of step observations: (n_obs_steps, obs_dim), or per key (n_obs_steps, *shape)."""
    if isinstance(history[0], dict):
        return {key: np.stack([step[key] for step in history]) for key in history[0]}
    return np.stack(history)


def chunk_statistics(outputs) -> dict[str, Any]:
    latencies = [output.latency_s for output in outputs]
    return {"chunks": len(outputs), "latency_p50_ms": 1000 * float(np.median(latencies)),
            "latency_max_ms": 1000 * float(np.max(latencies)),
            "rounds_median": float(np.median([output.stats.rounds for output in outputs])),
            "model_evals_median": float(np.median([output.stats.model_evals for output in outputs]))}


class ChunkPlayer:
    """The actions a controller executes when chunks planned every `replan_every` steps arrive `delay_steps` late.

    Until a chunk's actions are due, the previous chunk's continue, or the agent holds its last
    target. Records every executed action and the steps at which a new chunk took over.
    """

    def __init__(self, delay_steps: int, replan_every: int, hold: np.ndarray):
        self.delay_steps, self.replan_every = delay_steps, replan_every
        self.planned: dict[int, np.ndarray] = {}  # step -> action
        self.predicted: dict[int, np.ndarray] = {}  # step -> the newest chunk's action for it, executed or not
        self.executed: list[np.ndarray] = []
        self.switches: list[int] = []  # steps whose action was a new chunk's first
        self.hold = np.asarray(hold, dtype=np.float64)

    def committed(self, step: int) -> list[np.ndarray]:
        """What is fixed when a chunk is planned at `step`: the last executed action, then the actions of
        steps step .. step + delay_steps - 1, which run before the new chunk arrives."""
        actions = self.executed[-1:]
        upcoming = self.executed[-1] if self.executed else self.hold
        for due in range(step, step + self.delay_steps):
            upcoming = self.planned.get(due, upcoming)
            actions.append(upcoming)
        return actions

    def overlap(self, step: int) -> list[np.ndarray]:
        """The newest chunk's actions for the steps after those `committed(step)` returns, as far as it reaches."""
        actions, due = [], step + self.delay_steps
        while due in self.predicted:
            actions.append(self.predicted[due])
            due += 1
        return actions

    def receive(self, step: int, ahead: np.ndarray) -> None:
        """A chunk planned at `step` (its actions from that step on, at least delay + replan_every of them)
        replaces the plan from step + delay on."""
        first = step + self.delay_steps
        self.planned.update({first + j: ahead[self.delay_steps + j] for j in range(self.replan_every)})
        self.predicted = {step + j: action for j, action in enumerate(ahead)}
        self.switches.append(first)

    def next_action(self, step: int) -> np.ndarray:
        previous = self.executed[-1] if self.executed else self.hold
        self.executed.append(self.planned.pop(step, previous))
        return self.executed[-1]

    def smoothness(self) -> dict[str, float]:
        """Mean and max jump at chunk switches (new chunk's first action against the action before it),
        and the mean step between consecutive actions within a chunk (pixels)."""
        steps = np.linalg.norm(np.diff(np.asarray(self.executed), axis=0), axis=1)  # steps[k-1]: action k-1 -> k
        switch = {k for k in self.switches if 0 < k < len(self.executed)}
        jumps = [steps[k - 1] for k in sorted(switch)]
        within = [steps[k - 1] for k in range(1, len(self.executed)) if k not in switch]
        return {"switch_jump_mean": float(np.mean(jumps)) if jumps else 0.0,
                "switch_jump_max": float(np.max(jumps)) if jumps else 0.0,
                "step_mean": float(np.mean(within)) if within else 0.0}


def commitment_options(policy, player: ChunkPlayer, step: int, overlap: str = "hard") -> dict[str, Any]:
    """Sampler options that inpaint the player's committed actions at their places in the new chunk's horizon,
    and use the rest of the running chunk's overlap by `overlap` (`DiffusionPolicy.commitment`'s mode).

    Horizon position n_obs_steps - 1 is the newest observation's step, so the last executed action
    sits one before it.
    """
    actions = player.committed(step)
    if not actions:
        return {}
    first = policy.config.n_obs_steps - 1 - (1 if player.executed else 0)
    following = player.overlap(step)[: policy.config.horizon - first - len(actions)]
    return policy.commitment(np.stack(actions), first, np.stack(following) if following else None, overlap)


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
        **({"switch_jump_mean": float(np.mean([row["switch_jump_mean"] for row in episodes])),
            "switch_jump_max": float(np.max([row["switch_jump_max"] for row in episodes])),
            "step_mean": float(np.mean([row["step_mean"] for row in episodes]))} if "step_mean" in episodes[0] else {}),
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
    execution = execution or {}
    checked_replan_every(config, execution.get("delay_steps", 0), execution.get("replan_every"))
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
    labels = [row["label"].replace(" ", "\n") for row in summaries]
    # Room for the option-laden labels of every sampler, one per line.
    with saved_figure(path, ncols=2, figsize=(max(9.0, 2.8 * len(summaries)), 3.8)) as (score_axis, latency_axis):
        means = [row["mean_score"] for row in summaries]
        errors = [[row["mean_score"] - row["score_ci95"][0] for row in summaries],
                  [row["score_ci95"][1] - row["mean_score"] for row in summaries]]
        score_axis.bar(labels, means, yerr=errors, capsize=6, color="tab:blue")
        score_axis.set_ylim(min(0.8, min(means) - 0.05), 1.0)
        score_axis.set_ylabel("mean score (95% CI)")
        score_axis.set_title(f"Push-T, {summaries[0]['episodes']} episodes")
        bars = latency_axis.bar(labels, [row["latency_p50_ms"] for row in summaries], color="tab:orange")
        for bar, row in zip(bars, summaries):
            latency_axis.annotate(f"{row['rounds_median']:g} rounds",
                                  (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                                  fontsize=9)
        latency_axis.set_ylabel("latency per chunk, p50 (ms)")
        latency_axis.set_title("sampling time per chunk")
        for axis in (score_axis, latency_axis):
            axis.tick_params(axis="x", labelsize=8)


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
