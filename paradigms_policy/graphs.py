"""CUDA-graph capture of the denoiser, one graph per input shape.

A batch-1 forward of the Diffusion Policy U-Net launches about 200 small kernels; on a GPU the
launches, not the arithmetic, set its latency. A CUDA graph records those launches once and
replays them with one call. `CapturedDenoiser` wraps `ConditionalUnet1D.denoise`:

- the first call with a new row count captures a graph over static input buffers (after a few
  warm-up calls on a side stream, as capture requires);
- later calls copy the inputs into those buffers, replay, and return the static output buffer
  (valid until the next call: every sampler consumes eps before asking for the next one);
- the condition (the observation's FiLM terms) is copied in only when a new chunk brings a new one.

The sequential sampler needs one graph (B rows), a fixed-shape parallel window one more
(window x B rows). Off CUDA it is the plain eager call, so CPU code paths are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

WARMUP_CALLS = 3


@dataclass
class _CapturedShape:
    graph: "torch.cuda.CUDAGraph"
    sample: torch.Tensor
    timesteps: torch.Tensor
    condition: list[torch.Tensor]
    output: torch.Tensor
    condition_source: list[torch.Tensor] | None = None


class CapturedDenoiser:
    """`denoise(x, timesteps, condition)` replayed from CUDA graphs (eager off CUDA)."""

    def __init__(self, denoise: Callable[..., torch.Tensor]):
        self.denoise = denoise
        self._shapes: dict[tuple, _CapturedShape] = {}
        self._pool = None

    @property
    def captured_shapes(self) -> list[tuple]:
        return list(self._shapes)

    @torch.no_grad()
    def __call__(self, sample: torch.Tensor, timesteps, condition: list[torch.Tensor]) -> torch.Tensor:
        if sample.device.type != "cuda":
            return self.denoise(sample, timesteps, condition)
        key = (tuple(sample.shape), sample.dtype, tuple(tuple(c.shape) for c in condition))
        entry = self._shapes.get(key)
        if entry is None:
            entry = self._shapes[key] = self._capture(sample, timesteps, condition)
        entry.sample.copy_(sample)
        entry.timesteps.copy_(torch.as_tensor(timesteps).expand(sample.shape[0]), non_blocking=True)
        if entry.condition_source is not condition:
            for static, value in zip(entry.condition, condition):
                static.copy_(value)
            entry.condition_source = condition
        entry.graph.replay()
        return entry.output

    def _capture(self, sample: torch.Tensor, timesteps, condition: list[torch.Tensor]) -> _CapturedShape:
        static_sample = sample.clone()
        static_timesteps = torch.as_tensor(timesteps, device=sample.device).expand(sample.shape[0]).clone()
        static_condition = [value.clone() for value in condition]
        side = torch.cuda.Stream(device=sample.device)
        side.wait_stream(torch.cuda.current_stream(sample.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.denoise(static_sample, static_timesteps, static_condition)
        torch.cuda.current_stream(sample.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self.denoise(static_sample, static_timesteps, static_condition)
        self._pool = graph.pool()
        return _CapturedShape(graph, static_sample, static_timesteps, static_condition, output, condition)
