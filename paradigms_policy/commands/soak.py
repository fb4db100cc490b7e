"""`paradigms-policy soak`: run the policy node for many control cycles and watch its memory.

One process holds the real `PolicyNode`, a probe node that publishes a stamped Push-T-like
observation (sensor_msgs/JointState) once per control cycle and counts the JointTrajectory and
/diagnostics messages that come back, all on one SingleThreadedExecutor over DDS (LOCALHOST
discovery, a ROS domain of its own). The node's control_rate is the soak rate, so the timing
conventions of `chunk_timing` hold (observations one period apart, actions one period apart).

Every --sample-every cycles the process's resident set size (VmRSS from /proc/self/status;
elsewhere resource.getrusage's peak) and, with --tracemalloc, the traced Python heap are sampled.
The first --warmup-fraction of the cycles is the warm-up (allocator pools, caches and the node's
bounded buffers filling). The summary gives the RSS after the warm-up and at the end and the
least-squares slope of RSS over the post-warm-up samples in KiB per 1000 cycles, and a verdict.
The verdict is information: the exit code is 0 whenever the soak completes (2 on bad arguments).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROG = "paradigms-policy soak"
MIB = 1024.0


# ----------------------------------------------------------------------------------------------
# Measurements (no ROS needed)


def read_process_status() -> dict[str, float]:
    """The numeric fields of /proc/self/status (KiB for memory, a count for Threads); {} where it is absent."""
    fields: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    fields[name] = float(parts[0])
    except OSError:
        pass
    return fields


def read_rss_kib() -> tuple[float, str]:
    """The process's resident set size in KiB and where it came from."""
    rss = read_process_status().get("VmRSS")
    if rss is not None:
        return rss, "VmRSS"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 1024.0 if sys.platform == "darwin" else float(peak)), "ru_maxrss (peak)"


def read_memory_details() -> dict[str, float]:
    """RssAnon, RssFile (mapped files, e.g. libraries paged in) and RssShmem in KiB, and the thread count."""
    wanted = {"RssAnon": "rss_anon_kib", "RssFile": "rss_file_kib", "RssShmem": "rss_shmem_kib", "Threads": "threads"}
    status = read_process_status()
    return {key: status[field] for field, key in wanted.items() if field in status}


def read_peak_rss_kib() -> float | None:
    return read_process_status().get("VmHWM")


def slope_per_1000(cycles: list[float], values: list[float]) -> float | None:
    """Least-squares slope of `values` against `cycles`, per 1000 cycles (None below 2 points)."""
    n = len(cycles)
    if n < 2:
        return None
    mean_x = sum(cycles) / n
    mean_y = sum(values) / n
    sxx = sum((x - mean_x) ** 2 for x in cycles)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(cycles, values))
    return 1000.0 * sxy / sxx


def pusht_observation(cycle: int, rate: float):
    """A plausible 20-value Push-T observation (9 block keypoints, agent x, y; pixels) at `cycle`.

    The agent circles the table and the block drifts and turns slowly, so every cycle differs
    while consecutive observations stay close, as in a real rollout.
    """
    import numpy as np

    from ..pusht.env import observation_from_state

    t = cycle / rate
    two_pi = 2.0 * math.pi
    state = np.array([256.0 + 150.0 * math.cos(two_pi * t / 20.0), 256.0 + 150.0 * math.sin(two_pi * t / 13.0),
                      256.0 + 50.0 * math.sin(two_pi * t / 31.0), 256.0 + 50.0 * math.cos(two_pi * t / 37.0),
                      (two_pi * t / 47.0) % two_pi])
    return observation_from_state(state)


def deep_size(record: dict) -> int:
    """Approximate bytes of one flat record (the dict and its values; keys are shared literals)."""
    return sys.getsizeof(record) + sum(sys.getsizeof(value) for value in record.values())


