"""`paradigms-policy bench`: latency, rounds and accuracy of the samplers on one policy.

Every sampler solves the same chunks: the same observation windows and, per chunk, the same
initial noise and per-step noise (one generator seed per chunk). The deviation is the largest
absolute difference from the sequential sampler's answer for that chunk, in normalised action
units (the sampler's own space, where actions span [-1, 1]).
"""
from __future__ import annotations

import copy
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import PolicyConfig
from ..model import ConditionalUnet1D
from ..normalizer import AffineNormalizer
from ..policy import DiffusionPolicy, batch_size
from ..resources import shipped_checkpoint
from .options import (SamplerSpec, add_sampler_options, add_scheduler_options, parallel_options, sampler_specs,
                      scheduler_overrides)
from .output import saved_figure, write_json

# Model sizes for `--random-model`: the original Diffusion Policy U-Net and the shipped widths.
RANDOM_MODEL_SIZES = {
    "original": dict(down_dims=(256, 512, 1024), diffusion_step_embed_dim=256),
    "shipped": dict(down_dims=(64, 128, 256), diffusion_step_embed_dim=128),
}


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="policy checkpoint (default: the shipped Push-T checkpoint)")
    model.add_argument("--random-model", choices=sorted(RANDOM_MODEL_SIZES),
                       help="a randomly initialised Push-T-shaped policy instead of a checkpoint")
    parser.add_argument("--data", help="Push-T replay zarr to draw observations from (default: random observations)")
    parser.add_argument("--samplers", default="sequential,paradigms",
                        help="comma-separated samplers, each name[:option=value...]")
    parser.add_argument("--reference", choices=["sequential", "float64"], default="sequential",
                        help="deviation against the float32 sequential run or a float64 CPU sequential run")
    parser.add_argument("--chunks", type=int, default=20, help="action chunks (observations) per sampler")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--residual-plot", help="PNG of the residual against rounds on the first chunk")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_scheduler_options(parser)
    add_sampler_options(parser)
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay the denoiser from CUDA graphs (CUDA only; elsewhere the run stays eager)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed chunks per sampler first")
    parser.add_argument("--real-time-chunking", type=int, metavar="DELAY_STEPS",
                        help="inpaint every chunk after an episode's first with the previous chunk's actions for the "
                             "last executed step and DELAY_STEPS more (the rounds with inpainting)")
    overlap = parser.add_mutually_exclusive_group()
    overlap.add_argument("--soft-overlap", action="store_const", const="soft", dest="overlap", default="hard",
                         help="with --real-time-chunking: also pull the rest of the previous chunk softly")
    overlap.add_argument("--guided-overlap", action="store_const", const="guided", dest="overlap",
                         help="with --real-time-chunking: guide towards the rest of the previous chunk (RTC's guidance)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    specs = sampler_specs(args.samplers, parallel_options(args))
    if args.cuda_graphs:
        specs = [replace(spec, cuda_graphs=True) for spec in specs]
    policy = bench_policy(args)
    if args.cuda_graphs and policy.device.type != "cuda":
        print(f"note: CUDA graphs need a CUDA device; on {policy.device} every variant runs eager", file=sys.stderr)
    observations, episode_starts = bench_observations(policy, args.data, args.chunks, args.seed)
    if args.overlap != "hard" and args.real_time_chunking is None:
        raise ValueError(f"--{args.overlap}-overlap needs --real-time-chunking")
    if args.real_time_chunking is not None and episode_starts is None:  # random windows: one episode, so each commits
        episode_starts = np.arange(len(observations)) == 0
    document = run_bench(policy, observations, specs, warmup=args.warmup, seed=args.seed,
                         episode_starts=episode_starts, reference=args.reference, delay_steps=args.real_time_chunking,
                         overlap=args.overlap)
    document["checkpoint"] = f"random:{args.random_model}" if args.random_model else str(args.checkpoint or shipped_checkpoint())
    document["observations"] = "dataset" if args.data else "random"
    document["real_time_chunking_delay_steps"] = args.real_time_chunking
    document["real_time_chunking_overlap"] = args.overlap if args.real_time_chunking is not None else None
    print(format_table(document))
    if args.json:
        write_json(document, args.json)
        print(f"wrote {args.json}")
    if args.residual_plot:
        plot_residuals(document, args.residual_plot)
        print(f"wrote {args.residual_plot}")
    return 0


def bench_policy(args) -> DiffusionPolicy:
    """The policy `--checkpoint` or `--random-model` names, with the scheduler overrides applied."""
    if args.random_model:
        policy = random_policy(args.random_model, device=args.device, seed=args.seed)
    else:
        from ..checkpoint import load_policy

        policy = load_policy(args.checkpoint or shipped_checkpoint(), device=args.device)
    changes = scheduler_overrides(args)
    if changes:
        policy.set_scheduler(**changes)
    return policy


def bench_observations(policy: DiffusionPolicy, data: str | None, count: int, seed: int):
    """(observation windows, episode starts): from demonstration rollouts when `data` names the zarr, else random."""
    if not data:
        return random_observations(policy, count, seed=seed), None
    config = policy.config
    if config.image_keys:
        return image_observations(policy, data, count, seed), None
    from ..pusht.dataset import PushTLowdimDataset

    dataset = PushTLowdimDataset(data, config.horizon, config.n_obs_steps, config.n_action_steps)
    # Consecutive windows of episodes, one executed chunk apart, as a rollout meets them.
    return dataset.rollout_observation_windows(count, seed=seed)


def image_observations(policy: DiffusionPolicy, data: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`count` Push-T image observation windows {key: (n_obs_steps, *shape)} from the demonstrations (frames in [0, 1])."""
    from ..pusht.image_dataset import AGENT_POS_KEY, IMAGE_KEY, PushTImageDataset

    config = policy.config
    if set(config.image_keys) != {IMAGE_KEY} or set(config.low_dim_keys) != {AGENT_POS_KEY}:
        raise ValueError(f"--data serves Push-T's {IMAGE_KEY!r} and {AGENT_POS_KEY!r}; this policy observes "
                         f"{[spec.key for spec in config.observations]}")
    dataset = PushTImageDataset(data, config.horizon, config.n_obs_steps, config.n_action_steps)
    indices = np.random.default_rng(seed).choice(len(dataset), size=count, replace=count > len(dataset))
    batch = dataset.batch(indices)
    frames = batch[IMAGE_KEY].numpy().astype(np.float32) / np.float32(255.0)
    agent = batch[AGENT_POS_KEY][:, : config.n_obs_steps].numpy()
    return [{IMAGE_KEY: frames[i], AGENT_POS_KEY: agent[i]} for i in range(count)]


def policy_in(policy: DiffusionPolicy, dtype: str, device: torch.device | str | None = None) -> DiffusionPolicy:
    """The same policy with its network in another precision (and/or on another device); a copy unless unchanged."""
    device = torch.device(device) if device is not None else policy.device
    if dtype == "float32" and device == policy.device:
        return policy
    model = copy.deepcopy(policy.model).to(device=device, dtype=DTYPES[dtype])
    variant = DiffusionPolicy(policy.config, model, policy.obs_normalizer, policy.action_normalizer, device=device)
    if policy.obs_encoder is not None:
        variant.set_observation_encoder(copy.deepcopy(policy.obs_encoder).to(dtype=DTYPES[dtype]))
    return variant


def random_policy(size: str = "shipped", device: str = "cpu", seed: int = 0) -> DiffusionPolicy:
    """A randomly initialised policy with Push-T low-dim shapes (pixels in [0, 512])."""
    torch.manual_seed(seed)
    config = PolicyConfig.for_shapes(20, 2, **RANDOM_MODEL_SIZES[size])
    model = ConditionalUnet1D.from_config(config.unet)
    return DiffusionPolicy(config, model, AffineNormalizer.from_min_max(np.zeros(20), np.full(20, 512.0)),
                           AffineNormalizer.from_min_max(np.zeros(2), np.full(2, 512.0)), device=device)


def random_observations(policy: DiffusionPolicy, count: int, seed: int = 0) -> np.ndarray:
    """Observation windows drawn uniformly within the normaliser's range (when no data is given)."""
    rng = np.random.default_rng(seed)
    shape = (count, policy.config.n_obs_steps, policy.config.obs_dim)
    normalized = torch.as_tensor(rng.uniform(-1.0, 1.0, size=shape), dtype=torch.float32)
    return policy.obs_normalizer.unnormalize(normalized).numpy()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def run_bench(policy: DiffusionPolicy, observations: np.ndarray, samplers: list[SamplerSpec],
              warmup: int = 2, seed: int = 0, episode_starts: np.ndarray | None = None,
              reference: str = "sequential", progress: bool = True, delay_steps: int | None = None,
              overlap: str = "hard") -> dict[str, Any]:
    """Time each sampler on every observation window; returns the JSON document `bench` writes.

    `episode_starts` marks windows that begin an episode: there a temporal warm start is reset.
    Without it every window counts as the start of its own episode.
    reference: what `max_abs_dev` is measured against, per chunk with the same noise: "sequential"
    (the first spec, plain sequential float32 on the policy's device) or "float64" (the sequential
    chain in float64 on the CPU).
    delay_steps, overlap: real-time chunking with this delay and overlap (`ChunkSource`); delay None: none.
    """
    chunks = ChunkSource(observations, seed, episode_starts, delay_steps, overlap)
    specs = samplers if samplers and samplers[0].name == "sequential" else [SamplerSpec("sequential"), *samplers]
    if reference not in ("sequential", "float64"):
        raise ValueError(f"reference must be 'sequential' or 'float64' (got {reference!r})")
    references = float64_references(policy, chunks, progress) if reference == "float64" else None
    variants: dict[str, DiffusionPolicy] = {}
    measured = []
    with tqdm(total=len(specs) * len(chunks), desc="bench", unit="chunk", disable=not progress) as bar:
        for spec in specs:
            variant = variants.setdefault(spec.dtype, policy_in(policy, spec.dtype))
            measurement = measure(variant, spec, chunks, warmup, bar.update)
            if references is None:  # the first spec is plain sequential: its answers are the reference
                references = measurement.answers
            measured.append(measurement.summary(references))
    add_speedups(measured)
    scheduler = policy.config.scheduler
    return {
        "device": device_name(policy.device),
        "reference": reference,
        "torch": torch.__version__,
        "scheduler": scheduler.name,
        "num_inference_steps": scheduler.num_inference_steps,
        "parameters": sum(p.numel() for p in policy.model.parameters()),
        "encoder_parameters": sum(p.numel() for p in policy.obs_encoder.parameters()) if policy.obs_encoder else 0,
        "results": measured,
    }


@dataclass
class ChunkSource:
    """The chunks every sampler solves: observation windows, one noise seed per chunk, episode starts."""

    # (chunks, n_obs_steps, obs_dim) or (chunks, B, n_obs_steps, obs_dim); for an image policy a list of windows
    # {key: (n_obs_steps, *shape)}
    observations: np.ndarray | list[dict[str, np.ndarray]]
    seed: int = 0
    episode_starts: np.ndarray | None = None
    # Real-time chunking: each chunk after an episode's first is inpainted with the previous chunk's actions
    # for the last executed step and the `delay_steps` that run before it arrives (chunks are one executed
    # chunk, n_action_steps, apart). None: no inpainting.
    delay_steps: int | None = None
    # What of the previous chunk after the held actions is used (`DiffusionPolicy.commitment`'s mode).
    overlap: str = "hard"

    def __len__(self) -> int:
        return len(self.observations)

    def starts_episode(self, index: int) -> bool:
        return True if self.episode_starts is None else bool(self.episode_starts[index])

    def solve(self, variant: DiffusionPolicy, index: int, sample=None,
              previous: torch.Tensor | None = None) -> tuple[torch.Tensor, Any, float, float | None]:
        """(answer in normalised units as float64 on the CPU, sampler statistics, seconds, of which the
        observation encoding's seconds) for chunk `index`.

        sample(observations, noise, generator, **options) -> (answer, stats): default `variant.sample_normalized`
        (with the condition computed and timed first; a given `sample` encodes inside, and the encoding's
        seconds are None). previous: the answer for chunk index - 1, whose actions real-time chunking commits.
        """
        if self.starts_episode(index):
            variant.reset()
            previous = None
        options = self.commitment(variant, previous) if previous is not None and self.delay_steps is not None else {}
        obs = self._window(variant, index)
        generator = torch.Generator().manual_seed(self.seed + index)
        noise = variant.initial_noise(batch_size(obs), generator).to(next(variant.model.parameters()).dtype)
        synchronize(variant.device)
        started = time.perf_counter()
        encoding = None
        if sample is None:
            options["condition"] = variant.condition(obs)
            synchronize(variant.device)
            encoding = time.perf_counter() - started
        normalized, stats = (sample or variant.sample_normalized)(obs, noise, generator, **options)
        synchronize(variant.device)
        return normalized.double().cpu(), stats, time.perf_counter() - started, encoding

    def _window(self, variant: DiffusionPolicy, index: int):
        """Chunk `index`'s observations as a batch on the variant's device, in its dtype."""
        window = self.observations[index]
        dtype = next(variant.model.parameters()).dtype
        if isinstance(window, dict):
            return {key: torch.as_tensor(value[None], device=variant.device).to(dtype) for key, value in window.items()}
        return torch.as_tensor(window if window.ndim == 3 else window[None], device=variant.device).to(dtype)

    def commitment(self, variant: DiffusionPolicy, previous: torch.Tensor) -> dict[str, Any]:
        """The previous chunk's actions for steps s - 1 .. s + delay - 1, at their places in this chunk's horizon
        (and by the overlap mode the rest of the previous chunk after them)."""
        config = variant.config
        newest = config.n_obs_steps - 1  # horizon position of this chunk's observation step s
        first = newest - 1 + config.n_action_steps  # step s - 1 in the previous chunk's horizon
        raw = variant.action_normalizer.unnormalize(previous[:, first:]).numpy()
        frozen = self.delay_steps + 1
        return variant.commitment(raw[:, :frozen], newest - 1, raw[:, frozen:], self.overlap)


def float64_references(policy: DiffusionPolicy, chunks: ChunkSource, progress: bool = True) -> list[torch.Tensor]:
    """The sequential chain in float64 on the CPU for every chunk, with the noise drawn as in float32."""
    exact = policy_in(policy, "float64", "cpu")
    exact.set_sampler("paradigms", window=1)  # window 1 is the sequential chain, bit for bit
    answers: list[torch.Tensor] = []
    for index in tqdm(range(len(chunks)), desc="float64 reference", unit="chunk", disable=not progress):
        answers.append(chunks.solve(exact, index, previous=answers[-1] if answers else None)[0])
    return answers


@dataclass
class Measurement:
    """One sampler's runs over every chunk."""

    spec: SamplerSpec
    captured: bool
    answers: list[torch.Tensor]
    rows: list[tuple[float, int, int, float]]  # (seconds, rounds, model evaluations, encoding seconds) per chunk
    first_residuals: list[float]

    def summary(self, references: list[torch.Tensor]) -> dict[str, Any]:
        latency, rounds, evals, encoding = (np.array(column) for column in zip(*self.rows))
        deviation = np.array([float((answer - reference).abs().max())
                              for answer, reference in zip(self.answers, references)])
        return {
            "sampler": self.spec.name,
            "options": self.spec.options,
            "label": self.spec.label,
            "cuda_graphs": self.captured,
            "dtype": self.spec.dtype,
            "chunks": len(self.rows),
            "rounds_median": float(np.median(rounds)),
            "rounds_max": int(rounds.max()),
            "model_evals_median": float(np.median(evals)),
            "latency_p50_ms": 1000 * float(np.median(latency)),
            "latency_p99_ms": 1000 * float(np.percentile(latency, 99)),
            "encoder_p50_ms": 1000 * float(np.median(encoding)),  # the condition: image encoder (if any) and FiLM
            "sampler_p50_ms": 1000 * float(np.median(latency - encoding)),
            "max_abs_dev": float(deviation.max()),
            "median_abs_dev": float(np.median(deviation)),
            "residual_history_first_chunk": self.first_residuals,
        }


def measure(variant: DiffusionPolicy, spec: SamplerSpec, chunks: ChunkSource, warmup: int = 2,
            on_chunk=lambda count: None) -> Measurement:
    """Run `spec` on every chunk after `warmup` untimed ones (allocation, kernel selection, graph capture)."""
    captured = variant.use_cuda_graphs(spec.cuda_graphs)
    variant.set_sampler(spec.name, **spec.options)
    for index in range(min(warmup, len(chunks))):
        chunks.solve(variant, index)
    answers, rows, first = [], [], []
    for index in range(len(chunks)):
        answer, stats, seconds, encoding = chunks.solve(variant, index, previous=answers[-1] if answers else None)
        answers.append(answer)
        rows.append((seconds, stats.rounds, stats.model_evals, encoding))
        first = first or stats.residual_history
        on_chunk(1)
    return Measurement(spec, captured, answers, rows, first)


def add_speedups(results: list[dict[str, Any]]) -> None:
    """p50 speed-up of every row over the first (sequential) row and over the graph-captured sequential one."""
    baseline = results[0]["latency_p50_ms"]
    graphed = [row for row in results if row["sampler"] == "sequential" and row["cuda_graphs"]]
    for row in results:
        row["speedup_vs_sequential"] = baseline / row["latency_p50_ms"]
        row["speedup_vs_graph_sequential"] = graphed[0]["latency_p50_ms"] / row["latency_p50_ms"] if graphed else None


def format_table(document: dict[str, Any]) -> str:
    """The results as a Markdown table (it is pasted into the README as is)."""
    lines = [
        f"device: {document['device']}, torch {document['torch']}, {document['scheduler'].upper()}-"
        f"{document['num_inference_steps']}, {document['parameters']:,} parameters"
        + (f" + image encoder {document['encoder_parameters']:,}" if document.get("encoder_parameters") else ""),
        "",
        "| sampler | p50 ms | p99 ms | encoder p50 ms | speed-up | rounds (median) | model evals (median) | "
        "max abs dev |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in document["results"]:
        lines.append(
            f"| {row['label']} | {row['latency_p50_ms']:.1f} | {row['latency_p99_ms']:.1f} | "
            f"{row['encoder_p50_ms']:.1f} | "
            f"{row['speedup_vs_sequential']:.2f}x | {row['rounds_median']:g} | {row['model_evals_median']:g} | "
            f"{row['max_abs_dev']:.2e} |"
        )
    return "\n".join(lines)


def plot_residuals(document: dict[str, Any], path: str | Path) -> None:
    """Largest first-order residual in the window against rounds, first chunk, every parallel sampler.

    The sequential sampler has no residual to show: it needs one round per step, marked by a line at T.
    """
    with saved_figure(path) as axis:
        for row in document["results"]:
            history = row["residual_history_first_chunk"]
            if row["sampler"] != "sequential" and history:
                axis.semilogy(range(1, len(history) + 1), history, marker=".", label=row["label"])
        steps = document["num_inference_steps"]
        axis.axvline(steps, color="black", linestyle="--", label=f"sequential: {steps} rounds")
        axis.set_xlabel("round (one batched denoiser call)")
        axis.set_ylabel("largest RMS first-order residual")
        axis.set_title(f"{document['scheduler'].upper()}-{steps}, one chunk")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
