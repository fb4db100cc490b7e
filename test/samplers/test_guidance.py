"""Guided inpainting (RTC's guidance): the correction's formula, and one fixed point for every sampler."""
import pytest
import torch

from paradigms_policy.samplers import PARALLEL_SAMPLERS, get_sampler
from paradigms_policy.samplers.guidance import Guidance, guided_denoiser
from paradigms_policy.samplers.inpainting import soft_weights

sequential = get_sampler("sequential")
FROZEN = [0, 1, 2, 3]  # held exactly (hard inpainting)
OVERLAP = list(range(8))  # guided, with RTC's soft weights
WEIGHTS = soft_weights(len(FROZEN), len(OVERLAP))


@pytest.fixture
def committed(problem):
    generator = torch.Generator().manual_seed(8)
    return torch.rand((problem.noise.shape[0], len(OVERLAP), 2), generator=generator) * 2 - 1


def guided_options(problem, scheduler, committed):
    guidance = Guidance.build(committed, OVERLAP, WEIGHTS, horizon=16)
    return {"denoiser": guided_denoiser(problem.model.denoise, scheduler, guidance),
            "committed_actions": committed[:, :len(FROZEN)], "committed_positions": FROZEN}


@pytest.mark.parametrize("per_row", [True, False])
def test_correction_is_the_clipped_vector_jacobian_product_towards_the_targets(schedulers, per_row):
    # eps(x) = a x has x0_hat = c x with c = (1 - sigma a) / sqrt(abar), so J^T v = c v.
    scheduler, slope, batch, copies = schedulers["ddpm100"], 0.3, 2, 3
    targets = torch.randn(batch, 5, 2, generator=torch.Generator().manual_seed(0))
    guidance = Guidance.build(targets[:, 1:4], [1, 2, 3], [1.0, 0.5, 0.25], horizon=5, max_scale=5.0)
    x = torch.randn(copies * batch, 5, 2, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([90, 40, 2]).repeat_interleave(batch) if per_row else torch.tensor(40)
    result = guided_denoiser(lambda state, t, condition: slope * state, scheduler, guidance)(x, timesteps, None)
    abar = scheduler.alphas_cumprod[timesteps].reshape(-1, 1, 1) if per_row else scheduler.alphas_cumprod[timesteps]
    sigma = (1 - abar).sqrt()
    c = (1 - sigma * slope) / abar.sqrt()
    weights = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.0]).reshape(1, 5, 1)
    goal = torch.where(weights > 0, targets, torch.zeros(())).repeat(copies, 1, 1)
    expected = slope * x - torch.minimum(5.0 * abar.sqrt(), 1 / sigma) * c * weights * (goal - c * x)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    assert not result.requires_grad


@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_parallel_samplers_solve_the_guided_chain(name, problem, standard_scheduler, committed):
    options = guided_options(problem, standard_scheduler, committed)
    expected, _ = problem.run(sequential, standard_scheduler, **options)
    exact = {"tolerance": 0.0, **({"relative_tolerance": 0.0} if name == "parataa" else {})}
    result, stats = problem.run(get_sampler(name), standard_scheduler, window=8, **exact, **options)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert torch.equal(result[:, FROZEN], committed[:, :len(FROZEN)]) and stats.converged


def test_guidance_turns_the_overlap_towards_the_committed_actions(problem, schedulers, committed):
    scheduler = schedulers["ddpm100"]
    guided, _ = problem.run(sequential, scheduler, **guided_options(problem, scheduler, committed))
    held, _ = problem.run(sequential, scheduler, committed_actions=committed[:, :len(FROZEN)], committed_positions=FROZEN)
    rest = OVERLAP[len(FROZEN):]
    assert (guided[:, rest] - committed[:, rest]).abs().mean() < 0.7 * (held[:, rest] - committed[:, rest]).abs().mean()


def test_policy_guides_with_the_eager_model(tiny_checkpoint):
    import numpy as np

    from paradigms_policy.checkpoint.loader import load_policy

    policy = load_policy(tiny_checkpoint, sampler="parataa")
    actions = np.linspace([100.0, 100.0], [300.0, 200.0], 8)
    options = policy.commitment(actions[:4], 0, actions[4:], mode="guided")
    assert options["committed_positions"] == FROZEN
    observation = np.full((2, 20), 256.0, np.float32)
    noise = policy.initial_noise(1, torch.Generator().manual_seed(0))
    guided, _ = policy.sample_normalized(torch.as_tensor(observation)[None], noise, torch.Generator().manual_seed(1),
                                         **options)
    denoiser = guided_denoiser(policy.model.denoise, policy.scheduler, options["guidance"])
    condition = policy.condition(torch.as_tensor(observation)[None])
    held = {key: options[key] for key in ("committed_actions", "committed_positions")}
    expected, _ = policy.sampler(denoiser, policy.scheduler, noise, condition, generator=torch.Generator().manual_seed(1),
                                 **policy.sampler_options, **held)
    assert torch.equal(guided, expected)
    unguided, _ = policy.sample_normalized(torch.as_tensor(observation)[None], noise, torch.Generator().manual_seed(1),
                                           **held)
    assert not torch.equal(guided, unguided)


@pytest.mark.parametrize("actions, positions, weights, scale, message", [
    (torch.zeros(1, 3, 2), [0, 1], [1.0, 1.0], 5.0, "must be \\(B, 2, action_dim\\)"),
    (torch.zeros(1, 2, 2), [0, 16], [1.0, 1.0], 5.0, "distinct indices in 0..15"),
    (torch.zeros(1, 2, 2), [1, 1], [1.0, 1.0], 5.0, "distinct indices"),
    (torch.zeros(1, 2, 2), [0, 1], [1.0, 0.0], 5.0, "2 values in \\(0, 1\\]"),
    (torch.zeros(1, 2, 2), [0, 1], [1.0], 5.0, "2 values in"),
    (torch.zeros(1, 2, 2), [0, 1], [1.0, 1.0], 0.0, "must be positive"),
])
def test_bad_guidance_is_refused(actions, positions, weights, scale, message):
    with pytest.raises(ValueError, match=message):
        Guidance.build(actions, positions, weights, horizon=16, max_scale=scale)
