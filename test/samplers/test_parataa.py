"""ParaTAA: exact where the maths says so, plain fixed-point iteration at memory 1, never more than T rounds."""
import pytest
import torch

from paradigms_policy.samplers import paradigms, parataa, sequential

from conftest import small_model, standard_schedulers

DEFAULT_TOLERANCE_BOUND = 0.05  # the bound ParaDiGMS's default is held to in test_samplers.py


def problem(seed=0, batch=2):
    model = small_model(seed)
    torch.manual_seed(seed + 100)
    cond = torch.randn(batch, 40)
    return model, model.encode_condition(cond), torch.randn(batch, 16, 2)


SCHEDULERS = standard_schedulers()


def run(sampler, scheduler, seed=1, problem_seed=0, batch=2, denoiser=None, **options):
    model, encoded, noise = problem(problem_seed, batch)
    return sampler(denoiser or model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(seed),
                   **options)


def sequential_trajectory(scheduler, seed=1):
    model, encoded, noise = problem()
    generator = torch.Generator().manual_seed(seed)
    states = [noise]
    with torch.no_grad():
        for t in scheduler.timesteps:
            states.append(scheduler.step(model.denoise(states[-1], t, encoded), t, states[-1],
                                         generator=generator).prev_sample)
    return torch.stack(states)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("options", [dict(), dict(memory=4, order=3, fixed_shape=True), dict(form="picard")],
                         ids=["defaults", "m4-k3-fixed", "picard"])
def test_tolerance_zero_is_sequential_to_float32_rounding(name, options):
    scheduler = SCHEDULERS[name]
    expected, _ = run(sequential.sample, scheduler)
    result, stats = run(parataa.sample, scheduler, window=8, tolerance=0.0, relative_tolerance=0.0, **options)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert stats.converged and stats.rounds <= len(scheduler.timesteps)


@pytest.mark.parametrize("name", ["ddpm15-trailing", "ddim15"])
def test_window_one_is_sequential_exactly(name):
    scheduler = SCHEDULERS[name]
    expected, _ = run(sequential.sample, scheduler)
    result, stats = run(parataa.sample, scheduler, window=1, memory=3)
    assert torch.equal(result, expected) and stats.rounds == len(scheduler.timesteps)


@pytest.mark.parametrize("name, window", [("ddim15", 6), ("ddpm100", 16)])
def test_memory_one_is_paradigms_round_for_round(name, window):
    """m = 1, k >= window and the Picard form: at tolerance 0 every round equals a ParaDiGMS round, so the
    result after any number of rounds (the round cap's answer) and the final result are identical."""
    scheduler = SCHEDULERS[name]
    for cap in (1, 2, 3, 5, 9, None):
        expected, expected_stats = run(paradigms.sample, scheduler, window=window, tolerance=0.0, max_rounds=cap)
        result, stats = run(parataa.sample, scheduler, window=window, memory=1, order=window + 3, form="picard",
                            tolerance=0.0, relative_tolerance=0.0, max_rounds=cap)
        assert torch.equal(result, expected), cap
        assert (stats.rounds, stats.model_evals, stats.converged) == \
            (expected_stats.rounds, expected_stats.model_evals, expected_stats.converged)


def test_posterior_form_unrolls_the_posterior_mean_weight_exactly():
    """One plain round (m = 1) of the posterior form from the cold start is the recursion
    y_{j+1} = a_j y_j + (g_j(x_j) - a_j x_j), a_j the DDPM posterior mean's weight on x_t, written
    here from the scheduler's alphas independently of the sampler's tables."""
    scheduler = SCHEDULERS["ddpm100"]
    model, encoded, noise = problem()
    rounds = []
    parataa.solve(model.denoise, scheduler, noise, encoded, generator=torch.Generator().manual_seed(1), window=100,
                  memory=1, form="posterior", max_rounds=1, observer=rounds.append)
    generator = torch.Generator().manual_seed(1)
    expected, state = [], noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            proposal = scheduler.step(model.denoise(noise, t, encoded), t, noise, generator=generator).prev_sample
            alpha_prod = scheduler.alphas_cumprod[t]
            alpha_prod_prev = scheduler.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
            weight = (alpha_prod / alpha_prod_prev).sqrt() * (1 - alpha_prod_prev) / (1 - alpha_prod)
            state = weight * state + (proposal - weight * noise)
            expected.append(state)
    torch.testing.assert_close(rounds[0]["updated"], torch.stack(expected), rtol=0, atol=1e-5)


