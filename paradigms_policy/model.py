"""Diffusion Policy's 1-D conditional U-Net (`ConditionalUnet1D`), with the FiLM condition hoisted.

The architecture and the parameter names are those of the original Diffusion Policy
(Chi et al., RSS 2023), so an original state dict loads with `model.` stripped:

    diffusion_step_encoder.{1,3}                sinusoidal embedding -> Linear -> Mish -> Linear
    down_modules.L.{0,1}  / mid_modules.M / up_modules.L.{0,1}
        .blocks.{0,1}.block.{0: Conv1d, 1: GroupNorm}
        .cond_encoder.1                          FiLM Linear(step_dim + global_cond_dim -> 2C or C)
        .residual_conv                           1x1 Conv1d when the channel count changes
    down_modules.L.2.conv / up_modules.L.2.conv  stride-2 Conv1d / ConvTranspose1d(4, 2, 1)
    final_conv.0.block.0, final_conv.1           last Conv1d block and 1x1 projection

FiLM hoist. Each residual block's condition is Linear(Mish([e(t), c])) with e(t) the step
embedding and c the flattened observation window. Mish acts elementwise, so the Linear splits
into W_e Mish(e(t)) + (W_c Mish(c) + b). The bracket depends only on the observation: it is
computed once per action chunk by `encode_condition` and reused for every denoising step
(and for every window slot of a parallel sampler), which changes the output only by float
rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import UnetConfig


class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the diffusion timestep: [sin(t w_k), cos(t w_k)]."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        exponent = math.log(10000) / (half - 1)
        frequencies = torch.exp(torch.arange(half, device=timesteps.device) * -exponent)
        angles = timesteps[:, None] * frequencies[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1d blocks with FiLM between them and a residual connection.

    With `cond_predict_scale` the condition predicts a per-channel scale and bias
    (out = scale * h + bias), otherwise only a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, step_embed_dim: int,
                 kernel_size: int = 3, n_groups: int = 8, cond_predict_scale: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList([
            Conv1dBlock(in_channels, out_channels, kernel_size, n_groups),
            Conv1dBlock(out_channels, out_channels, kernel_size, n_groups),
        ])
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale
        self.step_embed_dim = step_embed_dim
        film_channels = 2 * out_channels if cond_predict_scale else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, film_channels))
        self.residual_conv = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    @property
    def film_linear(self) -> nn.Linear:
        return self.cond_encoder[1]

    def observation_film(self, mished_global_cond: torch.Tensor | None, batch: int) -> torch.Tensor:
        """W_c Mish(c) + b: the observation's share of the FiLM pre-activation, (batch, film_channels)."""
        linear = self.film_linear
        if mished_global_cond is None:
            return linear.bias.expand(batch, -1)
        return F.linear(mished_global_cond, linear.weight[:, self.step_embed_dim:], linear.bias)

    def step_film(self, mished_step_embedding: torch.Tensor) -> torch.Tensor:
        """W_e Mish(e(t)): the timestep's share of the FiLM pre-activation."""
        return F.linear(mished_step_embedding, self.film_linear.weight[:, : self.step_embed_dim])

    def forward(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        if self.cond_predict_scale:
            scale, bias = film.unsqueeze(-1).chunk(2, dim=1)
            out = scale * out + bias
        else:
            out = out + film.unsqueeze(-1)
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class Downsample1d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionalUnet1D(nn.Module):
    """Noise-prediction network eps(x_t, t, c) over an action trajectory x_t of shape (B, horizon, input_dim)."""

    def __init__(self, input_dim: int, global_cond_dim: int | None = None, diffusion_step_embed_dim: int = 256,
                 down_dims=(256, 512, 1024), kernel_size: int = 3, n_groups: int = 8,
                 cond_predict_scale: bool = False):
        super().__init__()
        self.config = UnetConfig(input_dim=input_dim, global_cond_dim=global_cond_dim,
                                 diffusion_step_embed_dim=diffusion_step_embed_dim, down_dims=tuple(down_dims),
                                 kernel_size=kernel_size, n_groups=n_groups, cond_predict_scale=cond_predict_scale)
        step_dim = diffusion_step_embed_dim
        cond_dim = step_dim + (global_cond_dim or 0)
        all_dims = [input_dim, *down_dims]
        in_out = list(zip(all_dims[:-1], all_dims[1:]))

        def residual_block(dim_in: int, dim_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(dim_in, dim_out, cond_dim, step_dim, kernel_size, n_groups,
                                              cond_predict_scale)

        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalStepEmbedding(step_dim),
            nn.Linear(step_dim, step_dim * 4),
            nn.Mish(),
            nn.Linear(step_dim * 4, step_dim),
        )
        self.down_modules = nn.ModuleList([
            nn.ModuleList([
                residual_block(dim_in, dim_out),
                residual_block(dim_out, dim_out),
                Downsample1d(dim_out) if level < len(in_out) - 1 else nn.Identity(),
            ])
            for level, (dim_in, dim_out) in enumerate(in_out)
        ])
        mid_dim = all_dims[-1]
        self.mid_modules = nn.ModuleList([residual_block(mid_dim, mid_dim), residual_block(mid_dim, mid_dim)])
        # As in the original, every up level upsamples (the deepest level did not downsample).
        self.up_modules = nn.ModuleList([
            nn.ModuleList([
                residual_block(dim_out * 2, dim_in),
                residual_block(dim_in, dim_in),
                Upsample1d(dim_in),
            ])
            for dim_in, dim_out in reversed(in_out[1:])
        ])
        # The original's last block keeps GroupNorm's default 8 groups whatever n_groups says.
        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size),
            nn.Conv1d(down_dims[0], input_dim, 1),
        )

    @classmethod
    def from_config(cls, config: UnetConfig) -> "ConditionalUnet1D":
        return cls(config.input_dim, config.global_cond_dim, config.diffusion_step_embed_dim, config.down_dims,
                   config.kernel_size, config.n_groups, config.cond_predict_scale)

    def residual_blocks(self) -> list[ConditionalResidualBlock1D]:
        """All FiLM blocks in the order `denoise` visits them."""
        blocks = [block for level in self.down_modules for block in level[:2]]
        blocks += list(self.mid_modules)
        blocks += [block for level in self.up_modules for block in level[:2]]
        return blocks

    def encode_condition(self, global_cond: torch.Tensor | None, batch: int | None = None) -> list[torch.Tensor]:
        """The observation's FiLM terms, one (B, film_channels) tensor per residual block.

        Compute once per action chunk and pass to `denoise` for every step.
        """
        if global_cond is None:
            if batch is None:
                raise ValueError("encode_condition needs `batch` when there is no global condition")
            mished = None
        else:
            if self.config.global_cond_dim is None:
                raise ValueError("this U-Net was built without a global condition")
            if global_cond.ndim != 2 or global_cond.shape[1] != self.config.global_cond_dim:
                raise ValueError(f"global_cond must be (B, {self.config.global_cond_dim}), got {tuple(global_cond.shape)}")
            mished = F.mish(global_cond)
            batch = global_cond.shape[0]
        return [block.observation_film(mished, batch) for block in self.residual_blocks()]

    def denoise(self, sample: torch.Tensor, timestep: torch.Tensor | int, condition: list[torch.Tensor]) -> torch.Tensor:
        """eps(sample, timestep) for a condition from `encode_condition`.

        `sample` is (N, horizon, input_dim) where N is a multiple of the condition's batch B; rows
        are laid out as k consecutive copies of the B chunks (slot-major), as parallel samplers stack
        their window.
        """
        rows = sample.shape[0]
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(rows)
        # The sinusoidal features are computed in float32 whatever the network's precision.
        embed, project, _, output = self.diffusion_step_encoder
        mished_step = F.mish(output(F.mish(project(embed(timesteps).to(sample.dtype)))))
        copies, remainder = divmod(rows, condition[0].shape[0])
        if remainder:
            raise ValueError(f"sample batch {rows} is not a multiple of the condition batch {condition[0].shape[0]}")

        blocks = iter(zip(self.residual_blocks(), condition))

        def film_block(x: torch.Tensor) -> torch.Tensor:
            block, obs_film = next(blocks)
            film = block.step_film(mished_step) + (obs_film.repeat(copies, 1) if copies > 1 else obs_film)
            return block(x, film)

        x = sample.transpose(1, 2)
        skips = []
        for _, _, downsample in self.down_modules:
            x = film_block(film_block(x))
            skips.append(x)
            x = downsample(x)
        for _ in self.mid_modules:
            x = film_block(x)
        for _, _, upsample in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = upsample(film_block(film_block(x)))
        return self.final_conv(x).transpose(1, 2)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int,
                global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Diffusion Policy's call signature: condition and denoise in one go."""
        return self.denoise(sample, timestep, self.encode_condition(global_cond, batch=sample.shape[0]))
