"""The contract every parallel sampler keeps, run against each name in PARALLEL_SAMPLERS.

A sampler added to PARALLEL_SAMPLERS is held to all of it: at zero tolerance it is the sequential
sampler up to float32 rounding, at window 1 bit for bit, and with its defaults within a stated
bound of it on DDPM-100; a round cap is a deadline it keeps; a window whose every state passes is accepted
whole; a warm start from the exact trajectory needs one round; a fixed-shape window changes nothing
but the slots evaluated; bad options are refused.
"""
import inspect
import math

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from paradigms_policy.samplers import PARALLEL_SAMPLERS, SAMPLERS, get_sampler, is_parallel

sequential = get_sampler("sequential")
# With its default options on DDPM-100 (as Diffusion Policy samples) every parallel sampler stays within
# this many normalised action units (actions span [-1, 1]) of the sequential answer for the same noise.
# (ParaDiGMS's tolerance is relative to each step's noise std, so coarser chains end further away.)
DEFAULT_OPTIONS_BOUND = 0.05


@pytest.fixture(params=PARALLEL_SAMPLERS)
def sampler(request):
    return get_sampler(request.param)


def tolerance_options(sampler, value: float) -> dict:
    """Every tolerance the sampler takes (`tolerance`, ParaTAA's `relative_tolerance`, ...) set to `value`."""
    names = [name for name in inspect.signature(sampler).parameters if name.endswith("tolerance")]
    assert "tolerance" in names
    return dict.fromkeys(names, value)


def test_every_parallel_sampler_is_registered_and_the_sequential_one_is_not_parallel():
    assert set(PARALLEL_SAMPLERS) < set(SAMPLERS)
    assert [name for name in SAMPLERS if is_parallel(name)] == list(PARALLEL_SAMPLERS)
    with pytest.raises(ValueError, match="unknown sampler 'picard'; choose one of: sequential, paradigms"):
        get_sampler("picard")


@pytest.mark.parametrize("fixed_shape", [False, True])
def test_tolerance_zero_is_sequential_to_float32_rounding(sampler, standard_scheduler, problem, fixed_shape):
    expected, _ = problem.run(sequential, standard_scheduler)
    result, stats = problem.run(sampler, standard_scheduler, window=8, fixed_shape=fixed_shape,
                                **tolerance_options(sampler, 0.0))
    # Batched model calls may round differently from batch-1 calls; nothing else differs.
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert stats.converged and stats.rounds <= len(standard_scheduler.timesteps)
    assert len(stats.residual_history) == stats.rounds and stats.residual == stats.residual_history[-1]


def test_the_defaults_stay_within_the_stated_bound(sampler, schedulers, make_problem):
    scheduler = schedulers["ddpm100"]
    for seed in range(3):
        problem = make_problem(seed, batch=4)
        expected, _ = problem.run(sequential, scheduler, seed=seed)
        result, stats = problem.run(sampler, scheduler, seed=seed)
        assert (result - expected).abs().max() <= DEFAULT_OPTIONS_BOUND
        assert stats.converged and stats.rounds < 50  # well below T = 100


def test_window_one_is_sequential_bit_for_bit(sampler, standard_scheduler, problem):
    steps = len(standard_scheduler.timesteps)
    expected, _ = problem.run(sequential, standard_scheduler)
    result, stats = problem.run(sampler, standard_scheduler, window=1)
    assert torch.equal(result, expected)
    assert (stats.rounds, stats.model_evals, stats.converged) == (steps, steps, True)


def test_a_window_that_passes_whole_is_accepted_whole(sampler, standard_scheduler, problem):
    """Every state within tolerance: the window slides by its full width, each state is evaluated once."""
    steps = len(standard_scheduler.timesteps)
    _, stats = problem.run(sampler, standard_scheduler, window=4, **tolerance_options(sampler, 1e9))
    assert (stats.rounds, stats.model_evals, stats.converged) == (math.ceil(steps / 4), steps, True)