def test_state_weight_of_ddim_holds_the_clean_estimate_fixed():
    """DDIM: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) (x - sqrt(abar) x0) / sqrt(1 - abar), so d/dx
    at fixed x0 is sqrt(1 - abar_prev) / sqrt(1 - abar); the last step uses final_alpha_cumprod."""
    from paradigms_policy.samplers.chain import DenoisingChain

    scheduler = SCHEDULERS["ddim15"]
    alphas = scheduler.alphas_cumprod
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    expected = torch.stack([((1 - (alphas[t - stride] if t >= stride else scheduler.final_alpha_cumprod)) / (1 - alphas[t])).sqrt()
                            for t in scheduler.timesteps])
    chain = DenoisingChain.from_scheduler(scheduler)
    torch.testing.assert_close(chain.state_weight, expected.float(), rtol=1e-6, atol=0)
    assert torch.equal(chain.padded(3).state_weight[-3:], torch.ones(3))  # identity steps


def test_memory_one_order_one_is_jacobi():
    """m = 1, k = 1 is Jacobi, x_{i+1} <- step(x_i) for every i at once: compare every round."""
    scheduler = SCHEDULERS["ddim15"]
    model, encoded, noise = problem()
    steps = len(scheduler.timesteps)
    rounds = []
    parataa.solve(model.denoise, scheduler, noise, encoded, window=steps, order=1, memory=1, tolerance=0.0,
                  relative_tolerance=0.0, observer=lambda info: rounds.append(info["trajectory"]))
    assert len(rounds) <= steps
    jacobi = noise.expand(steps + 1, *noise.shape).clone()
    with torch.no_grad():
        for trajectory in rounds:
            jacobi = torch.stack([noise] + [scheduler.step(model.denoise(jacobi[i], t, encoded), t, jacobi[i]).prev_sample
                                            for i, t in enumerate(scheduler.timesteps)])
            torch.testing.assert_close(trajectory, jacobi, rtol=0, atol=1e-5)
    torch.testing.assert_close(rounds[-1], sequential_trajectory(scheduler), rtol=0, atol=1e-5)


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
def test_adversarial_models_never_need_more_than_T_rounds(name, options):
    scheduler = SCHEDULERS[name]
    steps = len(scheduler.timesteps)
    model = small_model(0)
    for denoiser in (chaotic(3), amplified(model, 40.0)):
        starts = []
        model_, encoded, noise = problem()
        result, stats, _ = parataa.solve(denoiser, scheduler, noise, encoded, generator=torch.Generator().manual_seed(1),
                                         observer=lambda info: starts.append(info["start"]), **options)
        assert stats.converged and stats.rounds <= steps
        assert torch.isfinite(result).all()
        assert all(later > earlier for earlier, later in zip(starts, starts[1:]))  # the safeguard


def test_warm_start_from_the_solution_converges_at_once():
    scheduler = SCHEDULERS["ddpm100"]
    trajectory = sequential_trajectory(scheduler)
    result, stats = run(parataa.sample, scheduler, window=100, init_trajectory=trajectory)
    assert stats.rounds == 1 and stats.converged
    torch.testing.assert_close(result, trajectory[-1], rtol=0, atol=1e-5)
    # The solved trajectory comes back in the stats for the next chunk's warm start.
    torch.testing.assert_close(stats.trajectory, trajectory, rtol=0, atol=1e-5)
    assert "trajectory" not in stats.to_dict()