def verdict_line(slope_kib: float | None, growth_kib: float | None, tolerance: float,
                 explained_kib: float | None, late_slope_kib: float | None = None) -> str:
    if slope_kib is None:
        return "verdict: not enough samples after the warm-up to judge memory growth"
    if slope_kib <= tolerance:
        return (f"verdict: no memory growth (RSS slope {slope_kib:+.1f} KiB per 1000 cycles after the warm-up, "
                f"within the {tolerance:g} KiB tolerance)")
    if late_slope_kib is not None and late_slope_kib <= tolerance:
        return (f"verdict: no sustained memory growth: RSS rose {growth_kib / MIB:+.2f} MiB (fitted) after the "
                f"warm-up in steps, then stayed flat over the last half of the cycles (slope {late_slope_kib:+.1f} "
                f"KiB per 1000 cycles, tolerance {tolerance:g}; over the whole post-warm-up part {slope_kib:+.1f})")
    text = (f"verdict: memory grows: RSS slope {slope_kib:+.1f} KiB per 1000 cycles after the warm-up "
            f"(tolerance {tolerance:g}), {growth_kib / MIB:+.2f} MiB over the post-warm-up cycles")
    if explained_kib is not None and growth_kib:
        text += (f"; the node's chunk_log (a bounded deque) grew about {explained_kib / MIB:.2f} "
                 "MiB over the same cycles")
    return text


