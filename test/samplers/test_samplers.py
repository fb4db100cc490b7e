"""Samplers: exact agreement with the diffusers loop where the maths says so, bounded error otherwise."""
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from paradigms_policy.config import SchedulerConfig
from paradigms_policy.samplers import get_sampler
from paradigms_policy.schedulers import make_scheduler

from conftest import small_model, standard_schedulers

# Stated bound: with the default tolerance (0.1 noise std) and window, ParaDiGMS stays within this
# many normalised action units (actions span [-1, 1]) of the sequential answer for the same noise.
DEFAULT_TOLERANCE_BOUND = 0.05

sequential = get_sampler("sequential")
paradigms = get_sampler("paradigms")


def problem(seed=0, batch=2):
    model = small_model(seed)
    torch.manual_seed(seed + 100)
    cond = torch.randn(batch, 40)
    return model, model.encode_condition(cond), cond, torch.randn(batch, 16, 2)


def schedulers():
    return standard_schedulers()


def run(sampler, scheduler, seed=1, **options):
    model, encoded, _, noise = problem()
    return sampler(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(seed), **options)


@pytest.mark.parametrize("name", list(schedulers()))
def test_sequential_is_the_plain_diffusers_loop_bit_for_bit(name):
    scheduler = schedulers()[name]
    model, encoded, cond, noise = problem()
    generator = torch.Generator().manual_seed(1)
    x = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t, cond), t, x, generator=generator).prev_sample
    result, stats = sequential(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(1))
    assert torch.equal(result, x)
    assert stats.rounds == stats.model_evals == len(scheduler.timesteps)


@pytest.mark.parametrize("name", list(schedulers()))
def test_paradigms_window_one_is_sequential_exactly(name):
    scheduler = schedulers()[name]
    expected, _ = run(sequential, scheduler)
    result, stats = run(paradigms, scheduler, window=1, tolerance=0.1)
    assert torch.equal(result, expected)
    assert stats.rounds == len(scheduler.timesteps)


@pytest.mark.parametrize("name", list(schedulers()))
@pytest.mark.parametrize("fixed_shape", [False, True])
def test_paradigms_tolerance_zero_is_sequential_to_float32_rounding(name, fixed_shape):
    scheduler = schedulers()[name]
    expected, _ = run(sequential, scheduler)
    result, stats = run(paradigms, scheduler, window=8, tolerance=0.0, fixed_shape=fixed_shape)
    # Batched model calls may round differently from batch-1 calls; nothing else differs.
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert stats.converged and stats.rounds <= len(scheduler.timesteps)


def test_paradigms_default_tolerance_within_stated_bound():
    scheduler = schedulers()["ddpm100"]
    for seed in range(3):
        model, encoded, _, noise = problem(seed, batch=4)
        expected, _ = sequential(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(seed))
        result, stats = paradigms(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(seed))
        assert (result - expected).abs().max() <= DEFAULT_TOLERANCE_BOUND
        assert stats.converged and stats.rounds < 50  # well below T = 100


def test_fixed_shape_window_gives_the_same_answer_and_rounds():
    scheduler = schedulers()["ddpm100"]
    free, free_stats = run(paradigms, scheduler, window=16)
    fixed, fixed_stats = run(paradigms, scheduler, window=16, fixed_shape=True)
    torch.testing.assert_close(fixed, free, rtol=0, atol=1e-5)
    assert fixed_stats.rounds == free_stats.rounds
    assert fixed_stats.model_evals == 16 * fixed_stats.rounds


def test_round_cap_stops_early_and_says_so():
    scheduler = schedulers()["ddpm100"]
    result, stats = run(paradigms, scheduler, window=16, max_rounds=3)
    assert stats.rounds == 3 and not stats.converged
    assert result.shape == (2, 16, 2) and torch.isfinite(result).all()
    assert result.abs().max() <= 1.0  # the clipped clean-sample estimate


def test_full_window_with_cap_returns_the_last_state():
    scheduler = schedulers()["ddim15"]
    result, stats = run(paradigms, scheduler, window=15, max_rounds=2)
    assert stats.rounds == 2 and not stats.converged and torch.isfinite(result).all()


def test_warm_start_from_the_solution_converges_at_once():
    scheduler = schedulers()["ddpm100"]
    model, encoded, _, noise = problem()
    solution, _ = paradigms(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(1),
                            window=100, tolerance=0.0)
    # Recover the whole trajectory by a sequential pass with the same noise.
    states = [noise]
    generator = torch.Generator().manual_seed(1)
    x = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model.denoise(x, t, encoded), t, x, generator=generator).prev_sample
            states.append(x)
    result, stats = paradigms(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(1),
                              window=100, tolerance=0.1, init_trajectory=torch.stack(states))
    assert stats.rounds == 1
    torch.testing.assert_close(result, solution, rtol=0, atol=1e-5)


def test_bad_options_and_unsupported_schedulers_are_refused():
    scheduler = schedulers()["ddpm100"]
    for options in ({"window": 0}, {"tolerance": -1.0}, {"max_rounds": 0}):
        with pytest.raises(ValueError):
            run(paradigms, scheduler, **options)
    dpm = DPMSolverMultistepScheduler(num_train_timesteps=100)
    dpm.set_timesteps(10)
    with pytest.raises(ValueError, match="DDPMScheduler and DDIMScheduler"):
        run(paradigms, dpm)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("picard")


def test_sequential_runs_dpm_solver():
    dpm = make_scheduler(SchedulerConfig(name="dpmsolver", num_inference_steps=10))
    first, stats = run(sequential, dpm)
    second, _ = run(sequential, dpm)
    assert stats.rounds == 10 and torch.equal(first, second)  # the solver's history is reset per chunk
