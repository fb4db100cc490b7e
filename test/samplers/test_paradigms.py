"""ParaDiGMS: the Picard update of a round, and its tolerance's trade of rounds for accuracy.

What every parallel sampler keeps, the default's accuracy bound included, is in test_contract.py.
"""
import torch

from paradigms_policy.samplers import paradigms, sequential


def test_a_round_from_the_cold_start_is_the_picard_sum(schedulers, problem):
    """Every state starts as x_T, so one round gives x_{k+1} = x_T + sum_{j<=k} (step_j(x_T) - x_T),
    step_j the scheduler's own step() with its noise, whichever states the tolerance accepts."""
    scheduler = schedulers["ddpm100"]
    _, stats = problem.run(paradigms.sample, scheduler, window=100, max_rounds=1)
    generator = torch.Generator().manual_seed(1)
    noise = problem.noise
    with torch.no_grad():
        drifts = torch.stack([scheduler.step(problem.model.denoise(noise, t, problem.condition), t, noise,
                                             generator=generator).prev_sample - noise for t in scheduler.timesteps])
    expected = torch.cat([noise[None], noise + drifts.cumsum(0)])
    torch.testing.assert_close(stats.trajectory, expected, rtol=1e-5, atol=1e-4)
    assert stats.model_evals == 100 and not stats.converged


def test_a_larger_tolerance_takes_fewer_rounds_and_ends_further_from_the_sequential_answer(schedulers, problem):
    """The tolerance trades rounds for accuracy: measured at 0.01, 0.1 (the default) and 1 noise std."""
    scheduler = schedulers["ddpm100"]
    expected, _ = problem.run(sequential.sample, scheduler)
    rounds, deviations = [], []
    for tolerance in (0.01, 0.1, 1.0):
        result, stats = problem.run(paradigms.sample, scheduler, window=16, tolerance=tolerance)
        rounds.append(stats.rounds)
        deviations.append(float((result - expected).abs().max()))
    assert rounds == sorted(rounds, reverse=True) and rounds[0] > rounds[-1]
    assert deviations == sorted(deviations) and deviations[0] < deviations[-1]