# ----------------------------------------------------------------------------------------------
# Arguments


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the shipped Push-T checkpoint)")
    model.add_argument("--random-tiny", action="store_true",
                       help="a tiny randomly initialised Push-T-shaped policy (saved to a temporary directory)")
    parser.add_argument("--cycles", type=int, default=10000, help="control cycles (observations) (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="observations per second; also the node's control_rate (default: %(default)s)")
    parser.add_argument("--sampler", default="paradigms", help="sampler of the node (default: %(default)s)")
    parser.add_argument("--inference-steps", type=int, default=10,
                        help="denoising steps override; 0 = the checkpoint's (default: %(default)s)")
    parser.add_argument("--scheduler", choices=["ddpm", "ddim", "dpmsolver"], default=None,
                        help="scheduler override (default: the checkpoint's)")
    parser.add_argument("--deadline-ms", type=float, default=None,
                        help="the node's deadline (default: 70%% of the chunk's span, (n_action_steps - 1) / rate)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--num-threads", type=int, default=1, help="torch CPU threads of the node (default: %(default)s)")
    parser.add_argument("--diagnostics-rate", type=float, default=1.0, help="/diagnostics rate in Hz (default: %(default)s)")
    parser.add_argument("--sample-every", type=int, default=100, help="cycles between memory samples (default: %(default)s)")
    parser.add_argument("--warmup-fraction", type=float, default=0.1,
                        help="leading fraction of the cycles left out of the growth estimate (default: %(default)s)")
    parser.add_argument("--tolerance-kib", type=float, default=16.0,
                        help="RSS slope (KiB per 1000 cycles) still judged as no growth (default: %(default)s)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also sample the traced Python heap (slows the process down)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random model and of the node's noise")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS domain id (default: $ROS_DOMAIN_ID, else one derived from the process id)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the summary and the samples here")
    parser.add_argument("--plot", default=None, metavar="FILE", help="PNG of RSS against cycles")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _argument_problems(args) -> list[str]:
    problems = []
    if args.cycles < 1:
        problems.append("--cycles must be at least 1")
    if not (args.rate > 0 and math.isfinite(args.rate)) or args.rate > 1000:
        problems.append("--rate must be above 0 and at most 1000 Hz")
    if args.sample_every < 1:
        problems.append("--sample-every must be at least 1")
    if not 0.0 <= args.warmup_fraction < 1.0:
        problems.append("--warmup-fraction must be in [0, 1)")
    if args.inference_steps < 0:
        problems.append("--inference-steps must be 0 (the checkpoint's) or more")
    if args.deadline_ms is not None and not args.deadline_ms > 0:
        problems.append("--deadline-ms must be above 0")
    if args.num_threads < 0:
        problems.append("--num-threads must be 0 (torch's default) or more")
    if args.domain_id is not None and not 0 <= args.domain_id <= 232:
        problems.append("--domain-id must be in 0..232")
    return problems


def save_tiny_checkpoint(directory: Path, seed: int) -> Path:
    """A tiny random native checkpoint (DDIM, 10 steps) with Push-T shapes and pixel normalisers."""
    import numpy as np
    import torch

    from ..checkpoint import save_policy
    from ..config import PolicyConfig, SchedulerConfig
    from ..model import ConditionalUnet1D
    from ..normalizer import AffineNormalizer

    torch.manual_seed(seed)
    config = PolicyConfig.for_shapes(20, 2, down_dims=(16, 32), diffusion_step_embed_dim=16, n_groups=8,
                                     scheduler=SchedulerConfig(name="ddim", num_inference_steps=10))
    model = ConditionalUnet1D.from_config(config.unet).eval()
    pixels = AffineNormalizer.from_min_max(np.zeros(20), np.full(20, 512.0))
    actions = AffineNormalizer.from_min_max(np.zeros(2), np.full(2, 512.0))
    return save_policy(directory / "tiny", config, model, pixels, actions, metadata={"note": "random, soak test"})


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------
# The soak


def run_soak(args: argparse.Namespace) -> int:
    problems = _argument_problems(args)
    if problems:
        return _error("; ".join(problems))
    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory
    except ImportError as err:
        return _error(f"rclpy is not importable ({err}); install ROS 2 or pip install 'paradigms_policy[ros]'")

    from ..checkpoint import CheckpointError, read_weights
    from ..config import ConfigError
    from ..resources import shipped_checkpoint
    from ..ros.policy_node import RELIABLE_COMMANDS, PolicyNode, StartupError, tear_down

    temporary = tempfile.TemporaryDirectory(prefix="soak_ckpt_") if args.random_tiny else None
    try:
        if temporary is not None:
            checkpoint = str(save_tiny_checkpoint(Path(temporary.name), args.seed))
            label = "random tiny (16, 32), DDIM"
        else:
            checkpoint = str(args.checkpoint or shipped_checkpoint())
            label = checkpoint
        try:
            config = read_weights(checkpoint).config
        except (CheckpointError, ConfigError, ValueError, OSError) as err:
            return _error(f"cannot use the checkpoint: {err}")
        span_ms = (config.n_action_steps - 1) * 1000.0 / args.rate
        deadline_ms = args.deadline_ms if args.deadline_ms is not None else round(0.7 * span_ms, 1)
        del config

        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        domain_id = args.domain_id
        if domain_id is None:
            domain_id = int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID", "").isdigit() \
                else 1 + os.getpid() % 100

        overrides = {"checkpoint": checkpoint, "device": args.device, "sampler": args.sampler,
                     "num_inference_steps": args.inference_steps, "scheduler": args.scheduler or "",
                     "control_rate": float(args.rate), "deadline_ms": float(deadline_ms),
                     "num_threads": args.num_threads, "diagnostics_rate": float(args.diagnostics_rate),
                     "seed": args.seed, "warmup_runs": 2}

        context = Context()
        rclpy.init(context=context, domain_id=domain_id)
        nodes: list = []
        executor = None
        spinner = None
        try:
            try:
                node = PolicyNode(context=context,
                                  parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
            except StartupError as err:
                return _error(str(err))
            nodes.append(node)
            probe = rclpy.create_node("soak_probe", context=context)
            nodes.append(probe)
            counts = {"trajectories": 0, "diagnostics": 0, "diagnostics_ok": 0, "diagnostics_warn": 0,
                      "diagnostics_error": 0}

            def on_trajectory(_msg) -> None:
                counts["trajectories"] += 1  # one subscription, one callback at a time

            def on_diagnostics(msg) -> None:
                counts["diagnostics"] += 1
                for status in msg.status:
                    level = status.level  # a one-byte bytes object in rclpy
                    level = level[0] if isinstance(level, (bytes, bytearray)) else int(level)
                    counts["diagnostics_ok" if level == 0 else "diagnostics_warn" if level == 1
                           else "diagnostics_error"] += 1

            probe.create_subscription(JointTrajectory, node.get_parameter("trajectory_topic").value, on_trajectory,
                                      RELIABLE_COMMANDS)
            probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
            observation_pub = probe.create_publisher(JointState, node.get_parameter("observation_topic").value, 10)

            executor = SingleThreadedExecutor(context=context)
            for each in nodes:
                executor.add_node(each)

            def spin() -> None:
                try:
                    executor.spin()
                except ExternalShutdownException:
                    pass

            spinner = threading.Thread(target=spin, name="soak-executor", daemon=True)
            spinner.start()
            trajectory_topic = node.get_parameter("trajectory_topic").value
            discovery_end = time.monotonic() + 10.0
            while not (observation_pub.get_subscription_count() >= 1 and node.count_subscribers(trajectory_topic) >= 1):
                if time.monotonic() > discovery_end:
                    print(f"{PROG}: error: the probe and the policy node did not discover each other in 10 s",
                          file=sys.stderr)
                    return 1
                time.sleep(0.01)

            stats0 = node.statistics()
            scheduler = node.policy.config.scheduler
            print(f"soak: {args.cycles} cycles at {args.rate:g} Hz, checkpoint {label}, sampler {stats0['sampler']} "
                  f"on {stats0['device']}, {scheduler.name} x {scheduler.num_inference_steps} steps, deadline "
                  f"{deadline_ms:g} ms, ROS domain {domain_id}", flush=True)

            if args.tracemalloc:
                import tracemalloc

                tracemalloc.start()
            samples: list[dict[str, Any]] = []
            warmup_cycles = int(args.cycles * args.warmup_fraction)
            period = 1.0 / args.rate
            clock = probe.get_clock()
            late_cycles = 0
            rss_source = None

            snapshots: list = []

            def sample(cycle: int, started: float) -> None:
                nonlocal rss_source
                if args.tracemalloc and cycle == warmup_cycles and not snapshots:
                    snapshots.append(tracemalloc.take_snapshot())
                rss, rss_source = read_rss_kib()
                entry = {"cycle": cycle, "t_s": round(time.monotonic() - started, 3), "rss_kib": rss,
                         "trajectories": counts["trajectories"], "chunk_log_len": len(node.chunk_log)}
                entry.update(read_memory_details())
                if args.tracemalloc:
                    entry["heap_kib"] = tracemalloc.get_traced_memory()[0] / 1024.0
                samples.append(entry)

            progress_every = max(1, args.cycles // 10)
            started = time.monotonic()
            next_due = started
            sample(0, started)
            for cycle in range(args.cycles):
                now = time.monotonic()
                if next_due > now:
                    time.sleep(next_due - now)
                elif now - next_due > 0.5 * period:
                    late_cycles += 1
                    next_due = now  # do not bunch observations up to catch up: keep them a period apart
                msg = JointState()
                stamp = clock.now().nanoseconds
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                msg.position = [float(v) for v in pusht_observation(cycle, args.rate)]
                observation_pub.publish(msg)
                next_due += period
                done = cycle + 1
                if done % args.sample_every == 0 or done == args.cycles or done == warmup_cycles:
                    sample(done, started)
                if not args.quiet and done % progress_every == 0:
                    stats = node.statistics()
                    print(f"  cycle {done}/{args.cycles}: RSS {samples[-1]['rss_kib'] / MIB:.1f} MiB, "
                          f"{counts['trajectories']} trajectories, {stats['deadline_misses']} misses, "
                          f"{stats['observations_rejected']} rejected", flush=True)
            duration = time.monotonic() - started
            # Let the last chunk arrive (inference of the last window, then delivery).
            time.sleep(min(5.0, deadline_ms / 1000.0 + 3 * period + 0.2))
            stats = node.statistics()
            chunk_log = list(node.chunk_log)
            top_growth = None
            if args.tracemalloc:
                if snapshots:
                    top_growth = heap_growth_sites(snapshots[0], tracemalloc.take_snapshot())
                tracemalloc.stop()

            summary = summarise(args, label, deadline_ms, domain_id, duration, samples, warmup_cycles, counts,
                                stats, late_cycles, rss_source, chunk_log)
            if top_growth is not None:
                summary["heap_growth_sites"] = top_growth
            print(format_summary(summary), flush=True)
            if args.json:
                from .bench import write_json

                write_json({"summary": summary, "samples": samples}, args.json)
                print(f"wrote {args.json}")
            if args.plot:
                plot_rss(samples, warmup_cycles, summary, args.plot)
                print(f"wrote {args.plot}")
            return 0
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        finally:
            tear_down(executor, spinner, nodes, context)
    finally:
        if temporary is not None:
            temporary.cleanup()


def _mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / MIB, 2)


def summary_half(samples: list[dict[str, Any]]) -> float:
    """The cycle that starts the last half of the run."""
    return samples[-1]["cycle"] / 2.0


def summarise(args, label, deadline_ms, domain_id, duration, samples, warmup_cycles, counts, stats, late_cycles,
              rss_source, chunk_log) -> dict[str, Any]:
    after = [s for s in samples if s["cycle"] >= warmup_cycles]
    slope = slope_per_1000([s["cycle"] for s in after], [s["rss_kib"] for s in after])
    late = [s for s in after if s["cycle"] >= summary_half(samples)]
    late_slope = slope_per_1000([s["cycle"] for s in late], [s["rss_kib"] for s in late])
    start, end = (after[0], after[-1]) if after else (samples[0], samples[-1])
    post_cycles = end["cycle"] - start["cycle"]
    growth = None if slope is None else slope * post_cycles / 1000.0
    # The node keeps a record per chunk (and per miss) in a deque (bounded, but large): estimate
    # what the records added after the warm-up hold, to tell that part of the growth apart.
    per_record = (sum(deep_size(r) for r in chunk_log[-50:]) / min(50, len(chunk_log))) if chunk_log else 0.0
    explained = None
    if after:
        explained = (end["chunk_log_len"] - start["chunk_log_len"]) * per_record / 1024.0
    summary: dict[str, Any] = {
        "checkpoint": label, "sampler": stats["sampler"], "device": stats["device"],
        "inference_steps": args.inference_steps, "rate_hz": args.rate, "deadline_ms": deadline_ms,
        "domain_id": domain_id, "cycles": args.cycles, "duration_s": round(duration, 2),
        "achieved_rate_hz": round(args.cycles / duration, 2) if duration > 0 else None,
        "late_cycles": late_cycles, "warmup_cycles": warmup_cycles,
        "trajectories_received": counts["trajectories"], "chunks_published": stats["chunks_published"],
        "inferences": stats["inferences"], "deadline_misses": stats["deadline_misses"],
        "miss_late": stats["miss_late"], "miss_no_time": stats["miss_no_time"],
        "miss_outdated": stats["miss_outdated"], "inference_errors": stats["inference_errors"],
        "observations_received": stats["observations_received"],
        "observations_accepted": stats["observations_accepted"],
        "observations_rejected": stats["observations_rejected"],
        "windows_not_contiguous": stats["windows_not_contiguous"],
        "latency_p50_ms": stats["latency_p50_ms"], "latency_p99_ms": stats["latency_p99_ms"],
        "rounds_mean": stats["rounds_mean"],
        "diagnostics_received": counts["diagnostics"], "diagnostics_warn": counts["diagnostics_warn"],
        "diagnostics_error": counts["diagnostics_error"],
        "rss_source": rss_source, "rss_start_mib": round(start["rss_kib"] / MIB, 2),
        "rss_end_mib": round(end["rss_kib"] / MIB, 2),
        "rss_min_mib": round(min(s["rss_kib"] for s in after or samples) / MIB, 2),
        "rss_max_mib": round(max(s["rss_kib"] for s in after or samples) / MIB, 2),
        "rss_peak_mib": _mib(read_peak_rss_kib()),
        "rss_slope_kib_per_1000_cycles": None if slope is None else round(slope, 2),
        "rss_fitted_growth_mib": None if growth is None else round(growth / MIB, 3),
        "rss_slope_last_half_kib_per_1000_cycles": None if late_slope is None else round(late_slope, 2),
        "threads_start": start.get("threads"), "threads_end": end.get("threads"),
        "rss_anon_start_mib": _mib(start.get("rss_anon_kib")), "rss_anon_end_mib": _mib(end.get("rss_anon_kib")),
        "rss_file_start_mib": _mib(start.get("rss_file_kib")), "rss_file_end_mib": _mib(end.get("rss_file_kib")),
        "chunk_log_entries": len(chunk_log), "chunk_log_record_bytes": round(per_record),
        "chunk_log_growth_post_warmup_mib": None if explained is None else round(explained / MIB, 3),
        "tolerance_kib_per_1000_cycles": args.tolerance_kib,
    }
    if args.tracemalloc and after and "heap_kib" in after[0]:
        heap_slope = slope_per_1000([s["cycle"] for s in after], [s["heap_kib"] for s in after])
        summary.update(heap_start_mib=round(start["heap_kib"] / MIB, 3), heap_end_mib=round(end["heap_kib"] / MIB, 3),
                       heap_slope_kib_per_1000_cycles=None if heap_slope is None else round(heap_slope, 2))
    summary["verdict"] = verdict_line(slope, growth, args.tolerance_kib, explained, late_slope)
    return summary


def heap_growth_sites(before, after, limit: int = 10) -> list[dict[str, Any]]:
    """The source lines whose traced allocations grew most between two tracemalloc snapshots."""
    import tracemalloc

    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "lineno")
    return [{"site": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}",
             "growth_kib": round(stat.size_diff / 1024.0, 1), "count_growth": stat.count_diff}
            for stat in stats[:limit]]


