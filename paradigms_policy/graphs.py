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

`CapturedChainLoop` goes further for the sequential chain: with the noise of every step drawn up
front, all T steps (denoiser calls and updates) are one graph, replayed with one call per chunk.
`compiled_denoiser` is the `torch.compile` alternative (its "reduce-overhead" mode also uses
CUDA graphs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .samplers.chain import DenoisingChain

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


class CapturedChainLoop:
    """The whole sequential chain x_{i+1} = f_i(x_i, eps(x_i, t_i)) + n_i as one CUDA graph (eager off CUDA).

    `__call__(noise, noise_terms, condition)` takes the initial state x_0 (B, horizon, action_dim),
    the per-step noise n_i (T, B, ...) from `DenoisingChain.draw_noise` and the FiLM condition, and
    returns x_T: the same arithmetic as `paradigms` with window 1, so eagerly it is the sequential
    answer bit for bit. The returned tensor is a static buffer, valid until the next call.
    """

    def __init__(self, denoise: Callable[..., torch.Tensor], chain: DenoisingChain):
        self.denoise = denoise
        self.chain = chain
        self.indices = torch.arange(chain.num_steps, device=chain.timesteps.device)
        self._graphs: dict[tuple, tuple] = {}

    @torch.no_grad()
    def __call__(self, noise: torch.Tensor, noise_terms: torch.Tensor, condition: list[torch.Tensor]) -> torch.Tensor:
        if noise.device.type != "cuda":
            return self._loop(noise, noise_terms, condition)
        key = (tuple(noise.shape), noise.dtype, tuple(tuple(c.shape) for c in condition))
        if key not in self._graphs:
            self._graphs[key] = self._capture(noise, noise_terms, condition)
        graph, inputs, output = self._graphs[key]
        for static, value in zip(inputs, (noise, noise_terms, *condition)):
            static.copy_(value)
        graph.replay()
        return output

    def _loop(self, x: torch.Tensor, noise_terms: torch.Tensor, condition: list[torch.Tensor]) -> torch.Tensor:
        for i in range(self.chain.num_steps):
            step = self.indices[i:i + 1]
            eps = self.denoise(x, self.chain.timesteps[i].expand(x.shape[0]), condition)
            x = self.chain.mean_step(x[None], eps[None], step)[0] + noise_terms[i]
        return x

    def _capture(self, noise: torch.Tensor, noise_terms: torch.Tensor, condition: list[torch.Tensor]) -> tuple:
        inputs = [value.clone() for value in (noise, noise_terms, *condition)]
        static_noise, static_terms, *static_condition = inputs
        side = torch.cuda.Stream(device=noise.device)
        side.wait_stream(torch.cuda.current_stream(noise.device))
        with torch.cuda.stream(side):
            self._loop(static_noise, static_terms, static_condition)
        torch.cuda.current_stream(noise.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self._loop(static_noise, static_terms, static_condition)
        return graph, inputs, output


def compiled_denoiser(denoise: Callable[..., torch.Tensor], mode: str = "reduce-overhead",
                      backend: str = "inductor") -> Callable[..., torch.Tensor]:
    """`denoise` through `torch.compile` (shapes static: one compilation per batch shape)."""
    return torch.compile(denoise, mode=mode if backend == "inductor" else None, backend=backend, dynamic=False)
