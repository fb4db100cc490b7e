"""`paradigms-policy gpu-check`: the GPU comparison in one run, within a time budget.

Two models, each at batch 1 and at a small batch (several robots, best-of-N sampling):
- `shipped`: the shipped Push-T checkpoint, DDPM-100 as trained, so the rounds are real;
- `original`: the original Diffusion Policy size (down_dims 256/512/1024, 65.8 M parameters) with
  random weights. Its sequential rows are real measurements (always T steps); its parallel rows
  run exactly the rounds the shipped model needed in the same run (tolerance 0, round cap =
  those rounds), and are labelled "at shipped rounds": the time those rounds take at this size.

Per model and batch: sequential eager, with a CUDA graph per step, as one graph for the whole
loop, and through `torch.compile(mode="reduce-overhead")`; DDIM-16 sequential (what users run
today); ParaDiGMS (window 16) and ParaTAA (whole chain) with fixed-shape windows replayed from CUDA
graphs, in float32 and bfloat16. Every row of the shipped model carries its deviation from a float64
CPU sequential reference for the same noise (normalised action units).

Each part (model x batch) has its own share of the time budget; a part that fails or runs out of
time is recorded as such and the run goes on. The JSON is rewritten after every part, so a run cut
short still leaves what it measured. Off CUDA (`--device cpu`, the CI dry run with `--tiny`) the
same code runs eagerly.
"""
from __future__ import annotations

import datetime
import platform
import re
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..policy import DiffusionPolicy, resolve_device
from ..resources import shipped_checkpoint
from .bench import ChunkSource, SamplerSpec, float64_references, policy_in, random_observations, random_policy
from .output import saved_figure, write_json

GOAL_P50_MS = 10.0  # issue "GPU": the original size, DDPM-100, p50 per chunk at or below this
GOAL_SPEEDUP = 3.0  # ... and at least this over the graph-captured sequential sampler
DDIM_STEPS = 16
# The CPU dry run: tiny U-Nets and short chains, so that the whole script runs in a test.
TINY_SIZES = {"shipped": dict(down_dims=(16, 32), diffusion_step_embed_dim=16),
              "original": dict(down_dims=(16, 32, 64), diffusion_step_embed_dim=16)}
TINY_STEPS, TINY_DDIM_STEPS, TINY_CHUNKS = 10, 4, 2
# torch.compile cannot be interrupted once it starts: a compiled row needs this much of its part's budget left.
COMPILE_MIN_S = 60.0


@dataclass
class Variant:
    """One row: a label, a sampler spec, how the denoiser runs, and the scheduler it samples."""

    label: str
    spec: SamplerSpec
    backend: str = "eager"  # eager, graphs (one CUDA graph per denoiser call), loop (one for the chain), compile:<backend>
    scheduler: dict[str, Any] = field(default_factory=dict)


def variants(compile_backend: str, ddim_steps: int = DDIM_STEPS) -> list[Variant]:
    """The rows of every part, cheapest first; torch.compile last, as its compilation may take minutes."""
    paradigms = {"window": 16, "fixed_shape": True}
    parataa = {"fixed_shape": True}  # the whole chain in one window: its default
    rows = [Variant("sequential, eager", SamplerSpec("sequential")),
            Variant("sequential, graph per step", SamplerSpec("sequential", cuda_graphs=True), "graphs"),
            Variant("sequential, one graph for the loop", SamplerSpec("sequential"), "loop"),
            Variant(f"DDIM-{ddim_steps} sequential, graph per step", SamplerSpec("sequential", cuda_graphs=True), "graphs",
                    {"name": "ddim", "num_inference_steps": ddim_steps})]
    for dtype, short in (("float32", "fp32"), ("bfloat16", "bf16")):
        rows += [Variant(f"ParaDiGMS window 16, graphs, {short}",
                         SamplerSpec("paradigms", dict(paradigms), cuda_graphs=True, dtype=dtype), "graphs"),
                 Variant(f"ParaTAA whole chain, graphs, {short}",
                         SamplerSpec("parataa", dict(parataa), cuda_graphs=True, dtype=dtype), "graphs")]
    rows.append(Variant("sequential, torch.compile reduce-overhead", SamplerSpec("sequential"),
                        f"compile:{compile_backend}"))
    return rows


