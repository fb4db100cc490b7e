"""`paradigms-policy demo`: the policy node and the Push-T simulation node in one process, without `ros2 launch`.

Both nodes are the real ROS 2 nodes, configured from the same parameter files as the launch file
(config/policy.yaml and config/pusht_sim.yaml by default) and talking over DDS (LOCALHOST
discovery, a ROS domain id of their own). They spin on one SingleThreadedExecutor until the
simulation has run the requested episodes; the demo prints each episode's score and the latency
per chunk, then shuts everything down.

In real time (the default) a chunk starts executing only once it is ready, and the node plans it
while the previous one runs, inpainted with what runs meanwhile (real-time chunking); `--lockstep`
runs the simulation on simulated time and waits for each chunk (config/lockstep.yaml), which
executes chunks exactly as `paradigms-policy eval` does and so gives the same score for the same
seeds, whatever the computer.

The simulation publishes what the policy observes: the keypoints, or for an image policy (one
whose checkpoint has image keys) the camera frame (sensor_msgs/Image) and the agent position,
stamped alike, which the policy node pairs by stamp (`ros/demo_nodes.py`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..control.statistics import percentiles
from ..resources import CPU_OVERLAY, default_params_files, lockstep_params_file

PROG = "paradigms-policy demo"
SIM_TIMING = ("max_steps", "control_rate", "reset_pause_s", "lockstep", "lockstep_timeout_s", "max_real_time_factor")
SIM_OBSERVATION = ("observation", "image_topic", "image_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="policy checkpoint (default: the params file's value; empty there = the shipped "
                             "Push-T checkpoint)")
    parser.add_argument("--sampler", default=None,
                        help="sampler, e.g. sequential, paradigms or parataa (default: the params file's)")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: the params file's)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=100000, help="seed of the first episode (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="steps per episode (default: the params file's, 300)")
    parser.add_argument("--params-file", "--params-files", dest="params_files", action="append", default=None,
                        metavar="FILE", help="ROS 2 parameter file; repeat for several (default: the package's "
                                             "config/policy.yaml and config/pusht_sim.yaml, and "
                                             "config/policy_cpu.yaml when the policy runs on a CPU)")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: the params file's)")
    parser.add_argument("--lockstep", action="store_true",
                        help="run the simulation on simulated time and wait for each chunk (config/lockstep.yaml, "
                             "loaded last): chunks execute as in `paradigms-policy eval`, with the checkpoint's "
                             "scheduler even on a CPU")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the episodes (score, steps, chunks, latency) and the summary to FILE")
    parser.add_argument("--video", default=None, metavar="DIR", help="write one video per episode into DIR")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS domain id (default: $ROS_DOMAIN_ID, else one derived from the process id)")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


def _fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{_ms(seconds):.1f} ms"


def _error(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def params_files(args: argparse.Namespace) -> list[str]:
    """The parameter files of both nodes: --params-file, else the package's (with the CPU overlay
    when the policy runs on a CPU), then the lockstep overlay with --lockstep; ValueError if one is missing."""
    if args.params_files:
        files = list(args.params_files)
    elif args.lockstep:  # no deadline to meet on simulated time: keep the checkpoint's scheduler
        files = default_params_files(on_cpu=False)
    else:
        from ..policy import resolve_device

        on_cpu = resolve_device(args.device or "auto").type == "cpu"
        files = default_params_files(on_cpu)
        if on_cpu:
            print(f"demo: no CUDA device, so the policy samples DDIM-16 ({CPU_OVERLAY}); pass --params-file "
                  "to choose the parameter files yourself")
    if args.lockstep:
        files.append(lockstep_params_file())
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ValueError(f"parameter file not found: {', '.join(missing)}")
    return files


def node_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The policy node's and the simulation node's parameters set on the command line."""
    policy = {name: value for name, value in (("checkpoint", args.checkpoint), ("sampler", args.sampler),
                                              ("device", args.device), ("num_threads", args.num_threads))
              if value is not None}
    sim: dict[str, Any] = {"episodes": args.episodes, "seed": args.seed}
    if args.max_steps is not None:
        sim["max_steps"] = args.max_steps
    if args.video:
        sim["video_dir"] = str(Path(args.video).resolve())
    return policy, sim


def timeout_s(sim: dict[str, Any], episodes: int) -> float:
    """Time allowed for the episodes, from the simulation's timing parameters (SIM_TIMING)."""
    per_episode_s = sim["max_steps"] / sim["control_rate"] + sim["reset_pause_s"]
    if sim["lockstep"]:  # faster than real time, but each step may wait up to the timeout
        per_episode_s = per_episode_s / sim["max_real_time_factor"] + sim["max_steps"] * sim["lockstep_timeout_s"]
    return episodes * (1.5 * per_episode_s + 10.0) + 30.0


def latency_percentiles(chunks: list[dict[str, Any]], key: str = "latency_s") -> list[float | None]:
    """p50 and p99 of a chunk record field (seconds) over the chunks that have it."""
    return percentiles([c[key] for c in chunks if c[key] is not None])


