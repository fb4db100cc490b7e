"""`paradigms-policy soak`: run the policy node for many control cycles and watch its memory.

One process holds the real `PolicyNode`, a probe node that publishes a stamped Push-T-like
observation (sensor_msgs/JointState) once per control cycle and counts the JointTrajectory and
/diagnostics messages that come back, all on one SingleThreadedExecutor over DDS (LOCALHOST
discovery, a ROS domain of its own). The node's control_rate is the soak rate, so the timing
conventions of `control.timing` hold (observations one period apart, actions one period apart).

Every --sample-every cycles the process's resident set size (VmRSS from /proc/self/status;
elsewhere resource.getrusage's peak) and, with --tracemalloc, the traced Python heap are sampled.
The first --warmup-fraction of the cycles is the warm-up (allocator pools, caches and the node's
bounded buffers filling). The summary gives the RSS after the warm-up and at the end and the
least-squares slope of RSS over the post-warm-up samples in KiB per 1000 cycles, and a verdict.
The verdict is information: the exit code is 0 whenever the soak completes (2 on bad arguments).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..control.memory import MemorySampler, read_peak_rss_kib, slope_per_1000
from ..resources import shipped_checkpoint

PROG = "paradigms-policy soak"
MIB = 1024.0
# The node's statistics the summary takes over as they are.
NODE_STATISTICS = ("chunks_published", "inferences", "deadline_misses", "miss_late", "miss_no_time", "miss_outdated",
                   "inference_errors", "observations_received", "observations_accepted", "observations_rejected",
                   "windows_not_contiguous", "latency_p50_ms", "latency_p99_ms", "rounds_mean")


# ----------------------------------------------------------------------------------------------
# Observations and the verdict


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the shipped Push-T checkpoint)")
    model.add_argument("--random-tiny", action="store_true",
                       help="a tiny randomly initialised Push-T-shaped policy (saved to a temporary directory)")
    parser.add_argument("--cycles", type=int, default=10000, help="control cycles (observations) (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="observations per second; also the node's control_rate (default: %(default)s)")
    parser.add_argument("--sampler", default="parataa", help="sampler of the node (default: %(default)s)")
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


def _error(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def soak_checkpoint(args) -> Iterator[tuple[str, str]]:
    """(checkpoint path, label): the tiny random one (in a temporary directory) or the chosen one."""
    if not args.random_tiny:
        checkpoint = str(args.checkpoint or shipped_checkpoint())
        yield checkpoint, checkpoint
        return
    with tempfile.TemporaryDirectory(prefix="soak_ckpt_") as directory:
        yield str(save_tiny_checkpoint(Path(directory), args.seed)), "random tiny (16, 32), DDIM"


def node_parameters(args, checkpoint: str, deadline_ms: float) -> dict[str, Any]:
    """The policy node's parameters: the soak rate is its control rate."""
    return {"checkpoint": checkpoint, "device": args.device, "sampler": args.sampler,
            "num_inference_steps": args.inference_steps, "scheduler": args.scheduler or "",
            "control_rate": float(args.rate), "deadline_ms": float(deadline_ms), "num_threads": args.num_threads,
            "diagnostics_rate": float(args.diagnostics_rate), "seed": args.seed, "warmup_runs": 2}


def deadline_for(args, checkpoint: str) -> float:
    """--deadline-ms, else 70% of the chunk's span (n_action_steps - 1) / rate, in ms."""
    if args.deadline_ms is not None:
        return args.deadline_ms
    from ..checkpoint import read_weights

    config = read_weights(checkpoint).config
    return round(0.7 * (config.n_action_steps - 1) * 1000.0 / args.rate, 1)


@dataclass
class SoakRun:
    """What a soak measured."""

    label: str
    deadline_ms: float
    domain_id: int
    duration_s: float
    late_cycles: int
    counts: dict[str, int]
    stats: dict[str, Any]
    chunk_log: list[dict[str, Any]]
    memory: MemorySampler


