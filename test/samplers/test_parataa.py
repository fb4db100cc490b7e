"""ParaTAA: its forms, orders and memory; exact where the maths says so, never more than T rounds.

What every parallel sampler keeps (tolerance 0, window 1, round caps, warm starts, fixed shapes,
bad options) is in test_contract.py.
"""
import pytest
import torch

from paradigms_policy.config import SchedulerConfig
from paradigms_policy.samplers import paradigms, parataa, sequential
from paradigms_policy.samplers.chain import DenoisingChain
from paradigms_policy.samplers.window import WHOLE_CHAIN_LIMIT
from paradigms_policy.schedulers import make_scheduler

EXACT = dict(tolerance=0.0, relative_tolerance=0.0)


def solve(problem, scheduler, seed=1, denoiser=None, **options):
    """`parataa.solve` on the problem: (x_0, stats, trajectory)."""
    return problem.run(parataa.solve, scheduler, seed=seed, denoiser=denoiser, **options)


def test_the_default_window_is_the_whole_chain(schedulers, problem):
    scheduler = schedulers["ddpm100"]
    default, default_stats = problem.run(parataa.sample, scheduler)
    whole, whole_stats = problem.run(parataa.sample, scheduler, window=100)
    assert torch.equal(default, whole) and default_stats == whole_stats
    _, first_round = problem.run(parataa.sample, scheduler, max_rounds=1)
    assert first_round.model_evals == 100  # every state of the chain in the first round


def test_the_default_window_stops_at_the_whole_chain_limit(problem):
    scheduler = make_scheduler(SchedulerConfig(num_train_timesteps=1000, num_inference_steps=WHOLE_CHAIN_LIMIT + 44))
    _, stats = problem.run(parataa.sample, scheduler, max_rounds=1)
    assert stats.model_evals == WHOLE_CHAIN_LIMIT


@pytest.mark.parametrize("options", [dict(memory=4, order=3, fixed_shape=True), dict(form="picard")],
                         ids=["m4-k3-fixed", "picard"])
def test_every_form_and_order_at_tolerance_zero_is_sequential_to_float32_rounding(standard_scheduler, problem,
                                                                                   options):
    expected, _ = problem.run(sequential.sample, standard_scheduler)
    result, stats = problem.run(parataa.sample, standard_scheduler, window=8, **EXACT, **options)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert stats.converged and stats.rounds <= len(standard_scheduler.timesteps)


@pytest.mark.parametrize("name, window", [("ddim15", 6), ("ddpm100", 16)])
def test_memory_one_is_paradigms_round_for_round(schedulers, problem, name, window):
    """m = 1, k >= window and the Picard form: at tolerance 0 every round equals a ParaDiGMS round, so the
    result after any number of rounds (the round cap's answer) and the final result are identical."""
    scheduler = schedulers[name]
    for cap in (1, 2, 3, 5, 9, None):
        expected, expected_stats = problem.run(paradigms.sample, scheduler, window=window, tolerance=0.0,
                                               max_rounds=cap)
        result, stats = problem.run(parataa.sample, scheduler, window=window, memory=1, order=window + 3,
                                    form="picard", max_rounds=cap, **EXACT)
        assert torch.equal(result, expected), cap
        assert (stats.rounds, stats.model_evals, stats.converged) == \
            (expected_stats.rounds, expected_stats.model_evals, expected_stats.converged)


def test_posterior_form_unrolls_the_posterior_mean_weight_exactly(schedulers, problem):
    """One plain round (m = 1) of the posterior form from the cold start is the recursion
    y_{j+1} = a_j y_j + (g_j(x_j) - a_j x_j), a_j the DDPM posterior mean's weight on x_t, written
    here from the scheduler's alphas independently of the sampler's tables."""
    scheduler = schedulers["ddpm100"]
    rounds = []
    solve(problem, scheduler, window=100, memory=1, form="posterior", max_rounds=1, observer=rounds.append)
    generator = torch.Generator().manual_seed(1)
    noise = problem.noise
    expected, state = [], noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            proposal = scheduler.step(problem.model.denoise(noise, t, problem.condition), t, noise,
                                      generator=generator).prev_sample
            alpha_prod = scheduler.alphas_cumprod[t]
            alpha_prod_prev = scheduler.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
            weight = (alpha_prod / alpha_prod_prev).sqrt() * (1 - alpha_prod_prev) / (1 - alpha_prod)
            state = weight * state + (proposal - weight * noise)
            expected.append(state)
    torch.testing.assert_close(rounds[0]["updated"], torch.stack(expected), rtol=0, atol=1e-5)


def test_state_weight_of_ddim_holds_the_clean_estimate_fixed(schedulers):
    """DDIM: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) (x - sqrt(abar) x0) / sqrt(1 - abar), so d/dx
    at fixed x0 is sqrt(1 - abar_prev) / sqrt(1 - abar); the last step uses final_alpha_cumprod."""
    scheduler = schedulers["ddim15"]
    alphas = scheduler.alphas_cumprod
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    expected = torch.stack([((1 - (alphas[t - stride] if t >= stride else scheduler.final_alpha_cumprod))
                             / (1 - alphas[t])).sqrt() for t in scheduler.timesteps])
    chain = DenoisingChain.from_scheduler(scheduler)
    torch.testing.assert_close(chain.state_weight, expected.float(), rtol=1e-6, atol=0)
    assert torch.equal(chain.padded(3).state_weight[-3:], torch.ones(3))  # identity steps


