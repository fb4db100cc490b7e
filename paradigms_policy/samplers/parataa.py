"""ParaTAA: k-th order fixed-point equations with Triangular Anderson Acceleration (Tang et al., ICML 2024).

The same system as `paradigms`: with the noise n_i drawn up front, the chain (see `chain.py`)

    x_{i+1} = f_i(x_i) + n_i =: g_i(x_i),        i = 0 .. T-1,   x_0 = the initial noise,

is solved for all states at once over a sliding window [s, s+p) whose first state x_s is final.

k-th order equations. Split each step into a part linear in its state and the rest,
g_j(x) = a_j x + h_j(x), and write each state from the state k steps earlier, clamped at s, by
unrolling the linear part exactly and taking h at the current iterates:

    x_{i+1} = (a_b ... a_i) x_b + sum_{j=b}^{i} (a_{j+1} ... a_i) h_j(x_j),     b = max(s, i + 1 - k).

Two splits (`form`), with the same solution:
- "picard": a_j = 1, h_j = g_j(x) - x (the drift). k >= p is the Picard form of ParaDiGMS.
- "posterior": a_j = d f_j / d x with the clean-sample estimate held fixed (DDPM: the posterior
  mean's weight on x_t, < 1; see `DenoisingChain.state_weight`), so h_j carries the clipped
  clean-sample estimate and the noise. The clipped estimate is a bounded, slowly varying function
  of the state, and a_j < 1 damps errors in the noisier states instead of summing them: on the
  shipped Push-T policy (DDPM-100, whole chain in the window) this takes 9-11 rounds where the
  Picard form takes 14-16. (Holding the raw eps fixed instead, as the ParaTAA paper's equations
  do, made no progress in 14 plain rounds on that policy, which clips its clean-sample estimate.)
k = 1 is Jacobi (x_{i+1} = g_i(x_i)) in both. As in `paradigms.py` the update is evaluated in
residual form, G_{i+1} = g_i(x_i) + sum_{j=b}^{i-1} (a_{j+1} ... a_i) r_j with the first-order
residuals r_j = g_j(x_j) - x_{j+1}, so at a solution it is exactly the sequential step. Its
fixed-point residual is F_{i+1} = G_{i+1} - x_{i+1} = sum_{j=b}^{i} (a_{j+1} ... a_i) r_j.

Triangular Anderson Acceleration (memory m). For every slot the solver keeps the last m - 1
previous iterates of x_{i+1} and r_i; dX and dF are the consecutive differences of the last (up
to) m iterates, dF rebuilt from the stored r for the current window start and order. Because
x_s was still an unknown in older iterates, the old r_s are rebuilt with today's g_s(x_s), which
makes dr_s = -dx_{s+1}; without this the differences describe a system that no longer exists and
the iteration stalls. Each state, and each chunk of the batch, gets its own coefficients fitted on
its own residuals and on those of the noisier states of the window only (x_{i+1} depends on
nothing later):

    gamma_{i+1} = argmin_gamma  sum_{j=s}^{i} ||F_{j+1} - dF_{j+1} gamma||^2 + lambda' ||gamma||^2,
    x_{i+1}    <- G_{i+1} - (dX_{i+1} + dF_{i+1}) gamma_{i+1},

with lambda' = ridge x the mean diagonal of the Gram matrix (relative to the problem's scale).
m = 1 keeps no history: plain fixed-point iteration of order k. A state uses only as many
differences as every state it is fitted with has stored, so states that entered the window late
(with shorter histories) never read empty slots.

Round. One batched denoiser call on the p window states gives every r_j. A state is done when
RMS(r_j) <= tolerance or <= relative_tolerance x sigma_j (sigma_j^2 the step's DDPM variance,
also for DDIM; every chunk of the batch must pass). With s' the first state that is not done, the
done states x_{s+1} .. x_{s'} and the noisiest unfinished one, x_{s'+1}, take the plain update (the
safeguard: x_{s'+1} is then computed from final states and is final itself), the later states the
Anderson-mixed update, and the window moves to s' + 1, at least one step per round, so T rounds
always suffice. Newly exposed states start from the last computed state. With both tolerances 0
the answer is the sequential one up to the rounding of batched denoiser calls, and with m = 1,
k >= p and the Picard form every round is exactly a ParaDiGMS round at tolerance 0.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .base import Denoiser, SamplerStats
from .inpainting import inpainting_for
from .window import WindowedSolve, check_window_options

# The whole chain in one window (see window.WHOLE_CHAIN_LIMIT): 10 rounds on the shipped policy, 22 at 16.
DEFAULT_WINDOW = None
DEFAULT_MEMORY = 2
DEFAULT_RIDGE = 1e-3
# Stopping rule on the first-order residual, in normalised action units (actions span [-1, 1]).
# On the shipped Push-T policy (README, rounds study) 2e-4 matches ParaDiGMS's default in median
# and worst deviation from the sequential sampler. ParaTAA's command-line default, 1e-3, let one
# chunk in 100 end 0.1 away with the whole chain in the window: a small residual at a noisy step
# can still move the answer. A tolerance relative to sigma_i accepts large residuals at the noisy
# steps for the same reason: off by default.
DEFAULT_TOLERANCE = 2e-4
DEFAULT_RELATIVE_TOLERANCE = 0.0
FORMS = ("picard", "posterior")
DEFAULT_FORM = "posterior"


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler, noise: torch.Tensor, condition, *,
           generator: torch.Generator | None = None, window: int | None = DEFAULT_WINDOW, order: int | None = None,
           memory: int = DEFAULT_MEMORY, ridge: float = DEFAULT_RIDGE, tolerance: float = DEFAULT_TOLERANCE,
           relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE, form: str = DEFAULT_FORM, max_rounds: int | None = None,
           fixed_shape: bool = False, init_trajectory: torch.Tensor | None = None,
           committed_actions: torch.Tensor | None = None, committed_positions=None,
           committed_weights=None) -> tuple[torch.Tensor, SamplerStats]:
    """Solve the sampling chain by windowed, triangular-Anderson-accelerated fixed-point iteration.

    window: p, the number of states evaluated per round (batch p x B); default None = every state of
        the chain (up to `window.WHOLE_CHAIN_LIMIT`), the fastest measured setting.
    order: k of the k-th order equations (1 = Jacobi; default and anything >= window: Picard).
    memory: m, iterates kept per state for Anderson mixing (1 = plain fixed-point iteration).
    ridge: lambda, Tikhonov weight relative to the mean diagonal of each least-squares problem.
    tolerance, relative_tolerance: a state is done when the RMS of its first-order residual is at
        most `tolerance`, or at most `relative_tolerance` x its step's noise standard deviation.
        A positive `tolerance` below the dtype's machine epsilon (bfloat16: 7.8e-3) is raised to it.
    form: "posterior" (default) or "picard", which part of each step the k-th order equations
        unroll exactly (see the module docstring).
    max_rounds: stop after this many rounds (a deadline); the result is then the last state if
        the window has reached the end of the chain, else the denoiser's clean-sample estimate
        at the furthest state, and `stats.converged` is False.
    fixed_shape: always evaluate exactly p slots, padding past the end of the chain with
        identity steps, so one captured graph serves every round.
    init_trajectory: (T+1, B, ...) initial guess of every state (a warm start); its first state
        is replaced by `noise`. Default: every state starts as `noise`.
    committed_actions, committed_positions: hard inpainting (real-time chunking): actions
        (B, n, action_dim), normalised, that every state holds at horizon positions (n,), noised to
        each state's level with the initial noise; the answer equals them there exactly
        (`inpainting.py`). committed_weights (n,) in (0, 1]: soft inpainting, each position pulled that
        fraction of the way to its target per step (1, the default: held).

    stats.residual_history holds, per round, the largest RMS first-order residual in the window
    (normalised action units); stats.residual the last of them.
    """
    result, stats, _ = solve(denoiser, scheduler, noise, condition, generator=generator, window=window, order=order,
                             memory=memory, ridge=ridge, tolerance=tolerance, relative_tolerance=relative_tolerance,
                             form=form, max_rounds=max_rounds, fixed_shape=fixed_shape, init_trajectory=init_trajectory,
                             committed_actions=committed_actions, committed_positions=committed_positions,
                             committed_weights=committed_weights)
    return result, stats


@torch.no_grad()
def solve(denoiser: Denoiser, scheduler, noise: torch.Tensor, condition, *,
          generator: torch.Generator | None = None, window: int | None = DEFAULT_WINDOW, order: int | None = None,
          memory: int = DEFAULT_MEMORY, ridge: float = DEFAULT_RIDGE, tolerance: float = DEFAULT_TOLERANCE,
          relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE, form: str = DEFAULT_FORM, max_rounds: int | None = None,
          fixed_shape: bool = False, init_trajectory: torch.Tensor | None = None,
          committed_actions: torch.Tensor | None = None, committed_positions=None, committed_weights=None,
          observer: Callable[[dict[str, Any]], None] | None = None,
          ) -> tuple[torch.Tensor, SamplerStats, torch.Tensor]:
    """`sample`, also returning the whole trajectory (T+1, B, ...) as last iterated.

    observer: called after every round with a dict: round, start (the window's first state s),
        base (s', the first state that was not done; None when all were), counts (per window slot
        j, the history differences the update of x_{j+1} used; 0 = plain update), plain (the plain
        k-th order update G of x_{s+1} .. x_{s+p}), updated (what was written there instead) and
        trajectory (a copy, T+1 states). For tests and convergence plots.
    """
    check_window_options(window, max_rounds)
    if order is not None and order < 1:
        raise ValueError(f"order must be >= 1 (got {order})")
    if memory < 1:
        raise ValueError(f"memory must be >= 1 (got {memory})")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0 (got {ridge})")
    if not (tolerance >= 0 and relative_tolerance >= 0):
        raise ValueError(f"tolerances must be >= 0 (got {tolerance}, {relative_tolerance})")
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)} (got {form!r})")

    inpainting = inpainting_for(scheduler, noise, committed_actions, committed_positions, committed_weights)
    solve = WindowedSolve(scheduler, noise, generator, window, fixed_shape, init_trajectory, inpainting)
    span = min(order if order is not None else solve.width, solve.width)  # k; b never precedes the window's start
    # Per step, the largest RMS first-order residual that counts as done. A positive tolerance is raised to
    # the precision's resolution at unit scale (bfloat16: 7.8e-3), below which rounding alone can keep it.
    floor = torch.finfo(noise.dtype).eps if tolerance > 0 else 0.0
    limit = torch.clamp(relative_tolerance * solve.chain.variance.sqrt(), min=max(tolerance, floor))
    history = _History(memory - 1, solve.chain.num_steps, noise) if memory > 1 else None
    state_weight = solve.chain.state_weight if form == "posterior" else None

    start = rounds = evals = 0
    residual_history: list[float] = []
    while start < solve.steps_total and (max_rounds is None or rounds < max_rounds):
        slots, valid, steps = solve.window_at(start)
        proposal, residual = solve.evaluate(denoiser, condition, start, steps,
                                            keep_estimate=max_rounds is not None and rounds + 1 == max_rounds)
        rms = residual[:valid].reshape(valid, solve.batch, -1).square().mean(-1).sqrt()
        failing = (~(rms <= limit[start:start + valid, None]).all(1)).nonzero()  # NaN is never done
        rounds += 1
        evals += slots
        residual_history.append(float(rms.max()))

        # The leading done states and the noisiest one that is not done take the plain update; the rest mix.
        lead = int(failing[0]) if failing.numel() else valid
        plain_count = min(lead + 1, slots)
        current = solve.trajectory[start + 1:start + slots + 1]
        carry = None if state_weight is None else _carry_matrix(state_weight[start:start + slots], span)
        plain, fixed_point_residual = _kth_order(proposal, residual, span, carry)
        if history is None or plain_count == slots:
            updated, counts = plain, [0] * slots
        else:
            updated, counts = history.accelerate(start, start + slots, current, residual, plain,
                                                 fixed_point_residual, span, carry, ridge, plain_count)
        if observer is not None:
            info = {"round": rounds, "start": start, "base": start + lead if lead < valid else None, "counts": counts,
                    "plain": plain.clone(), "updated": updated.clone()}
        solve.write(start, updated)
        start += lead + 1 if lead < valid else valid
        solve.slide_to(start)
        if observer is not None:
            observer({**info, "trajectory": solve.trajectory[:solve.steps_total + 1].clone()})

    result, converged, solved = solve.answer(start)
    stats = SamplerStats(rounds=rounds, model_evals=evals, residual=residual_history[-1] if residual_history else 0.0,
                         converged=converged, residual_history=residual_history, trajectory=solved)
    return result, stats, solved


def _carry_matrix(weights: torch.Tensor, span: int) -> torch.Tensor:
    """(W, W): entry (u, j) = w_{j+1} ... w_u for lo_u <= j < u, else 0, with lo_u = max(0, u+1-span).

    A cumulative product down each column, not a ratio of prefix products: some w are exactly 0.
    """
    index = torch.arange(weights.numel(), device=weights.device)
    later = index[:, None] > index[None, :]
    products = torch.where(later, weights[:, None], 1.0).cumprod(0)
    inside = later & (index[None, :] >= torch.clamp(index + 1 - span, min=0)[:, None])
    return torch.where(inside, products, 0.0)


def _windowed_sums(values: torch.Tensor, span: int, dim: int, carry: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For u = 0 .. W-1 along `dim`: (C_u, C_u + v_u), C_u = sum_{j=lo_u}^{u-1} (w_{j+1} ... w_u) v_j.

    carry: `_carry_matrix` of the weights w (posterior form). None means every w = 1 (Picard form):
    then both come from one running sum, and where lo_u = 0 the subtracted term is an exact zero.
    """
    if carry is not None:
        carried = torch.tensordot(carry, values.movedim(dim, 0), dims=1).movedim(0, dim)
        return carried, carried + values
    count = values.shape[dim]
    running = torch.cat([torch.zeros_like(values.narrow(dim, 0, 1)), values.cumsum(dim)], dim)
    index = torch.arange(count, device=values.device)
    low = torch.clamp(index + 1 - span, min=0)
    low_sums = running.index_select(dim, low)
    return running.index_select(dim, index) - low_sums, running.index_select(dim, index + 1) - low_sums


def _kth_order(proposal: torch.Tensor, residual: torch.Tensor, span: int, carry: torch.Tensor | None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain k-th order update G of x_{s'+1} .. and its fixed-point residual F, from g and r of the same states."""
    carried, total = _windowed_sums(residual, span, 0, carry)
    return proposal + carried, total


class _History:
    """The last `depth` previous iterates of x_{j+1} and r_j for every slot j, newest first, and how many are stored."""

    def __init__(self, depth: int, slots: int, like: torch.Tensor):
        self.depth = depth
        self.states = like.new_zeros((depth, slots, *like.shape))
        self.residuals = like.new_zeros((depth, slots, *like.shape))
        self.stored = [0] * slots

    def accelerate(self, first: int, end: int, current: torch.Tensor, residual: torch.Tensor, plain: torch.Tensor,
                   fixed_point_residual: torch.Tensor, span: int, carry: torch.Tensor | None, ridge: float,
                   plain_count: int) -> tuple[torch.Tensor, list[int]]:
        """The update of slots [first, end) (states x_{first+1} .. x_end), then remember this iterate.

        current, residual: this round's x_{j+1} and r_j; plain, fixed_point_residual: G and F. The first
        `plain_count` slots take the plain update, the rest the Anderson-mixed one. Returns the update and,
        per slot, the number of history differences it used.
        """
        # A slot is fitted together with every noisier slot of the window: use only differences all of them have.
        counts, lowest = [], self.depth
        for stored in self.stored[first:end]:
            lowest = min(lowest, stored)
            counts.append(lowest)
        if max(counts[plain_count:], default=0) > 0:
            update = self._mix(first, end, current, residual, plain, fixed_point_residual, span, carry, ridge,
                               counts, plain_count)
        else:
            update = plain
        counts[:plain_count] = [0] * plain_count

        self.states[1:, first:end] = self.states[:-1, first:end].clone()
        self.residuals[1:, first:end] = self.residuals[:-1, first:end].clone()
        self.states[0, first:end] = current
        self.residuals[0, first:end] = residual
        for slot in range(first, end):
            self.stored[slot] = min(self.stored[slot] + 1, self.depth)
        return update, counts

    def _mix(self, first, end, current, residual, plain, fixed_point_residual, span, carry, ridge, counts,
             plain_count) -> torch.Tensor:
        width, batch = current.shape[0], current.shape[1]
        depth = max(counts)
        # Consecutive differences, newest first: d_l = v^(now - l) - v^(now - l - 1), l < depth.
        states = torch.cat([current[None], self.states[:depth, first:end]])
        residuals = torch.cat([residual[None], self.residuals[:depth, first:end]])
        usable = (torch.arange(depth)[:, None] < torch.tensor(counts)[None, :]).to(current.device)  # (depth, W)
        mask = usable.reshape(depth, width, *([1] * (current.ndim - 1)))
        d_states = torch.where(mask, states[:-1] - states[1:], torch.zeros((), dtype=current.dtype, device=current.device))
        d_residuals = torch.where(mask, residuals[:-1] - residuals[1:], torch.zeros((), dtype=current.dtype, device=current.device))
        # The window's first state x_{first} is final now but was an unknown in older iterates: rebuild the
        # old residuals of slot `first` with today's g_first(x_first), r~ = g_first(x_first) - x_{first+1},
        # so that the differences describe the current system (dr~ = -dx_{first+1}).
        d_residuals[:, 0] = -d_states[:, 0]
        _, d_fixed = _windowed_sums(d_residuals, span, 1, carry)  # dF under the current window start, order, form

        flat_d = d_fixed.reshape(depth, width, batch, -1)
        flat_f = fixed_point_residual.reshape(width, batch, -1)
        # Triangular least squares: sums over the state itself and every noisier state of the window.
        gram = torch.einsum("lwbd,nwbd->wbln", flat_d, flat_d).cumsum(0).double()
        target = torch.einsum("lwbd,wbd->wbl", flat_d, flat_f).cumsum(0).double()
        used = usable.T.double()[:, None, :]  # (W, 1, depth)
        pair = used[..., :, None] * used[..., None, :]
        gram = gram * pair
        diagonal = torch.diagonal(gram, dim1=-2, dim2=-1)
        scale = diagonal.sum(-1, keepdim=True) / used.sum(-1, keepdim=True).clamp(min=1)
        shift = (1 - used) + ridge * scale * used + torch.finfo(torch.float64).tiny
        gram = gram + torch.diag_embed(shift.expand(width, batch, depth))
        gamma, _ = torch.linalg.solve_ex(gram, (target * used)[..., None])
        gamma = gamma[..., 0] * used
        gamma = torch.where(torch.isfinite(gamma), gamma, torch.zeros((), dtype=gamma.dtype, device=gamma.device))
        gamma[:plain_count] = 0  # the done states and the safeguarded one
        correction = torch.einsum("wbl,lwbd->wbd", gamma.to(current.dtype),
                                  (d_states + d_fixed).reshape(depth, width, batch, -1)).reshape(current.shape)
        update = plain - correction
        finite = torch.isfinite(update).reshape(width, batch, -1).all(-1).reshape(width, batch, *([1] * (current.ndim - 2)))
        return torch.where(finite, update, plain)