def add_arguments(parser) -> None:
    parser.add_argument("--output", help="folder for <device>-<date>.json and .png")
    parser.add_argument("--table", metavar="DIR", help="print the README's GPU table from the results in DIR and stop")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the same code)")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and few chunks (the CPU dry run)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-time budget of the whole run (seconds)")
    parser.add_argument("--chunks", type=int, default=30, help="timed chunks per row")
    parser.add_argument("--reference-chunks", type=int, default=12, help="chunks with a float64 CPU reference")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated chunk batches")
    parser.add_argument("--observations", help=".npz of observation windows (`observations`, `episode_starts`) "
                                               "from demonstrations; default: random windows")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (the dry run: eager)")


def run(args) -> int:
    if args.table:
        print(results_table(args.table))
        return 0
    if not args.output:
        raise ValueError("--output is required (or --table)")
    device = resolve_device(args.device)
    batches = [int(part) for part in args.batch_sizes.split(",")]
    chunks = TINY_CHUNKS if args.tiny else args.chunks
    started = time.monotonic()
    document = {"environment": environment(device), "budget_s": args.budget_s, "tiny": args.tiny,
                "goal": {"p50_ms": GOAL_P50_MS, "speedup_vs_graph_sequential": GOAL_SPEEDUP}, "parts": []}
    stem = Path(args.output) / f"{slug(document['environment']['device'])}-{datetime.date.today().isoformat()}"
    parts = [(model, batch) for model in ("shipped", "original") for batch in batches]
    for index, (model, batch) in enumerate(parts):
        share = (args.budget_s - (time.monotonic() - started)) / (len(parts) - index)
        document["parts"].append(run_part(model, batch, device, args, chunks, share, document["parts"]))
        write_json(document, stem.with_suffix(".json"))
    document["wall_s"] = time.monotonic() - started
    write_json(document, stem.with_suffix(".json"))
    plot(document, stem.with_suffix(".png"))
    print(format_table(document))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')} in {document['wall_s']:.0f} s")
    return 0