def format_summary(s: dict[str, Any]) -> str:
    def number(value, spec=".1f"):
        return "n/a" if value is None else format(value, spec)

    lines = [
        f"cycles: {s['cycles']} in {s['duration_s']:.1f} s ({number(s['achieved_rate_hz'], '.2f')} Hz achieved, "
        f"{s['late_cycles']} late by more than half a period)",
        f"trajectories: {s['trajectories_received']} received, {s['chunks_published']} published by the node, "
        f"{s['inferences']} inferences, latency p50 {number(s['latency_p50_ms'])} ms p99 "
        f"{number(s['latency_p99_ms'])} ms",
        f"deadline misses: {s['deadline_misses']} (late {s['miss_late']}, no time {s['miss_no_time']}, "
        f"outdated {s['miss_outdated']}); inference errors: {s['inference_errors']}",
        f"observations: {s['observations_received']} received, {s['observations_rejected']} rejected, "
        f"{s['windows_not_contiguous']} non-contiguous windows; /diagnostics: {s['diagnostics_received']} "
        f"({s['diagnostics_warn']} warn, {s['diagnostics_error']} error)",
        f"RSS ({s['rss_source']}): {s['rss_start_mib']:.2f} MiB after the warm-up ({s['warmup_cycles']} cycles), "
        f"{s['rss_end_mib']:.2f} MiB at the end (min {s['rss_min_mib']:.2f}, max {s['rss_max_mib']:.2f}, peak "
        f"{number(s['rss_peak_mib'], '.2f')}); slope {number(s['rss_slope_kib_per_1000_cycles'], '+.1f')} KiB "
        f"per 1000 cycles ({number(s['rss_slope_last_half_kib_per_1000_cycles'], '+.1f')} over the last half); "
        f"anon {number(s['rss_anon_start_mib'], '.2f')} -> {number(s['rss_anon_end_mib'], '.2f')} MiB, file "
        f"{number(s['rss_file_start_mib'], '.2f')} -> {number(s['rss_file_end_mib'], '.2f')} MiB, threads "
        f"{s['threads_start']} -> {s['threads_end']}",
        f"chunk_log: {s['chunk_log_entries']} records of ~{s['chunk_log_record_bytes']} B "
        f"({number(s['chunk_log_growth_post_warmup_mib'], '.3f')} MiB added after the warm-up)",
    ]
    if "heap_slope_kib_per_1000_cycles" in s:
        lines.append(f"Python heap (tracemalloc): {s['heap_start_mib']:.3f} -> {s['heap_end_mib']:.3f} MiB, slope "
                     f"{number(s['heap_slope_kib_per_1000_cycles'], '+.1f')} KiB per 1000 cycles")
    for site in s.get("heap_growth_sites", [])[:5]:
        lines.append(f"  heap growth {site['growth_kib']:+.1f} KiB ({site['count_growth']:+d} blocks) at {site['site']}")
    lines.append(s["verdict"])
    return "\n".join(lines)