def test_memory_one_order_one_is_jacobi(schedulers, problem):
    """m = 1, k = 1 is Jacobi, x_{i+1} <- step(x_i) for every i at once: compare every round."""
    scheduler = schedulers["ddim15"]
    noise, steps = problem.noise, len(scheduler.timesteps)
    rounds = []
    problem.run(parataa.solve, scheduler, window=steps, order=1, memory=1, **EXACT,
                observer=lambda info: rounds.append(info["trajectory"]))
    assert len(rounds) <= steps
    jacobi = noise.expand(steps + 1, *noise.shape).clone()
    with torch.no_grad():
        for trajectory in rounds:
            jacobi = torch.stack([noise] + [scheduler.step(problem.model.denoise(jacobi[i], t, problem.condition), t,
                                                           jacobi[i]).prev_sample
                                            for i, t in enumerate(scheduler.timesteps)])
            torch.testing.assert_close(trajectory, jacobi, rtol=0, atol=1e-5)
    torch.testing.assert_close(rounds[-1], problem.sequential_trajectory(scheduler), rtol=0, atol=1e-5)


def chaotic(seed):
    """A denoiser whose every call returns fresh, large random noise: no fixed point ever settles."""
    generator = torch.Generator().manual_seed(seed)

    def denoise(x, t, condition):
        return 30 * torch.randn(x.shape, generator=generator)
    return denoise


def amplified(model, gain):
    """The model scaled up and folded: the fixed-point iteration diverges wildly."""
    def denoise(x, t, condition):
        return gain * model.denoise(x, t, condition) + gain * torch.sin(25 * x)
    return denoise


@pytest.mark.parametrize("name", ["ddpm100", "ddim15"])
@pytest.mark.parametrize("options", [dict(), dict(memory=5, ridge=0.0, window=32), dict(memory=3, order=1)],
                         ids=["defaults", "m5-ridge0", "m3-jacobi"])
def test_adversarial_models_never_need_more_than_T_rounds(schedulers, problem, name, options):
    scheduler = schedulers[name]
    steps = len(scheduler.timesteps)
    for denoiser in (chaotic(3), amplified(problem.model, 40.0)):
        starts = []
        result, stats, _ = solve(problem, scheduler, denoiser=denoiser, observer=lambda info: starts.append(info["start"]),
                                 **options)
        assert stats.converged and stats.rounds == len(starts) <= steps
        assert torch.isfinite(result).all()
        assert all(later > earlier for earlier, later in zip(starts, starts[1:]))  # the safeguard


@pytest.mark.parametrize("memory", [3, 5])
def test_late_states_never_read_history_they_do_not_have(schedulers, problem, memory):
    """A window shorter than T: states enter late with short histories. No update may use more
    differences than the state itself and every noisier state of the window has stored, a state
    with none takes exactly the plain update, and the answer at tolerance 0 is still sequential."""
    scheduler = schedulers["ddpm100"]
    window, steps = 6, len(scheduler.timesteps)
    seen = [0] * steps  # rounds each slot has been updated in before the current one
    checked = []

    def observe(info):
        start, counts = info["start"], info["counts"]
        slots = min(window, steps - start)
        for offset, used in enumerate(counts[:slots]):
            available = min(min(seen[start:start + offset + 1]), memory - 1)
            assert used <= available
            if used == 0:
                assert torch.equal(info["updated"][offset], info["plain"][offset])
            checked.append(used)
        for slot in range(start, start + slots):
            seen[slot] += 1

    _, _, trajectory = solve(problem, scheduler, window=window, memory=memory, observer=observe, **EXACT)
    assert max(checked) == memory - 1  # the full history was in use somewhere
    torch.testing.assert_close(trajectory, problem.sequential_trajectory(scheduler), rtol=0, atol=1e-5)
    # And with the default tolerance, as accurately as ParaDiGMS's default.
    result, stats = problem.run(parataa.sample, scheduler, window=window, memory=memory)
    expected, _ = problem.run(sequential.sample, scheduler)
    baseline, _ = problem.run(paradigms.sample, scheduler)
    assert stats.converged and (result - expected).abs().max() <= (baseline - expected).abs().max()


def test_defaults_are_as_accurate_as_paradigms_defaults(standard_scheduler, make_problem):
    """Rounds depend on the model (the README's rounds study measures them on the shipped policy);
    the defaults' accuracy against the sequential answer must not be worse than ParaDiGMS's (the
    contract bounds both)."""
    for seed in range(3):
        problem = make_problem(seed, batch=4)
        expected, _ = problem.run(sequential.sample, standard_scheduler, seed=seed)
        baseline, _ = problem.run(paradigms.sample, standard_scheduler, seed=seed)
        result, stats = problem.run(parataa.sample, standard_scheduler, seed=seed)
        assert stats.converged and (result - expected).abs().max() <= (baseline - expected).abs().max()


@pytest.mark.parametrize("options, message", [
    ({"order": 0}, r"order must be >= 1 \(got 0\)"), ({"memory": 0}, r"memory must be >= 1 \(got 0\)"),
    ({"ridge": -1.0}, r"ridge must be >= 0 \(got -1.0\)"), ({"form": "eps"}, "form must be one of picard, posterior"),
])
def test_bad_parataa_options_are_refused(schedulers, problem, options, message):
    with pytest.raises(ValueError, match=message):
        problem.run(parataa.sample, schedulers["ddim15"], **options)
