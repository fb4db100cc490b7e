"""`paradigms-policy bench`: latency, rounds and accuracy of the samplers on one policy.

Every sampler solves the same chunks: the same observation windows and, per chunk, the same
initial noise and per-step noise (one generator seed per chunk). The deviation is the largest
absolute difference from the sequential sampler's answer for that chunk, in normalised action
units (the sampler's own space, where actions span [-1, 1]).
"""
from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import PolicyConfig
from ..model import ConditionalUnet1D
from ..normalizer import AffineNormalizer
from ..policy import DiffusionPolicy

# Model sizes for `--random-model`: the original Diffusion Policy U-Net and the shipped widths.
RANDOM_MODEL_SIZES = {
    "original": dict(down_dims=(256, 512, 1024), diffusion_step_embed_dim=256),
    "shipped": dict(down_dims=(64, 128, 256), diffusion_step_embed_dim=128),
}


DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class SamplerSpec:
    """A sampler by name with its options, as benchmarked, optionally graph-captured or in another precision."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    cuda_graphs: bool = False
    dtype: str = "float32"

    @property
    def label(self) -> str:
        extras = "".join(f" {key}={value}" for key, value in self.options.items())
        return self.name + extras + (" +graphs" if self.cuda_graphs else "") + ("" if self.dtype == "float32" else f" {self.dtype}")


def gpu_suite(window: int = 16) -> list[SamplerSpec]:
    """The variants compared on a GPU: eager and graph-captured, sequential and parallel, and bf16.

    Every parallel variant uses the fixed-shape window, so one graph serves all its rounds.
    """
    parallel = {"window": window, "fixed_shape": True}
    return [
        SamplerSpec("sequential"),
        SamplerSpec("sequential", cuda_graphs=True),
        SamplerSpec("paradigms", dict(parallel)),
        SamplerSpec("parataa", dict(parallel)),
        SamplerSpec("paradigms", dict(parallel), cuda_graphs=True),
        SamplerSpec("parataa", dict(parallel), cuda_graphs=True),
        SamplerSpec("parataa", {"window": 100, "fixed_shape": True}, cuda_graphs=True),
        SamplerSpec("paradigms", dict(parallel), cuda_graphs=True, dtype="bfloat16"),
        SamplerSpec("parataa", dict(parallel), cuda_graphs=True, dtype="bfloat16"),
    ]


def policy_in(policy: DiffusionPolicy, dtype: str, device: torch.device | str | None = None) -> DiffusionPolicy:
    """The same policy with its network in another precision (and/or on another device); a copy unless unchanged."""
    device = torch.device(device) if device is not None else policy.device
    if dtype == "float32" and device == policy.device:
        return policy
    model = copy.deepcopy(policy.model).to(device=device, dtype=DTYPES[dtype])
    return DiffusionPolicy(policy.config, model, policy.obs_normalizer, policy.action_normalizer, device=device)


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
              reference: str = "sequential", progress: bool = True) -> dict[str, Any]:
    """Time each sampler on every observation window; returns the JSON document `bench` writes.

    `episode_starts` marks windows that begin an episode: there a temporal warm start is reset.
    Without it every window counts as the start of its own episode.
    reference: what `max_abs_dev` is measured against, per chunk with the same noise: "sequential"
    (the first spec, plain sequential float32 on the policy's device) or "float64" (the sequential
    chain in float64 on the CPU).
    """
    chunks = observations.shape[0]
    starts = np.ones(chunks, bool) if episode_starts is None else np.asarray(episode_starts, bool)
    specs = samplers if samplers and samplers[0].name == "sequential" else [SamplerSpec("sequential"), *samplers]
    variants: dict[str, DiffusionPolicy] = {}

    def solve(variant: DiffusionPolicy, index: int) -> tuple[torch.Tensor, Any, float]:
        if starts[index]:
            variant.reset()
        dtype = next(variant.model.parameters()).dtype
        obs = torch.as_tensor(observations[index:index + 1], device=variant.device).to(dtype)
        generator = torch.Generator().manual_seed(seed + index)
        noise = variant.initial_noise(1, generator).to(dtype)
        _synchronize(variant.device)
        started = time.perf_counter()
        normalized, stats = variant.sample_normalized(obs, noise, generator)
        _synchronize(variant.device)
        return normalized.double().cpu(), stats, time.perf_counter() - started

    references = []
    if reference == "float64":
        exact = policy_in(policy, "float64", "cpu")
        exact.set_sampler("paradigms", window=1)  # the sequential chain, with the noise drawn as in float32
        references = [solve(exact, index)[0] for index in tqdm(range(chunks), desc="float64 reference", unit="chunk",
                                                                 disable=not progress)]
    elif reference != "sequential":
        raise ValueError(f"reference must be 'sequential' or 'float64' (got {reference!r})")

    records = {spec.label: [] for spec in specs}
    captured: dict[str, bool] = {}
    first_chunk: dict[str, list[float]] = {}
    with tqdm(total=len(specs) * chunks, desc="bench", unit="chunk", disable=not progress) as bar:
        for spec in specs:
            variant = variants.setdefault(spec.dtype, policy_in(policy, spec.dtype))
            captured[spec.label] = variant.use_cuda_graphs(spec.cuda_graphs)
            variant.set_sampler(spec.name, **spec.options)
            for index in range(min(warmup, chunks)):  # first calls pay for allocation, kernel selection, capture
                solve(variant, index)
            for index in range(chunks):
                normalized, stats, latency = solve(variant, index)
                if len(references) < chunks:
                    references.append(normalized)
                deviation = float((normalized - references[index]).abs().max())
                records[spec.label].append((latency, stats.rounds, stats.model_evals, deviation))
                if index == 0:
                    first_chunk[spec.label] = stats.residual_history
                bar.update(1)

    def p50(spec: SamplerSpec) -> float:
        return float(np.median([row[0] for row in records[spec.label]]))

    sequential_p50 = p50(specs[0])
    graph_sequential = [spec for spec in specs if spec.name == "sequential" and captured[spec.label]]
    results = []
    for spec in specs:
        latency, rounds, evals, deviation = (np.array(column) for column in zip(*records[spec.label]))
        results.append({
            "sampler": spec.name,
            "options": spec.options,
            "label": spec.label,
            "cuda_graphs": captured[spec.label],
            "dtype": spec.dtype,
            "chunks": chunks,
            "rounds_median": float(np.median(rounds)),
            "rounds_max": int(rounds.max()),
            "model_evals_median": float(np.median(evals)),
            "latency_p50_ms": 1000 * float(np.median(latency)),
            "latency_p99_ms": 1000 * float(np.percentile(latency, 99)),
            "speedup_vs_sequential": sequential_p50 / float(np.median(latency)),
            "speedup_vs_graph_sequential": p50(graph_sequential[0]) / float(np.median(latency)) if graph_sequential else None,
            "max_abs_dev": float(deviation.max()),
            "median_abs_dev": float(np.median(deviation)),
            "residual_history_first_chunk": first_chunk[spec.label],
        })
    scheduler = policy.config.scheduler
    return {
        "device": device_name(policy.device),
        "reference": reference,
        "torch": torch.__version__,
        "scheduler": scheduler.name,
        "num_inference_steps": scheduler.num_inference_steps,
        "parameters": sum(p.numel() for p in policy.model.parameters()),
        "results": results,
    }


def format_table(document: dict[str, Any]) -> str:
    """The results as a Markdown table (it is pasted into the README as is)."""
    lines = [
        f"device: {document['device']}, torch {document['torch']}, {document['scheduler'].upper()}-"
        f"{document['num_inference_steps']}, {document['parameters']:,} parameters",
        "",
        "| sampler | p50 ms | p99 ms | speed-up | rounds (median) | model evals (median) | max abs dev |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in document["results"]:
        lines.append(
            f"| {row['label']} | {row['latency_p50_ms']:.1f} | {row['latency_p99_ms']:.1f} | "
            f"{row['speedup_vs_sequential']:.2f}x | {row['rounds_median']:g} | {row['model_evals_median']:g} | "
            f"{row['max_abs_dev']:.2e} |"
        )
    return "\n".join(lines)


def plot_residuals(document: dict[str, Any], path: str | Path) -> None:
    """Largest first-order residual in the window against rounds, first chunk, every parallel sampler.

    The sequential sampler has no residual to show: it needs one round per step, marked by a line at T.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.8))
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
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_json(document: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