def plot_rss(samples: list[dict[str, Any]], warmup_cycles: int, summary: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cycles = [s["cycle"] for s in samples]
    rss = [s["rss_kib"] / MIB for s in samples]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    if warmup_cycles > 0:
        axis.axvspan(0, warmup_cycles, color="0.85", label="warm-up")
    axis.plot(cycles, rss, lw=1.2, label="RSS")
    slope = summary.get("rss_slope_kib_per_1000_cycles")
    after = [s for s in samples if s["cycle"] >= warmup_cycles]
    if slope is not None and after:
        xs = [s["cycle"] for s in after]
        mean_x = sum(xs) / len(xs)
        mean_y = sum(s["rss_kib"] for s in after) / len(after) / MIB
        axis.plot([xs[0], xs[-1]], [mean_y + slope / 1000.0 * (x - mean_x) / MIB for x in (xs[0], xs[-1])],
                  "--", lw=1.0, label=f"fit: {slope:+.1f} KiB / 1000 cycles")
    if "heap_kib" in samples[0]:
        twin = axis.twinx()
        twin.plot(cycles, [s["heap_kib"] / MIB for s in samples], color="tab:green", lw=0.8)
        twin.set_ylabel("traced Python heap (MiB)", color="tab:green")
    axis.set_xlabel("control cycle")
    axis.set_ylabel("RSS (MiB)")
    axis.set_title(f"policy node soak: {summary['cycles']} cycles at {summary['rate_hz']:g} Hz, "
                   f"{summary['sampler']}, {summary['trajectories_received']} trajectories", fontsize=10)
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_soak_arguments(parser)
    return run_soak(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
