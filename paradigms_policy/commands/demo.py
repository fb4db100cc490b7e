"""`paradigms-policy demo`: the policy node and the Push-T simulation node in one process, without `ros2 launch`.

Both nodes are the real ROS 2 nodes, configured from the same parameter files as the launch file
(config/policy.yaml and config/pusht_sim.yaml by default) and talking over DDS (LOCALHOST
discovery, a ROS domain id of their own). They spin on one SingleThreadedExecutor until the
simulation has run the requested episodes; the demo prints each episode's score and the latency
per chunk, then shuts everything down.

In real time (the default) a chunk starts executing only once it is ready, so the policy's
latency costs score where inference is slow; `--lockstep` runs the simulation on simulated time
and waits for each chunk (config/lockstep.yaml), which executes chunks exactly as `paradigms-policy
eval` does and so gives the same score for the same seeds, whatever the computer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from ..control.statistics import percentiles
from ..resources import CPU_OVERLAY, default_params_files, lockstep_params_file

def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="policy checkpoint (default: the params file's value; empty there = the shipped "
                             "Push-T checkpoint)")
    parser.add_argument("--sampler", default=None,
                        help="sampler, e.g. sequential or paradigms (default: the params file's)")
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


def run_demo(args: argparse.Namespace) -> int:
    try:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.parameter import Parameter
    except ImportError as err:
        print(f"paradigms-policy demo: error: rclpy is not importable ({err}); install ROS 2 or "
              "pip install 'paradigms_policy[ros]'", file=sys.stderr)
        return 2
    if args.episodes < 1:
        print("paradigms-policy demo: error: --episodes must be at least 1", file=sys.stderr)
        return 2
    if args.params_files:
        files = list(args.params_files)
    elif args.lockstep:  # no deadline to meet on simulated time: keep the checkpoint's scheduler
        files = default_params_files(on_cpu=False)
    else:
        from ..policy import resolve_device

        try:
            on_cpu = resolve_device(args.device or "auto").type == "cpu"
        except ValueError as err:
            print(f"paradigms-policy demo: error: {err}", file=sys.stderr)
            return 2
        files = default_params_files(on_cpu)
        if on_cpu:
            print(f"demo: no CUDA device, so the policy samples DDIM-16 ({CPU_OVERLAY}); pass --params-file "
                  "to choose the parameter files yourself")
    if args.lockstep:
        files.append(lockstep_params_file())
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        print(f"paradigms-policy demo: error: parameter file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.video:
        Path(args.video).mkdir(parents=True, exist_ok=True)
    if args.json:  # before the run, so that a bad path fails now and not after the episodes
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)

    # Discovery stays on this machine unless the caller chose otherwise; a domain of our own.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain_id = args.domain_id
    if domain_id is None:
        domain_id = int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID", "").isdigit() \
            else 1 + os.getpid() % 100

    from ..ros.policy_node import PolicyNode, StartupError, tear_down
    from ..ros.pusht_sim_node import PushTSimNode

    cli_args = ["--ros-args"]
    for f in files:
        cli_args += ["--params-file", str(f)]
    policy_overrides = [Parameter(name, value=value) for name, value in
                        (("checkpoint", args.checkpoint), ("sampler", args.sampler), ("device", args.device),
                         ("num_threads", args.num_threads)) if value is not None]
    sim_overrides = [Parameter("episodes", value=args.episodes), Parameter("seed", value=args.seed)]
    if args.max_steps is not None:
        sim_overrides.append(Parameter("max_steps", value=args.max_steps))
    if args.video:
        sim_overrides.append(Parameter("video_dir", value=str(Path(args.video).resolve())))

    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    nodes = []
    executor = None
    spinner = None
    try:
        try:
            policy = PolicyNode(context=context, cli_args=cli_args, parameter_overrides=policy_overrides)
            nodes.append(policy)
            sim = PushTSimNode(context=context, cli_args=cli_args, parameter_overrides=sim_overrides)
            nodes.append(sim)
        except StartupError as err:
            print(f"paradigms-policy demo: error: {err}", file=sys.stderr)
            return 2
        print(f"demo: ROS domain {domain_id} ({os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']} discovery), "
              f"sampler {policy.statistics()['sampler']} on {policy.policy.device}, "
              f"{args.episodes} episode(s) from seed {args.seed}, parameters from {', '.join(map(str, files))}")
        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)
        def spin():
            try:
                executor.spin()
            except ExternalShutdownException:  # Ctrl-C shut the context down
                pass

        spinner = threading.Thread(target=spin, name="demo-executor", daemon=True)
        spinner.start()

        sim_values = {name: sim.get_parameter(name).value for name in
                      ("max_steps", "control_rate", "reset_pause_s", "lockstep", "lockstep_timeout_s",
                       "max_real_time_factor")}
        per_episode_s = sim_values["max_steps"] / sim_values["control_rate"] + sim_values["reset_pause_s"]
        if sim_values["lockstep"]:  # faster than real time, but each step may wait up to the timeout
            per_episode_s = (per_episode_s / sim_values["max_real_time_factor"]
                             + sim_values["max_steps"] * sim_values["lockstep_timeout_s"])
        deadline = time.monotonic() + args.episodes * (1.5 * per_episode_s + 10.0) + 30.0
        reported = 0
        chunk_mark = 0
        rows = []
        while reported < args.episodes:
            if time.monotonic() > deadline:
                print(f"paradigms-policy demo: error: timed out after {reported} of {args.episodes} episode(s)",
                      file=sys.stderr)
                return 1
            sim.finished.wait(0.2)
            while reported < len(sim.results):
                result = sim.results[reported]
                new_chunks = policy.chunk_count - chunk_mark
                chunks = list(policy.chunk_log)[-new_chunks:] if new_chunks else []
                chunk_mark += new_chunks
                p50, p99 = percentiles([c["latency_s"] for c in chunks if c["latency_s"] is not None])
                published = sum(c["published"] for c in chunks)
                misses = len(chunks) - published
                reported += 1
                rows.append(dict(result, chunks=published, deadline_misses=misses,
                                 latency_p50_ms=_ms(p50),
                                 latency_p99_ms=_ms(p99)))
                print(f"episode {reported}/{args.episodes} seed {result['seed']}: score {result['score']:.3f} "
                      f"({'success' if result['success'] else 'no success'}), {result['steps']} steps "
                      f"({result['held_steps']} without a fresh command), "
                      f"{published} chunks, {misses} deadline misses, latency per chunk p50 {_fmt_ms(p50)} "
                      f"p99 {_fmt_ms(p99)}" + (f", video {result['video']}" if "video" in result else ""), flush=True)

        stats = policy.statistics()
        log = list(policy.chunk_log)
        p50, p99 = percentiles([c["latency_s"] for c in log if c["latency_s"] is not None])
        a50, a99 = percentiles([c["ready_age_s"] for c in log if c["ready_age_s"] is not None])
        scores = [r["score"] for r in sim.results]
        successes = sum(r["success"] for r in sim.results)
        print(f"mean score {sum(scores) / len(scores):.3f}, success {successes}/{len(scores)}")
        print(f"latency per chunk: inference p50 {_fmt_ms(p50)}, p99 {_fmt_ms(p99)}; observation to ready "
              f"p50 {_fmt_ms(a50)}, p99 {_fmt_ms(a99)}; {stats['chunks_published']} chunks published, "
              f"{stats['deadline_misses']} deadline misses, mean rounds "
              f"{'n/a' if stats['rounds_mean'] is None else format(stats['rounds_mean'], '.1f')}, "
              f"{stats['observations_rejected']} observations rejected")
        if args.json:
            summary = {"sampler": stats["sampler"], "device": str(policy.policy.device),
                       "lockstep": bool(sim_values["lockstep"]), "params_files": [str(f) for f in files],
                       "episodes": len(scores), "mean_score": sum(scores) / len(scores),
                       "success_rate": successes / len(scores),
                       "latency_p50_ms": _ms(p50),
                       "latency_p99_ms": _ms(p99),
                       "chunks_published": stats["chunks_published"], "deadline_misses": stats["deadline_misses"],
                       "rounds_mean": stats["rounds_mean"], "per_episode": rows}
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0
    except KeyboardInterrupt:
        print("paradigms-policy demo: interrupted", file=sys.stderr)
        return 130
    finally:
        tear_down(executor, spinner, nodes, context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paradigms-policy demo", description=__doc__)
    add_demo_arguments(parser)
    return run_demo(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
