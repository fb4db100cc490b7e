"""Command-line options that several commands share: scheduler overrides and samplers with their options."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplerSpec:
    """A sampler by name with its options, as run by bench and eval, optionally graph-captured or in another precision."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    cuda_graphs: bool = False
    dtype: str = "float32"

    @property
    def label(self) -> str:
        extras = "".join(f" {key}={value}" for key, value in self.options.items())
        graphs = " +graphs" if self.cuda_graphs else ""
        return self.name + extras + graphs + ("" if self.dtype == "float32" else f" {self.dtype}")


def add_scheduler_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", choices=["ddpm", "ddim", "dpmsolver"], help="override the checkpoint's scheduler")
    parser.add_argument("--inference-steps", type=int, help="override the number of denoising steps")


def scheduler_overrides(args: argparse.Namespace) -> dict:
    """set_scheduler() keywords from --scheduler and --inference-steps (empty: the checkpoint's own)."""
    changes = {}
    if args.scheduler:
        changes["name"] = args.scheduler
    if args.inference_steps:
        changes["num_inference_steps"] = args.inference_steps
    return changes


def add_sampler_options(parser: argparse.ArgumentParser) -> None:
    """Options of the parallel samplers (the sequential one takes none)."""
    parser.add_argument("--window", type=int, help="parallel window (states per round; default: each sampler's own)")
    parser.add_argument("--tolerance", type=float,
                        help="convergence tolerance in each parallel sampler's own unit (paradigms: fraction of the "
                             "step's noise std; parataa: RMS residual in normalised action units)")
    parser.add_argument("--max-rounds", type=int, help="round cap of the parallel samplers")
    parser.add_argument("--warm-start", choices=["none", "temporal"],
                        help="temporal: seed each parallel solve with the previous chunk's trajectory")


def parallel_options(args: argparse.Namespace) -> dict:
    names = {"window": "window", "tolerance": "tolerance", "max_rounds": "max_rounds", "warm_start": "warm_start"}
    return {option: getattr(args, attr) for attr, option in names.items() if getattr(args, attr) is not None}


def sampler_specs(names: str, options: dict) -> list[SamplerSpec]:
    """Samplers from `name[:option=value[:option=value...]]`, comma separated.

    The shared options (--window, ...) apply to every parallel sampler; options written after a
    name override them for that sampler only, e.g. `sequential,paradigms,parataa:warm_start=temporal`.
    """
    from ..samplers import get_sampler, is_parallel

    specs = []
    for entry in (part.strip() for part in names.split(",") if part.strip()):
        name, *overrides = entry.split(":")
        get_sampler(name)  # unknown names fail here, before any work
        own = dict(options) if is_parallel(name) else {}
        for override in overrides:
            key, separator, value = override.partition("=")
            if not separator or not key:
                raise ValueError(f"sampler option {override!r} in {entry!r} is not of the form option=value")
            own[key] = option_value(value)
        specs.append(SamplerSpec(name, own))
    if not specs:
        raise ValueError("no sampler named")
    return specs


def option_value(text: str) -> int | float | str:
    """A sampler option's value as written on the command line: int, else float, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers (an argparse type)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
