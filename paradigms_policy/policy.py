"""`DiffusionPolicy`: observation window -> normalised condition -> sampled actions.

    obs (n_obs_steps, obs_dim) --normalise, flatten--> c (n_obs_steps * obs_dim)
    x_T ~ N(0, I) (horizon, action_dim) --sampler(denoiser, scheduler, x_T, c)--> x_0
    actions = unnormalise(x_0)[n_obs_steps - 1 : n_obs_steps - 1 + n_action_steps]

The executed actions start at the latest observation's step, as in Diffusion Policy. The sampler
is chosen by name (`sequential`, `paradigms`, ...) with its options; the FiLM terms of the
observation are computed once per chunk and shared by every denoising step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from .config import PolicyConfig
from .model import ConditionalUnet1D
from .normalizer import AffineNormalizer
from .samplers import PARALLEL_SAMPLERS, SamplerStats, get_sampler, is_parallel
from .samplers.guidance import Guidance, guided_denoiser
from .samplers.inpainting import soft_weights
from .schedulers import make_scheduler

WARM_STARTS = ("none", "temporal")
# Real-time chunking: what of the running chunk beyond the held actions is used (`DiffusionPolicy.commitment`).
OVERLAP_MODES = ("hard", "soft", "guided")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; other names as torch understands them."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device (use 'auto' or 'cpu')")
    return device


def batch_size(observations) -> int:
    """The batch size of batched observation windows: (B, n_obs_steps, obs_dim), or a dict of (B, n_obs_steps, ...)."""
    return next(iter(observations.values())).shape[0] if isinstance(observations, dict) else observations.shape[0]


@dataclass
class PolicyOutput:
    """One predicted chunk. Arrays are float32 numpy; a leading batch axis appears only if the input had one."""

    actions: np.ndarray  # (n_action_steps, action_dim): the actions to execute
    action_horizon: np.ndarray  # (horizon, action_dim): the whole predicted trajectory
    normalized_horizon: torch.Tensor  # (B, horizon, action_dim) on the policy's device, sampler units
    stats: SamplerStats
    latency_s: float


class DiffusionPolicy:
    def __init__(self, config: PolicyConfig, model: ConditionalUnet1D, obs_normalizer: AffineNormalizer,
                 action_normalizer: AffineNormalizer, device: str | torch.device = "cpu",
                 sampler: str = "sequential", sampler_options: dict[str, Any] | None = None):
        if obs_normalizer.dim != config.obs_dim or action_normalizer.dim != config.action_dim:
            raise ValueError(
                f"normaliser sizes (obs {obs_normalizer.dim}, action {action_normalizer.dim}) do not match the "
                f"config (obs {config.obs_dim}, action {config.action_dim})"
            )
        self.config = config
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.obs_normalizer = obs_normalizer
        self.action_normalizer = action_normalizer
        self.scheduler = make_scheduler(config.scheduler)
        self._accelerated = None
        self.set_sampler(sampler, **(sampler_options or {}))

    @property
    def denoiser(self):
        """The network call the samplers use: CUDA-graph replays or a compiled call once enabled, else eager."""
        return self._accelerated if self._accelerated is not None else self.model.denoise

    def use_cuda_graphs(self, enabled: bool = True) -> bool:
        """Replay the denoiser from CUDA graphs (captured per batch shape on first use).

        Returns whether graphs are in use: they need a CUDA device, elsewhere the model stays eager.
        """
        from .graphs import CapturedDenoiser

        self._accelerated = CapturedDenoiser(self.model.denoise) if enabled and self.device.type == "cuda" else None
        return self._accelerated is not None

    def use_compiled(self, mode: str = "reduce-overhead", backend: str = "inductor") -> None:
        """Call the denoiser through `torch.compile` (on CUDA, "reduce-overhead" also replays CUDA graphs)."""
        from .graphs import compiled_denoiser

        self._accelerated = compiled_denoiser(self.model.denoise, mode, backend)

    def set_sampler(self, name: str, warm_start: str = "none", **options) -> None:
        """Use the sampler registered as `name`, with its keyword options (e.g. window, tolerance).

        warm_start="temporal" seeds each solve of a parallel sampler with the previous chunk's
        solved trajectory, shifted along the horizon by the executed actions. The noise is drawn
        as without it, so the answer is the same fixed point; only the number of rounds changes.
        """
        if warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)} (got {warm_start!r})")
        if warm_start != "none" and not is_parallel(name):
            raise ValueError(f"warm_start={warm_start!r} needs a parallel sampler ({', '.join(PARALLEL_SAMPLERS)}), "
                             f"not {name!r}")
        self.sampler = get_sampler(name)
        self.sampler_name = name
        self.sampler_options = options
        self.warm_start = warm_start
        self.reset()

    def reset(self) -> None:
        """Forget the previous chunk (call at the start of an episode)."""
        self._previous_trajectory = None

    def set_scheduler(self, **changes) -> None:
        """Sample with other scheduler settings, e.g. set_scheduler(name='ddim', num_inference_steps=15)."""
        self.config = self.config.with_scheduler(**changes)
        self.scheduler = make_scheduler(self.config.scheduler)
        self.reset()

    obs_encoder = None  # vision.ObservationEncoder of an image-conditioned policy (set_observation_encoder)

    def set_observation_encoder(self, encoder) -> None:
        """Condition on images: `encoder` (vision.ObservationEncoder) turns an observation dict into the condition."""
        self.obs_encoder = None if encoder is None else encoder.to(self.device).eval()

    def condition(self, observations) -> list[torch.Tensor]:
        """FiLM terms for a batch of raw observation windows: (B, n_obs_steps, obs_dim), or for an image policy
        a dict {key: (B, n_obs_steps, *shape)} of float tensors (images (C, H, W) in [0, 1]). The image encoder
        runs here, once per chunk; the samplers see only the FiLM terms."""
        if self.obs_encoder is None:
            normalized = self.obs_normalizer.normalize(observations)
            return self.model.encode_condition(normalized.reshape(observations.shape[0], -1))
        dtype = self.obs_encoder.image_scale.dtype  # the encoder's precision (bench runs float64 and bfloat16 copies)
        values = {key: torch.as_tensor(value, device=self.device).to(dtype) for key, value in observations.items()}
        low_dim = torch.cat([values[key] for key in self.config.low_dim_keys], dim=-1)
        global_cond = self.obs_encoder(values, self.obs_normalizer.normalize(low_dim))
        return self.model.encode_condition(global_cond)

    def initial_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (batch, self.config.horizon, self.config.action_dim)
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def sample_normalized(self, observations: torch.Tensor, noise: torch.Tensor | None = None,
                          generator: torch.Generator | None = None, condition: list[torch.Tensor] | None = None,
                          **options) -> tuple[torch.Tensor, SamplerStats]:
        """The sampler's answer in normalised action units, (B, horizon, action_dim); `condition` is
        `self.condition(observations)` when it was computed already (bench times the two apart)."""
        condition = self.condition(observations) if condition is None else condition
        if noise is None:
            noise = self.initial_noise(batch_size(observations), generator)
        noise = noise.to(self.device)
        options = {**self.sampler_options, **options}
        guidance = options.pop("guidance", None)
        # Guidance differentiates through the network, so it calls the eager model, not graph replays.
        denoiser = self.denoiser if guidance is None else guided_denoiser(self.model.denoise, self.scheduler, guidance)
        warm = self.warm_start == "temporal" and self._previous_trajectory is not None
        if warm and self._previous_trajectory.shape[1:] == noise.shape:
            options.setdefault("init_trajectory", self._shifted_previous_trajectory())
        sample, stats = self.sampler(denoiser, self.scheduler, noise, condition, generator=generator, **options)
        if self.warm_start == "temporal":
            self._previous_trajectory = stats.trajectory
        return sample, stats

    def _shifted_previous_trajectory(self) -> torch.Tensor:
        """Every state of the previous solve advanced by n_action_steps along the horizon (edge-padded)."""
        previous = self._previous_trajectory
        executed = self.config.n_action_steps
        tail = previous[:, :, -1:].expand(-1, -1, executed, -1)
        return torch.cat([previous[:, :, executed:], tail], dim=2)

    def executed_actions(self, horizon, count: int | None = None):
        """The actions to execute from a predicted horizon (..., horizon, action_dim): `count` of them
        (default n_action_steps, at most `config.max_executed_actions`) from the newest observation's step on."""
        count = self.config.n_action_steps if count is None else count
        if not 1 <= count <= self.config.max_executed_actions:
            raise ValueError(f"count must be in 1..{self.config.max_executed_actions} (got {count})")
        first = self.config.n_obs_steps - 1
        return horizon[..., first:first + count, :]

    def commitment(self, actions, first_position: int, overlap=None, mode: str = "hard") -> dict[str, Any]:
        """Sampler options for real-time chunking: consecutive raw actions (n, action_dim), or (B, n, action_dim),
        held at horizon positions first_position .. first_position + n - 1 (hard inpainting,
        `samplers/inpainting.py`), and the `overlap` actions that follow them, (m, action_dim) or (B, m, action_dim),
        by `mode`: "hard" ignores them, "soft" pulls them with RTC's decaying weights (`inpainting.soft_weights`),
        "guided" guides the chunk towards the held and the overlap actions with those weights (`samplers/guidance.py`)."""
        if mode not in OVERLAP_MODES:
            raise ValueError(f"mode must be one of {', '.join(OVERLAP_MODES)} (got {mode!r})")
        held = self._normalized_actions(actions)
        following = held[:, :0] if overlap is None or mode == "hard" else self._normalized_actions(overlap)
        if not 0 <= first_position <= self.config.horizon - held.shape[1] - following.shape[1]:
            raise ValueError(f"{held.shape[1] + following.shape[1]} committed actions from position {first_position} "
                             f"do not fit the horizon of {self.config.horizon}")
        everything = torch.cat([held, following.expand(held.shape[0], -1, -1)], dim=1)
        positions = list(range(first_position, first_position + everything.shape[1]))
        weights = soft_weights(held.shape[1], everything.shape[1])
        if mode == "soft":
            return {"committed_actions": everything, "committed_positions": positions, "committed_weights": weights}
        options = {"committed_actions": held, "committed_positions": positions[:held.shape[1]]}
        if mode == "guided":
            options["guidance"] = Guidance.build(everything, positions, weights, self.config.horizon)
        return options

    def _normalized_actions(self, actions) -> torch.Tensor:
        """Raw actions (n, action_dim) or (B, n, action_dim) as normalised (B, n, action_dim) on the device."""
        actions = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        return self.action_normalizer.normalize(actions[None] if actions.ndim == 2 else actions)

    def predict(self, observations, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, **options) -> PolicyOutput:
        """Actions for an observation window (n_obs_steps, obs_dim), or a batch of them; for an image policy a
        dict {key: (n_obs_steps, *shape)} (images channels first in [0, 1]), or of batches (B, n_obs_steps, *shape)."""
        obs, batched = self._checked_observations(observations)
        started = time.perf_counter()
        normalized, stats = self.sample_normalized(obs, noise, generator, **options)
        horizon = self.action_normalizer.unnormalize(normalized).float().cpu().numpy()
        latency = time.perf_counter() - started
        actions = self.executed_actions(horizon)
        if not batched:
            actions, horizon = actions[0], horizon[0]
        return PolicyOutput(actions, horizon, normalized, stats, latency)

    def _checked_observations(self, observations) -> tuple:
        """(observations as batched float32 tensors on the device, whether the input had a batch axis)."""
        steps = self.config.n_obs_steps
        if self.obs_encoder is None:
            expected = {None: (steps, self.config.obs_dim)}
            values = {None: observations}
        else:
            expected = {spec.key: (steps, *spec.shape) for spec in self.config.observations}
            if not isinstance(observations, dict) or set(observations) != set(expected):
                raise ValueError(f"observations must be a dict with the keys {sorted(expected)}")
            values = observations
        tensors, batched = {}, set()
        for key, shape in expected.items():
            value = torch.as_tensor(np.asarray(values[key], dtype=np.float32), device=self.device)
            if tuple(value.shape[-len(shape):]) != shape or value.ndim not in (len(shape), len(shape) + 1):
                name = "observations" if key is None else f"observation {key!r}"
                raise ValueError(f"{name} must be {shape} or (B, *{shape}), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError("observations contain NaN or Inf")
            batched.add(value.ndim == len(shape) + 1)
            tensors[key] = value if value.ndim == len(shape) + 1 else value[None]
        if len(batched) > 1 or len({value.shape[0] for value in tensors.values()}) > 1:
            raise ValueError("every observation key needs the same batch size")
        return (tensors[None] if None in tensors else tensors), batched.pop()