def episode_row(result: dict[str, Any], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """An episode's result with its chunk counts and latency percentiles (ms)."""
    p50, p99 = latency_percentiles(chunks)
    published = sum(c["published"] for c in chunks)
    return dict(result, chunks=published, deadline_misses=len(chunks) - published, latency_p50_ms=_ms(p50),
                latency_p99_ms=_ms(p99))


def episode_line(row: dict[str, Any], number: int, total: int) -> str:
    ms = {key: "n/a" if row[key] is None else f"{row[key]:.1f} ms" for key in ("latency_p50_ms", "latency_p99_ms")}
    return (f"episode {number}/{total} seed {row['seed']}: score {row['score']:.3f} "
            f"({'success' if row['success'] else 'no success'}), {row['steps']} steps "
            f"({row['held_steps']} without a fresh command), {row['chunks']} chunks, {row['deadline_misses']} "
            f"deadline misses, latency per chunk p50 {ms['latency_p50_ms']} p99 {ms['latency_p99_ms']}"
            + (f", video {row['video']}" if "video" in row else ""))


def summary_lines(rows: list[dict[str, Any]], stats: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    """The closing lines: mean score and success, latency per chunk over the kept chunk records."""
    p50, p99 = latency_percentiles(log)
    a50, a99 = latency_percentiles(log, "ready_age_s")
    scores = [r["score"] for r in rows]
    rounds = "n/a" if stats["rounds_mean"] is None else format(stats["rounds_mean"], ".1f")
    frames = f", {stats['frames_rejected']} frames rejected" if "frames_rejected" in stats else ""
    return [f"mean score {sum(scores) / len(scores):.3f}, success {sum(r['success'] for r in rows)}/{len(rows)}",
            f"latency per chunk: inference p50 {_fmt_ms(p50)}, p99 {_fmt_ms(p99)}; observation to ready "
            f"p50 {_fmt_ms(a50)}, p99 {_fmt_ms(a99)}; {stats['chunks_published']} chunks published, "
            f"{stats['deadline_misses']} deadline misses, mean rounds {rounds}, "
            f"{stats['observations_rejected']} observations rejected{frames}"]


def summary_document(rows, stats, log, lockstep: bool, files: list[str], observation: str) -> dict[str, Any]:
    p50, p99 = latency_percentiles(log)
    scores = [r["score"] for r in rows]
    return {"sampler": stats["sampler"], "window": stats["window"], "tolerance": stats["tolerance"],
            "device": stats["device"], "lockstep": lockstep, "observation": observation,
            "frames_rejected": stats.get("frames_rejected", 0), "params_files": [str(f) for f in files],
            "episodes": len(rows), "mean_score": sum(scores) / len(scores),
            "success_rate": sum(r["success"] for r in rows) / len(rows), "latency_p50_ms": _ms(p50),
            "latency_p99_ms": _ms(p99), "chunks_published": stats["chunks_published"],
            "deadline_misses": stats["deadline_misses"], "rounds_mean": stats["rounds_mean"], "per_episode": rows}


def run(args: argparse.Namespace) -> int:
    try:
        from ..ros.common import run_nodes
        from ..ros.demo_nodes import DemoNodes
    except ImportError as err:
        return _error(f"the ROS 2 Python client library is not importable ({err}); install ROS 2 or "
                      "pip install 'paradigms_policy[ros]'")
    if args.episodes < 1:
        return _error("--episodes must be at least 1")
    try:
        files = params_files(args)
    except ValueError as err:
        return _error(str(err))
    if args.video:
        Path(args.video).mkdir(parents=True, exist_ok=True)
    if args.json:  # before the run, so that a bad path fails now and not after the episodes
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    return run_nodes(lambda: DemoNodes(files, *node_overrides(args), domain_id=args.domain_id),
                     lambda nodes: _run_episodes(args, nodes, files), PROG)


def _run_episodes(args: argparse.Namespace, nodes, files: list[str]) -> int:
    session, policy = nodes.session, nodes.policy
    sim = nodes.sim_parameters(*SIM_TIMING, *SIM_OBSERVATION)
    observed = "keypoints" if sim["observation"] == "keypoints" else \
        f"{sim['image_size']}x{sim['image_size']} frames on '{sim['image_topic']}' and the agent position"
    print(f"demo: ROS domain {session.domain_id} ({session.discovery_range} discovery), sampler "
          f"{policy.sampler_choice.describe()} on {policy.policy.device}, observing {observed}, {args.episodes} "
          f"episode(s) from seed {args.seed}, parameters from {', '.join(map(str, files))}")
    rows = []
    try:
        for result, chunks in nodes.episodes(args.episodes, timeout_s(sim, args.episodes)):
            rows.append(episode_row(result, chunks))
            print(episode_line(rows[-1], len(rows), args.episodes), flush=True)
    except TimeoutError as err:
        return _error(str(err), 1)
    stats, log = policy.statistics(), policy.ledger.records()
    print("\n".join(summary_lines(rows, stats, log)))
    if args.json:
        document = summary_document(rows, stats, log, bool(sim["lockstep"]), files, sim["observation"])
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
