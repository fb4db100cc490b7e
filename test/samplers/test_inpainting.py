"""Hard and soft inpainting of committed actions (real-time chunking): the same fixed point for every sampler."""
import pytest
import torch

from paradigms_policy.samplers import PARALLEL_SAMPLERS, get_sampler
from paradigms_policy.samplers.inpainting import Inpainting, soft_weights

sequential = get_sampler("sequential")
POSITIONS = [0, 1, 2, 3]  # the last executed action and three that run before the new chunk arrives
OVERLAP = list(range(8))  # ... and what else of the previous chunk overlaps the new one
SOFT = soft_weights(len(POSITIONS), len(OVERLAP))


@pytest.fixture
def committed(problem):
    generator = torch.Generator().manual_seed(7)
    return torch.rand((problem.noise.shape[0], len(POSITIONS), 2), generator=generator) * 2 - 1


def inpaint(committed):
    return {"committed_actions": committed, "committed_positions": POSITIONS}


@pytest.fixture
def overlap(problem):
    generator = torch.Generator().manual_seed(8)
    return torch.rand((problem.noise.shape[0], len(OVERLAP), 2), generator=generator) * 2 - 1


def soft(overlap):
    return {"committed_actions": overlap, "committed_positions": OVERLAP, "committed_weights": SOFT}


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


def test_soft_weights_hold_the_frozen_prefix_and_decay_over_the_overlap():
    assert SOFT[:4] == [1.0] * 4
    assert all(1 > a > b > 0 for a, b in zip(SOFT[4:], SOFT[5:]))
    c = 4 / 5  # the first soft position: c = (overlap - frozen) / (overlap - frozen + 1)
    assert SOFT[4] == pytest.approx(c * (torch.e**c - 1) / (torch.e - 1))
    assert soft_weights(3, 3) == [1.0] * 3


def test_soft_inpainting_holds_the_frozen_prefix_and_pulls_the_overlap(problem, schedulers, overlap):
    scheduler = schedulers["ddpm100"]
    result, _ = problem.run(sequential, scheduler, **soft(overlap))
    assert torch.equal(result[:, POSITIONS], overlap[:, POSITIONS])
    hard, _ = problem.run(sequential, scheduler, **inpaint(overlap[:, POSITIONS]))
    pulled = list(range(len(POSITIONS), len(OVERLAP)))
    # Soft entries end nearer their targets than when only the prefix is held, but are not held.
    assert (result[:, pulled] - overlap[:, pulled]).abs().mean() < (hard[:, pulled] - overlap[:, pulled]).abs().mean()
    assert not torch.equal(result[:, pulled], overlap[:, pulled])
    ones, _ = problem.run(sequential, scheduler, **{**inpaint(overlap[:, POSITIONS]), "committed_weights": [1.0] * 4})
    assert torch.equal(ones, hard)  # weight 1 everywhere is hard inpainting, bit for bit


@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_parallel_samplers_solve_the_soft_inpainted_chain(name, problem, standard_scheduler, overlap):
    expected, _ = problem.run(sequential, standard_scheduler, **soft(overlap))
    exact = {"tolerance": 0.0, **({"relative_tolerance": 0.0} if name == "parataa" else {})}
    result, stats = problem.run(get_sampler(name), standard_scheduler, window=8, **exact, **soft(overlap))
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert torch.equal(result[:, POSITIONS], overlap[:, POSITIONS]) and stats.converged


@pytest.mark.parametrize("weights", [[1.0] * 7, [1.0] * 7 + [0.0], [1.0] * 7 + [1.5]])
def test_bad_committed_weights_are_refused(problem, schedulers, overlap, weights):
    with pytest.raises(ValueError, match="committed_weights must be 8 values in"):
        problem.run(sequential, schedulers["ddim15"], **{**soft(overlap), "committed_weights": weights})