def test_round_cap_stops_early_and_says_so():
    result, stats = run(parataa.sample, SCHEDULERS["ddpm100"], max_rounds=3)
    assert stats.rounds == 3 and not stats.converged and len(stats.residual_history) == 3
    assert result.shape == (2, 16, 2) and torch.isfinite(result).all()
    assert result.abs().max() <= 1.0  # the clipped clean-sample estimate
    # A window that reaches the end answers with the last state.
    scheduler = SCHEDULERS["ddim15"]
    capped, stats = run(parataa.sample, scheduler, window=15, max_rounds=2)
    _, _, trajectory = run(parataa.solve, scheduler, window=15, max_rounds=2)
    assert stats.rounds == 2 and not stats.converged and torch.equal(capped, trajectory[-1])


@pytest.mark.parametrize("memory", [3, 5])
def test_late_states_never_read_history_they_do_not_have(memory):
    """A window shorter than T: states enter late with short histories. No update may use more
    differences than the state itself and every noisier state of the window has stored, a state
    with none takes exactly the plain update, and the answer at tolerance 0 is still sequential."""
    scheduler = SCHEDULERS["ddpm100"]
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

    model, encoded, noise = problem()
    result, stats, trajectory = parataa.solve(model.denoise, scheduler, noise, encoded,
                                              generator=torch.Generator().manual_seed(1), window=window,
                                              memory=memory, tolerance=0.0, relative_tolerance=0.0, observer=observe)
    assert max(checked) == memory - 1  # the full history was in use somewhere
    assert torch.isfinite(trajectory).all()
    torch.testing.assert_close(trajectory, sequential_trajectory(scheduler), rtol=0, atol=1e-5)
    # And with a working tolerance.
    result, stats = run(parataa.sample, scheduler, window=window, memory=memory)
    expected, _ = run(sequential.sample, scheduler)
    assert stats.converged and (result - expected).abs().max() <= DEFAULT_TOLERANCE_BOUND


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_defaults_are_as_accurate_as_paradigms_defaults(name):
    """Rounds depend on the model (the README's rounds study measures them on the shipped policy);
    the defaults' accuracy against the sequential answer must not be worse than ParaDiGMS's."""
    scheduler = SCHEDULERS[name]
    for seed in range(3):
        expected, _ = run(sequential.sample, scheduler, seed=seed, problem_seed=seed, batch=4)
        baseline, _ = run(paradigms.sample, scheduler, seed=seed, problem_seed=seed, batch=4)
        result, stats = run(parataa.sample, scheduler, seed=seed, problem_seed=seed, batch=4)
        assert stats.converged and stats.rounds <= len(scheduler.timesteps)
        assert (result - expected).abs().max() <= min(DEFAULT_TOLERANCE_BOUND, (baseline - expected).abs().max())
        assert len(stats.residual_history) == stats.rounds and stats.residual == stats.residual_history[-1]


def test_fixed_shape_window_gives_the_same_answer_and_rounds():
    scheduler = SCHEDULERS["ddpm100"]
    free, free_stats = run(parataa.sample, scheduler, memory=3)
    fixed, fixed_stats = run(parataa.sample, scheduler, memory=3, fixed_shape=True)
    torch.testing.assert_close(fixed, free, rtol=0, atol=1e-5)
    assert fixed_stats.rounds == free_stats.rounds
    assert fixed_stats.model_evals == 16 * fixed_stats.rounds


def test_bad_options_are_refused():
    scheduler = SCHEDULERS["ddim15"]
    for options in ({"window": 0}, {"order": 0}, {"memory": 0}, {"ridge": -1.0}, {"tolerance": -1.0},
                    {"relative_tolerance": -1.0}, {"max_rounds": 0}, {"form": "eps"}):
        with pytest.raises(ValueError):
            run(parataa.sample, scheduler, **options)
    with pytest.raises(ValueError, match="init_trajectory"):
        run(parataa.sample, scheduler, init_trajectory=torch.zeros(3, 2, 16, 2))