def publish_cycles(args, probe, memory: MemorySampler) -> tuple[float, int]:
    """Publish --cycles observations one period apart, sampling memory; (seconds taken, late cycles)."""
    period = 1.0 / args.rate
    progress_every = max(1, args.cycles // 10)
    late_cycles = 0
    started = next_due = time.monotonic()

    def sample(cycle: int) -> None:
        memory.sample(cycle, trajectories=probe.counts["trajectories"], chunk_log_len=len(probe.node.ledger.records()))

    sample(0)
    for cycle in range(args.cycles):
        now = time.monotonic()
        if next_due > now:
            time.sleep(next_due - now)
        elif now - next_due > 0.5 * period:
            late_cycles += 1
            next_due = now  # do not bunch observations up to catch up: keep them a period apart
        probe.publish(pusht_observation(cycle, args.rate))
        next_due += period
        done = cycle + 1
        if done % args.sample_every == 0 or done == args.cycles or done == memory.warmup_cycles:
            sample(done)
        if not args.quiet and done % progress_every == 0:
            stats = probe.node.statistics()
            print(f"  cycle {done}/{args.cycles}: RSS {memory.samples[-1]['rss_kib'] / MIB:.1f} MiB, "
                  f"{probe.counts['trajectories']} trajectories, {stats['deadline_misses']} misses, "
                  f"{stats['observations_rejected']} rejected", flush=True)
    return time.monotonic() - started, late_cycles


def run(args: argparse.Namespace) -> int:
    problems = _argument_problems(args)
    if problems:
        return _error("; ".join(problems))
    try:
        from ..ros.common import run_nodes
        from ..ros.soak_probe import SoakProbe
    except ImportError as err:
        return _error(f"the ROS 2 Python client library is not importable ({err}); install ROS 2 or "
                      "pip install 'paradigms_policy[ros]'")
    from ..checkpoint import CheckpointError
    from ..config import ConfigError

    with soak_checkpoint(args) as (checkpoint, label):
        try:
            deadline_ms = deadline_for(args, checkpoint)
        except (CheckpointError, ConfigError, ValueError, OSError) as err:
            return _error(f"cannot use the checkpoint: {err}")
        return run_nodes(lambda: SoakProbe(node_parameters(args, checkpoint, deadline_ms), args.domain_id),
                         lambda probe: _soak(args, probe, label, deadline_ms), PROG)


def _soak(args, probe, label: str, deadline_ms: float) -> int:
    if not probe.wait_for_discovery(10.0):
        return _error("the probe and the policy node did not discover each other in 10 s", 1)
    stats, scheduler = probe.node.statistics(), probe.node.policy.config.scheduler
    print(f"soak: {args.cycles} cycles at {args.rate:g} Hz, checkpoint {label}, sampler "
          f"{probe.node.sampler_choice.describe()} on {stats['device']}, {scheduler.name} x "
          f"{scheduler.num_inference_steps} steps, deadline {deadline_ms:g} ms, ROS domain {probe.session.domain_id}",
          flush=True)
    memory = MemorySampler(args.tracemalloc, int(args.cycles * args.warmup_fraction))
    duration, late_cycles = publish_cycles(args, probe, memory)
    # Let the last chunk arrive (inference of the last window, then delivery).
    time.sleep(min(5.0, deadline_ms / 1000.0 + 3 / args.rate + 0.2))
    run = SoakRun(label, deadline_ms, probe.session.domain_id, duration, late_cycles, dict(probe.counts),
                  probe.node.statistics(), probe.node.ledger.records(), memory)
    summary = summarise(args, run)
    print(format_summary(summary), flush=True)
    if args.json:
        from .output import write_json

        write_json({"summary": summary, "samples": memory.samples}, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_rss(memory.samples, memory.warmup_cycles, summary, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / MIB, 2)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summarise(args, run: SoakRun) -> dict[str, Any]:
    """The summary document: the run, the node's counters, and the memory after the warm-up."""
    stats, counts = run.stats, run.counts
    summary: dict[str, Any] = {
        "checkpoint": run.label, "sampler": stats["sampler"], "window": stats["window"],
        "tolerance": stats["tolerance"], "device": stats["device"], "inference_steps": args.inference_steps,
        "rate_hz": args.rate, "deadline_ms": run.deadline_ms, "domain_id": run.domain_id, "cycles": args.cycles,
        "duration_s": round(run.duration_s, 2),
        "achieved_rate_hz": round(args.cycles / run.duration_s, 2) if run.duration_s > 0 else None,
        "late_cycles": run.late_cycles, "warmup_cycles": run.memory.warmup_cycles,
        "trajectories_received": counts["trajectories"], "diagnostics_received": counts["diagnostics"],
        "diagnostics_warn": counts["diagnostics_warn"], "diagnostics_error": counts["diagnostics_error"],
    }
    summary.update({key: stats[key] for key in NODE_STATISTICS})
    summary.update(memory_summary(args, run))
    return summary


def memory_summary(args, run: SoakRun) -> dict[str, Any]:
    """RSS (and heap) after the warm-up: start, end, range, fitted slope and growth, and the verdict."""
    samples = run.memory.samples
    after = [s for s in samples if s["cycle"] >= run.memory.warmup_cycles]
    slope = slope_per_1000([s["cycle"] for s in after], [s["rss_kib"] for s in after])
    late = [s for s in after if s["cycle"] >= samples[-1]["cycle"] / 2.0]  # the last half of the run
    late_slope = slope_per_1000([s["cycle"] for s in late], [s["rss_kib"] for s in late])
    start, end = (after[0], after[-1]) if after else (samples[0], samples[-1])
    growth = None if slope is None else slope * (end["cycle"] - start["cycle"]) / 1000.0
    # The node keeps a record per chunk (and per miss) in a bounded but large log: estimate what the
    # records added after the warm-up hold, to tell that part of the growth apart.
    recent = run.chunk_log[-50:]
    per_record = sum(deep_size(r) for r in recent) / len(recent) if recent else 0.0
    explained = (end["chunk_log_len"] - start["chunk_log_len"]) * per_record / 1024.0 if after else None
    summary = {
        "rss_source": run.memory.rss_source, "rss_start_mib": _mib(start["rss_kib"]), "rss_end_mib": _mib(end["rss_kib"]),
        "rss_min_mib": _mib(min(s["rss_kib"] for s in after or samples)),
        "rss_max_mib": _mib(max(s["rss_kib"] for s in after or samples)), "rss_peak_mib": _mib(read_peak_rss_kib()),
        "rss_slope_kib_per_1000_cycles": _rounded(slope, 2),
        "rss_fitted_growth_mib": None if growth is None else round(growth / MIB, 3),
        "rss_slope_last_half_kib_per_1000_cycles": _rounded(late_slope, 2),
        "threads_start": start.get("threads"), "threads_end": end.get("threads"),
        "rss_anon_start_mib": _mib(start.get("rss_anon_kib")), "rss_anon_end_mib": _mib(end.get("rss_anon_kib")),
        "rss_file_start_mib": _mib(start.get("rss_file_kib")), "rss_file_end_mib": _mib(end.get("rss_file_kib")),
        "chunk_log_entries": len(run.chunk_log), "chunk_log_record_bytes": round(per_record),
        "chunk_log_growth_post_warmup_mib": None if explained is None else round(explained / MIB, 3),
        "tolerance_kib_per_1000_cycles": args.tolerance_kib,
    }
    if run.memory.traced and after:
        heap_slope = slope_per_1000([s["cycle"] for s in after], [s["heap_kib"] for s in after])
        summary.update(heap_start_mib=round(start["heap_kib"] / MIB, 3), heap_end_mib=round(end["heap_kib"] / MIB, 3),
                       heap_slope_kib_per_1000_cycles=_rounded(heap_slope, 2))
    sites = run.memory.finish()
    if sites is not None:
        summary["heap_growth_sites"] = sites
    summary["verdict"] = verdict_line(slope, growth, args.tolerance_kib, explained, late_slope)
    return summary


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
    """RSS against control cycles with the warm-up shaded, the fitted slope, and the traced heap if recorded."""
    from .output import saved_figure

    cycles = [s["cycle"] for s in samples]
    with saved_figure(path, figsize=(8, 4.5)) as axis:
        if warmup_cycles > 0:
            axis.axvspan(0, warmup_cycles, color="0.85", label="warm-up")
        axis.plot(cycles, [s["rss_kib"] / MIB for s in samples], lw=1.2, label="RSS")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
