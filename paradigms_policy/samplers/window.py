"""What the windowed parallel samplers (ParaDiGMS, ParaTAA) share.

Both solve the chain x_{i+1} = g_i(x_i) = f_i(x_i) + n_i over a window [s, s+p) of states whose
first state x_s is final. `WindowedSolve` holds the trajectory guess x_0..x_T, the noise drawn up
front, and does the parts of a round that do not depend on the solver: the batched denoiser call
on the window's states, the proposals g_j(x_j) with their first-order residuals
r_j = g_j(x_j) - x_{j+1}, the filling of newly exposed states, and the answer at the end (or at a
round cap).
"""
from __future__ import annotations

import torch

from .base import Denoiser
from .chain import DenoisingChain
from .inpainting import Inpainting


# A window of None covers the whole chain, up to this many states per round. On the shipped Push-T
# policy (DDPM-100) the whole chain takes ParaTAA 10 rounds where a window of 16 takes 22, and even
# on a 2-core CPU the 10 calls of batch 100 beat 22 of batch 16 (README, rounds study); the limit
# only bounds the batch (and so the memory) of very long chains such as DDPM-1000.
WHOLE_CHAIN_LIMIT = 256


def check_window_options(window: int | None, max_rounds: int | None) -> None:
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 (got {window})")
    if max_rounds is not None and max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1 (got {max_rounds})")


class WindowedSolve:
    """The state of one windowed solve.

    window: states evaluated per round; None = the whole chain (at most WHOLE_CHAIN_LIMIT).
    fixed_shape: every round evaluates exactly `window` slots; the chain is padded with identity
        steps past its end, so one captured graph serves every round.
    init_trajectory: (T+1, B, ...) initial guess (a warm start); its first state is replaced by the
        noise. Without it every state starts as the noise and newly exposed states start from the
        last computed one.
    inpainting: committed entries held at their targets in every state (see `inpainting.py`).
    """

    def __init__(self, scheduler, noise: torch.Tensor, generator: torch.Generator | None, window: int | None,
                 fixed_shape: bool, init_trajectory: torch.Tensor | None, inpainting: Inpainting | None = None):
        chain = DenoisingChain.cached(scheduler, noise.device, noise.dtype)
        self.steps_total = chain.num_steps
        if window is None:
            window = min(self.steps_total, WHOLE_CHAIN_LIMIT)
        self.noise_terms = chain.draw_noise(noise.shape, generator, noise.device, noise.dtype)
        self.fixed_shape = fixed_shape
        self.width = window if fixed_shape else min(window, self.steps_total)
        if fixed_shape:
            chain = chain.padded(self.width)
            self.noise_terms = torch.cat([self.noise_terms, self.noise_terms.new_zeros((self.width, *noise.shape))])
        self.chain = chain
        self.batch, self.chunk_shape = noise.shape[0], noise.shape[1:]
        self.trajectory = noise.new_empty((chain.num_steps + 1, *noise.shape))
        self.warm = init_trajectory is not None
        if self.warm:
            expected = (self.steps_total + 1, *noise.shape)
            if init_trajectory.shape != expected:
                raise ValueError(f"init_trajectory must be {expected}, got {tuple(init_trajectory.shape)}")
            self.trajectory[: self.steps_total + 1] = init_trajectory
            self.trajectory[self.steps_total + 1:] = init_trajectory[-1]
            self.trajectory[0] = noise
        else:
            self.trajectory[:] = noise
        self.inpainting = inpainting
        if inpainting is not None:  # committed entries start, and stay, at their targets
            self.trajectory[:] = inpainting.apply(self.trajectory, 0)
        self.computed_end = 0
        self.estimate: torch.Tensor | None = None

    def window_at(self, start: int) -> tuple[int, int, torch.Tensor]:
        """(slots evaluated, slots inside the chain, their chain indices) for a window starting at `start`."""
        slots = self.width if self.fixed_shape else min(self.width, self.steps_total - start)
        valid = min(slots, self.steps_total - start)
        return slots, valid, torch.arange(start, start + slots, device=self.trajectory.device)

    def evaluate(self, denoiser: Denoiser, condition, start: int, steps: torch.Tensor, keep_estimate: bool,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batched denoiser call on the window; returns the proposals g_j(x_j) and residuals r_j.

        keep_estimate: remember the clean-sample estimate at the furthest state inside the chain,
        the answer if a round cap stops the solve before the window reaches the end.
        """
        slots = steps.numel()
        states = self.trajectory[start:start + slots]
        eps = denoiser(states.reshape(slots * self.batch, *self.chunk_shape),
                       self.chain.timesteps[steps].repeat_interleave(self.batch), condition).reshape(states.shape)
        if keep_estimate:
            last = min(slots, self.steps_total - start) - 1
            furthest = steps[last:last + 1]
            self.estimate = self.chain.predicted_clean(states[last:last + 1], eps[last:last + 1], furthest)[0]
        proposal = self.chain.mean_step(states, eps, steps) + self.noise_terms[start:start + slots]
        if self.inpainting is not None:
            proposal = self.inpainting.apply(proposal, start + 1)
        self.computed_end = start + min(slots, self.steps_total - start)
        return proposal, proposal - self.trajectory[start + 1:start + slots + 1]

    def write(self, start: int, states: torch.Tensor) -> None:
        """Store the window's new states x_{start+1} .. x_{start+slots}."""
        self.trajectory[start + 1:start + 1 + states.shape[0]] = states

    def slide_to(self, start: int) -> None:
        """Start newly exposed states from the last computed one (unless warm-started)."""
        exposed_end = min(start + self.width, self.steps_total)
        if not self.warm and exposed_end > self.computed_end:
            self.trajectory[self.computed_end + 1:exposed_end + 1] = self.trajectory[self.computed_end]

    def answer(self, start: int) -> tuple[torch.Tensor, bool, torch.Tensor]:
        """(x_T or the capped estimate, converged, the states x_0..x_T as last iterated)."""
        converged = start >= self.steps_total
        reached_end = converged or self.computed_end >= self.steps_total
        solved = self.trajectory[: self.steps_total + 1]
        return (solved[-1] if reached_end else self.estimate), converged, solved