@pytest.mark.parametrize("cap", [1, 3])
def test_a_round_cap_is_kept_and_reported(sampler, schedulers, problem, cap):
    scheduler = schedulers["ddpm100"]
    result, stats = problem.run(sampler, scheduler, window=16, max_rounds=cap)
    assert (stats.rounds, stats.converged, len(stats.residual_history)) == (cap, False, cap)
    assert result.shape == problem.noise.shape and torch.isfinite(result).all()
    # The window has not reached x_0: the answer is the clipped clean-sample estimate, not a noisy state.
    assert result.abs().max() <= 1.0
    assert not torch.equal(result, stats.trajectory[-1])


def test_a_round_cap_with_the_whole_chain_in_the_window_answers_with_its_last_state(sampler, schedulers, problem):
    scheduler = schedulers["ddim15"]
    result, stats = problem.run(sampler, scheduler, window=15, max_rounds=2)
    assert (stats.rounds, stats.converged) == (2, False)
    assert torch.equal(result, stats.trajectory[-1])


def test_a_cap_at_the_rounds_the_solve_needs_changes_nothing(sampler, schedulers, problem):
    scheduler = schedulers["ddpm100"]
    free, free_stats = problem.run(sampler, scheduler, window=16)
    capped, capped_stats = problem.run(sampler, scheduler, window=16, max_rounds=free_stats.rounds)
    assert torch.equal(capped, free) and capped_stats == free_stats and capped_stats.converged


def test_a_warm_start_from_the_exact_trajectory_converges_in_one_round(sampler, standard_scheduler, problem):
    steps = len(standard_scheduler.timesteps)
    trajectory = problem.sequential_trajectory(standard_scheduler)
    result, stats = problem.run(sampler, standard_scheduler, window=steps, init_trajectory=trajectory)
    assert (stats.rounds, stats.model_evals, stats.converged) == (1, steps, True)
    torch.testing.assert_close(result, trajectory[-1], rtol=0, atol=1e-5)
    # The solved trajectory comes back for the next chunk's warm start, outside the statistics' dict.
    torch.testing.assert_close(stats.trajectory, trajectory, rtol=0, atol=1e-5)
    assert set(stats.to_dict()) == {"rounds", "model_evals", "residual", "converged", "residual_history"}


@pytest.mark.parametrize("name, window", [("ddpm100", 16), ("ddim15", 16)], ids=["inside-the-chain", "past-its-end"])
def test_a_fixed_shape_window_gives_the_same_answer_and_rounds(sampler, schedulers, problem, name, window):
    scheduler = schedulers[name]
    free, free_stats = problem.run(sampler, scheduler, window=window)
    fixed, fixed_stats = problem.run(sampler, scheduler, window=window, fixed_shape=True)
    torch.testing.assert_close(fixed, free, rtol=0, atol=1e-5)
    assert (fixed_stats.rounds, fixed_stats.converged) == (free_stats.rounds, free_stats.converged)
    assert fixed_stats.model_evals == window * fixed_stats.rounds > free_stats.model_evals


@pytest.mark.parametrize("options, message", [
    ({"window": 0}, r"window must be >= 1 \(got 0\)"),
    ({"max_rounds": 0}, r"max_rounds must be >= 1 \(got 0\)"),
    ({"init_trajectory": torch.zeros(3, 2, 16, 2)}, r"init_trajectory must be \(16, 2, 16, 2\), got \(3, 2, 16, 2\)"),
])
def test_bad_options_are_refused(sampler, schedulers, problem, options, message):
    with pytest.raises(ValueError, match=message):
        problem.run(sampler, schedulers["ddim15"], **options)


def test_negative_tolerances_are_refused(sampler, schedulers, problem):
    for name in tolerance_options(sampler, 0.0):
        with pytest.raises(ValueError, match=r"must be >= 0 .*-1\.0"):
            problem.run(sampler, schedulers["ddim15"], **{name: -1.0})


def test_unknown_options_and_schedulers_are_refused(sampler, problem, schedulers):
    with pytest.raises(TypeError, match="unexpected keyword argument 'windw'"):
        problem.run(sampler, schedulers["ddim15"], windw=4)
    dpm = DPMSolverMultistepScheduler(num_train_timesteps=100)
    dpm.set_timesteps(10)
    with pytest.raises(ValueError, match="parallel samplers support DDPMScheduler and DDIMScheduler, got DPMSolver"):
        problem.run(sampler, dpm)