def run_part(model: str, batch: int, device: torch.device, args, chunks: int, budget_s: float,
             earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """Every variant on one model at one batch size, within `budget_s`; failures are recorded, not raised."""
    started = time.monotonic()
    part = {"model": model, "batch": batch, "budget_s": budget_s, "rows": []}
    try:
        policy = part_policy(model, device, args.tiny)
        part["parameters"] = sum(p.numel() for p in policy.model.parameters())
        source = ChunkSource(part_observations(policy, args.observations, chunks, batch), seed=0)
        rounds = shipped_rounds(earlier, batch) if model == "original" else {}
        references = {} if model == "original" else None
        for variant in variants(args.compile_backend, TINY_DDIM_STEPS if args.tiny else DDIM_STEPS):
            left = budget_s - (time.monotonic() - started)
            needed = COMPILE_MIN_S if variant.backend.startswith("compile:inductor") else 0.0
            if left <= needed:
                part["rows"].append({"label": variant.label, "skipped": "out of time"})
                continue
            part["rows"].append(run_row(policy, variant, source, rounds, references, args.reference_chunks, left))
    except Exception as err:  # a part that cannot start at all (e.g. out of memory) is recorded, the run goes on
        part["error"] = f"{type(err).__name__}: {err}"
    add_graph_speedups(part["rows"])
    part["wall_s"] = time.monotonic() - started
    return part


def part_policy(model: str, device: torch.device, tiny: bool) -> DiffusionPolicy:
    if tiny:
        from ..config import PolicyConfig, SchedulerConfig
        from ..model import ConditionalUnet1D

        torch.manual_seed(0)
        config = PolicyConfig.for_shapes(20, 2, scheduler=SchedulerConfig(num_inference_steps=TINY_STEPS),
                                         **TINY_SIZES[model])
        base = random_policy("shipped", device=device)
        return DiffusionPolicy(config, ConditionalUnet1D.from_config(config.unet), base.obs_normalizer,
                               base.action_normalizer, device=device)
    if model == "original":
        return random_policy("original", device=device)
    from ..checkpoint import load_policy

    return load_policy(shipped_checkpoint(), device=device)


def part_observations(policy: DiffusionPolicy, path: str | None, chunks: int, batch: int) -> np.ndarray:
    """(chunks, batch, n_obs_steps, obs_dim) windows: consecutive demonstration windows, or random ones."""
    needed = chunks * batch
    if path:
        windows = np.load(path)["observations"]
        windows = np.concatenate([windows] * (needed // len(windows) + 1))[:needed]
    else:
        windows = random_observations(policy, needed)
    return windows.reshape(chunks, batch, *windows.shape[1:])


def export_observations(zarr_path: str, path: str, count: int = 256) -> None:
    """Consecutive demonstration windows (one executed chunk apart) for `--observations`, as `bench --data` draws them."""
    from ..checkpoint import read_weights
    from ..pusht.dataset import PushTLowdimDataset

    config = read_weights(shipped_checkpoint()).config
    dataset = PushTLowdimDataset(zarr_path, config.horizon, config.n_obs_steps, config.n_action_steps)
    observations, episode_starts = dataset.rollout_observation_windows(count, seed=0)
    np.savez_compressed(path, observations=observations.astype(np.float32), episode_starts=episode_starts)


def shipped_rounds(parts: list[dict[str, Any]], batch: int) -> dict[str, int]:
    """Median rounds per parallel sampler label measured on the shipped model at this batch size."""
    for part in parts:
        if part["model"] == "shipped" and part["batch"] == batch:
            return {row["label"]: int(round(row["rounds_median"])) for row in part["rows"] if "rounds_median" in row}
    return {}


def run_row(policy: DiffusionPolicy, variant: Variant, source: ChunkSource, rounds: dict[str, int],
            references: dict | None, reference_chunks: int, budget_s: float) -> dict[str, Any]:
    """Time one variant; a failure (compile, capture, memory) becomes the row's `error`."""
    row: dict[str, Any] = {"label": variant.label, "sampler": variant.spec.name, "dtype": variant.spec.dtype,
                           "backend": variant.backend, "scheduler": variant.scheduler or "checkpoint"}
    try:
        solver = prepare(policy, variant, rounds, row)
        if solver is None:
            return row
        timings = time_chunks(solver, source, budget_s)
        row.update(summarize(timings))
        if references is None:  # a policy whose rounds are its own: compare with a float64 CPU run
            row.update(deviation(policy, timings, source, variant, reference_chunks))
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    return row


@dataclass
class Solver:
    """A prepared variant: the policy copy it runs on and its sample function (obs, noise, generator)."""

    policy: DiffusionPolicy
    sample: Callable[..., tuple[torch.Tensor, Any]]


def prepare(policy: DiffusionPolicy, variant: Variant, rounds: dict[str, int], row: dict[str, Any]) -> Solver | None:
    """The policy copy in the variant's precision, scheduler, sampler and denoiser back end."""
    copy = policy_in(policy, variant.spec.dtype)
    if copy is policy:  # a policy of its own: the variant changes its scheduler and back end
        copy = DiffusionPolicy(policy.config, policy.model, policy.obs_normalizer, policy.action_normalizer,
                               device=policy.device)
    if variant.scheduler:
        copy.set_scheduler(**variant.scheduler)
    options = dict(variant.spec.options)
    if rounds and variant.spec.name != "sequential":
        shipped_label = variant.label
        if shipped_label not in rounds:
            row["skipped"] = "no rounds measured on the shipped model"
            return None
        options.update(tolerance=0.0, max_rounds=rounds[shipped_label])
        row["at_shipped_rounds"] = rounds[shipped_label]
    copy.set_sampler(variant.spec.name, **options)
    row["cuda_graphs"] = copy.use_cuda_graphs(variant.backend in ("graphs", "loop"))
    if variant.backend.startswith("compile"):
        copy.use_compiled(backend=variant.backend.split(":", 1)[1])
    if variant.backend == "loop":
        return Solver(copy, loop_sampler(copy))
    return Solver(copy, copy.sample_normalized)


def loop_sampler(policy: DiffusionPolicy) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The sequential chain replayed as one CUDA graph per chunk (eager off CUDA)."""
    from ..graphs import CapturedChainLoop
    from ..samplers import SamplerStats
    from ..samplers.chain import DenoisingChain

    dtype = next(policy.model.parameters()).dtype
    chain = DenoisingChain.cached(policy.scheduler, policy.device, dtype)
    loop = CapturedChainLoop(policy.model.denoise, chain)

    def sample(observations: torch.Tensor, noise: torch.Tensor, generator: torch.Generator):
        noise_terms = chain.draw_noise(noise.shape, generator, policy.device, dtype)
        answer = loop(noise, noise_terms, policy.condition(observations))
        return answer.clone(), SamplerStats(rounds=chain.num_steps, model_evals=chain.num_steps)

    return sample


def time_chunks(solver: Solver, source: ChunkSource, budget_s: float, warmup: int = 2,
                least: int = TINY_CHUNKS) -> list[tuple[torch.Tensor, Any, float, float | None]]:
    """`ChunkSource.solve`'s (answer, stats, seconds, encoding seconds) per chunk after `warmup` untimed ones; stops
    early when the budget runs out."""
    started = time.monotonic()
    for index in range(warmup):
        source.solve(solver.policy, index % len(source), solver.sample)
    timings = []
    for index in range(len(source)):
        if index >= least and time.monotonic() - started > budget_s:
            break
        timings.append(source.solve(solver.policy, index, solver.sample))
    return timings


def summarize(timings: list[tuple[torch.Tensor, Any, float, float | None]]) -> dict[str, Any]:
    seconds = np.array([row[2] for row in timings])
    rounds = np.array([row[1].rounds for row in timings])
    return {"chunks": len(timings), "latency_p50_ms": 1000 * float(np.median(seconds)),
            "latency_p99_ms": 1000 * float(np.percentile(seconds, 99)), "rounds_median": float(np.median(rounds)),
            "rounds_max": int(rounds.max()), "converged": all(row[1].converged for row in timings)}


_REFERENCES: dict[tuple, list[torch.Tensor]] = {}


def deviation(policy: DiffusionPolicy, timings: list, source: ChunkSource, variant: Variant,
              count: int) -> dict[str, Any]:
    """Largest absolute difference from the float64 CPU sequential answer for the same noise, normalised units.

    The reference is made from the float32 `policy` (not from a bf16 copy) with the variant's scheduler.
    """
    count = min(count, len(timings))
    key = (id(source), tuple(sorted(variant.scheduler.items())), count)
    if key not in _REFERENCES:
        config = policy.config.with_scheduler(**variant.scheduler) if variant.scheduler else policy.config
        exact = DiffusionPolicy(config, policy.model, policy.obs_normalizer, policy.action_normalizer, device=policy.device)
        subset = ChunkSource(source.observations[:count], source.seed)
        _REFERENCES[key] = float64_references(exact, subset, progress=False)
    errors = [float((row[0] - reference).abs().max()) for row, reference in zip(timings, _REFERENCES[key])]
    return {"max_abs_dev": max(errors), "median_abs_dev": float(np.median(errors)), "reference_chunks": count}


def add_graph_speedups(rows: list[dict[str, Any]]) -> None:
    """Speed-up of every row over the graph-captured sequential DDPM row of the same part."""
    baseline = [row for row in rows if row.get("backend") == "graphs" and row.get("sampler") == "sequential"
                and row.get("scheduler") == "checkpoint" and "latency_p50_ms" in row]
    for row in rows:
        if baseline and "latency_p50_ms" in row:
            row["speedup_vs_graph_sequential"] = baseline[0]["latency_p50_ms"] / row["latency_p50_ms"]


def environment(device: torch.device) -> dict[str, Any]:
    """Device, versions and (where nvidia-smi answers) clocks, for the record."""
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type != "cuda":
        info["device"] = f"cpu-{platform.machine()}"
        return info
    properties = torch.cuda.get_device_properties(device)
    info.update(device=torch.cuda.get_device_name(device), memory_gib=properties.total_memory / 2**30,
                multiprocessors=properties.multi_processor_count, cudnn=torch.backends.cudnn.version())
    if shutil.which("nvidia-smi"):
        query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu"
        answer = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=20)
        info["nvidia_smi"] = dict(zip(query.split(","), (value.strip() for value in answer.stdout.split(","))))
    return info


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def format_table(document: dict[str, Any]) -> str:
    """Markdown: one table per part (the README's GPU table is made from these rows)."""
    env = document["environment"]
    lines = [f"{env['device']}, torch {env['torch']}, CUDA {env['cuda']}, {env['time'][:10]}"]
    for part in document["parts"]:
        lines += ["", f"**{part['model']}** ({part.get('parameters', 0):,} parameters), batch {part['batch']}"
                      + (f": {part['error']}" if "error" in part else ""), "",
                  "| variant | p50 ms | p99 ms | rounds | vs graph-captured sequential | max abs dev (float64) |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [table_row(row) for row in part["rows"]]
    return "\n".join(lines)


def table_row(row: dict[str, Any]) -> str:
    if "latency_p50_ms" not in row:
        return f"| {row['label']} | {row.get('error') or row.get('skipped')} | | | | |"
    rounds = f"{row['rounds_median']:g}" + (" (at shipped rounds)" if "at_shipped_rounds" in row else "")
    speedup = f"{row['speedup_vs_graph_sequential']:.2f}x" if "speedup_vs_graph_sequential" in row else "-"
    deviation_text = f"{row['max_abs_dev']:.1e}" if "max_abs_dev" in row else "-"
    return (f"| {row['label']} | {row['latency_p50_ms']:.2f} | {row['latency_p99_ms']:.2f} | {rounds} | {speedup} | "
            f"{deviation_text} |")


NO_RESULTS = ("No GPU results are committed yet: no session has been lent a GPU. `benchmarks/gpu_check.sh` "
              "writes them (see `benchmarks/README.md`).")


def results_table(folder: str | Path) -> str:
    """The README's GPU section: every committed result file, newest first, as `format_table` renders it."""
    import json

    files = sorted(Path(folder).glob("*.json"), key=lambda path: path.name.rsplit("-", 3)[-3:], reverse=True)
    if not files:
        return NO_RESULTS
    return "\n\n".join(f"`benchmarks/results/{path.name}`: " + format_table(json.loads(path.read_text())) for path in files)


def plot(document: dict[str, Any], path: Path) -> None:
    """p50 per chunk of every row, one panel per model, one bar per batch size, log scale, goal line."""
    models = list(dict.fromkeys(part["model"] for part in document["parts"]))
    with saved_figure(path, ncols=len(models), figsize=(5.2 * len(models), 5.0)) as axes:
        for panel, (axis, model) in enumerate(zip(np.atleast_1d(axes), models)):
            parts = [part for part in document["parts"] if part["model"] == model]
            labels = [row["label"] for row in parts[0]["rows"]]
            height = 0.8 / len(parts)
            for offset, part in enumerate(parts):
                values = {row["label"]: row.get("latency_p50_ms", 0.0) for row in part["rows"]}
                axis.barh(np.arange(len(labels)) + offset * height, [values.get(label, 0.0) for label in labels],
                          height=height, label=f"batch {part['batch']}")
            axis.axvline(GOAL_P50_MS, color="tab:red", linestyle="--", label=f"goal {GOAL_P50_MS:g} ms")
            axis.set_yticks(np.arange(len(labels)) + 0.4 - height / 2, labels if panel == 0 else [""] * len(labels),
                            fontsize=8)
            axis.invert_yaxis()
            axis.set_xscale("log")
            axis.set_xlabel("p50 per chunk (ms)")
            rounds_note = " (parallel rows at the shipped rounds)" if model == "original" else ""
            axis.set_title(f"{model}, {parts[0].get('parameters', 0) / 1e6:.1f} M parameters{rounds_note}", fontsize=9)
            axis.legend(fontsize=7)


def main(argv: list[str] | None = None) -> int:
    """`python -m paradigms_policy.commands.gpu_check`: what gpu_check.sh runs, importing no other command."""
    import argparse

    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
