"""Hard inpainting of committed actions (real-time chunking): the same fixed point for every sampler."""
import pytest
import torch

from paradigms_policy.samplers import PARALLEL_SAMPLERS, get_sampler
from paradigms_policy.samplers.inpainting import Inpainting

sequential = get_sampler("sequential")
POSITIONS = [0, 1, 2, 3]  # the last executed action and three that run before the new chunk arrives


@pytest.fixture
def committed(problem):
    generator = torch.Generator().manual_seed(7)
    return torch.rand((problem.noise.shape[0], len(POSITIONS), 2), generator=generator) * 2 - 1


def inpaint(committed):
    return {"committed_actions": committed, "committed_positions": POSITIONS}


def test_sequential_holds_the_committed_actions_and_noises_them_per_step(problem, schedulers, committed):
    scheduler = schedulers["ddpm100"]
    result, _ = problem.run(sequential, scheduler, **inpaint(committed))
    assert torch.equal(result[:, POSITIONS], committed)
    plain, _ = problem.run(sequential, scheduler)
    free = [index for index in range(16) if index not in POSITIONS]
    assert (result[:, free] - plain[:, free]).abs().max() > 1e-3  # the free entries follow the committed ones
    # The target of the state at timestep t is sqrt(abar_t) a + sqrt(1 - abar_t) x_0 on the committed entries.
    targets = Inpainting.build(scheduler, problem.noise, committed, POSITIONS).targets
    abar = scheduler.alphas_cumprod[scheduler.timesteps[10]]
    expected = abar.sqrt() * committed + (1 - abar).sqrt() * problem.noise[:, POSITIONS]
    torch.testing.assert_close(targets[10][:, POSITIONS], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_parallel_samplers_solve_the_inpainted_chain(name, problem, standard_scheduler, committed):
    sampler = get_sampler(name)
    expected, _ = problem.run(sequential, standard_scheduler, **inpaint(committed))
    exact = {"tolerance": 0.0, **({"relative_tolerance": 0.0} if name == "parataa" else {})}
    for options in ({"window": 8, **exact}, {"window": 5, "fixed_shape": True, **exact}):
        result, stats = problem.run(sampler, standard_scheduler, **options, **inpaint(committed))
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
        assert torch.equal(result[:, POSITIONS], committed) and stats.converged
    result, _ = problem.run(sampler, standard_scheduler, window=1, **inpaint(committed))
    assert torch.equal(result, expected)


@pytest.mark.parametrize("name", ["sequential", *PARALLEL_SAMPLERS])
def test_bad_committed_actions_are_refused(name, problem, schedulers, committed):
    sampler, scheduler = get_sampler(name), schedulers["ddim15"]
    with pytest.raises(ValueError, match="committed_actions must be"):
        problem.run(sampler, scheduler, committed_actions=committed[:, :2], committed_positions=POSITIONS)
    with pytest.raises(ValueError, match="distinct indices in 0..15"):
        problem.run(sampler, scheduler, committed_actions=committed, committed_positions=[0, 1, 2, 16])
    with pytest.raises(ValueError, match="without committed_actions"):
        problem.run(sampler, scheduler, committed_positions=POSITIONS)
