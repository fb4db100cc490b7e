"""The sequential sampler: the plain diffusers loop, bit for bit, for every scheduler it is given."""
import torch

from paradigms_policy.config import SchedulerConfig
from paradigms_policy.samplers import sequential
from paradigms_policy.schedulers import make_scheduler


def test_sequential_is_the_plain_diffusers_loop_bit_for_bit(standard_scheduler, problem):
    generator = torch.Generator().manual_seed(1)
    x = problem.noise
    with torch.no_grad():
        for t in standard_scheduler.timesteps:
            x = standard_scheduler.step(problem.model(x, t, problem.observation), t, x, generator=generator).prev_sample
    result, stats = problem.run(sequential.sample, standard_scheduler)
    assert torch.equal(result, x)
    assert (stats.rounds, stats.model_evals, stats.residual, stats.converged) == \
        (len(standard_scheduler.timesteps), len(standard_scheduler.timesteps), 0.0, True)


def test_sequential_runs_dpm_solver_afresh_for_every_chunk(problem):
    dpm = make_scheduler(SchedulerConfig(name="dpmsolver", num_inference_steps=10))
    first, stats = problem.run(sequential.sample, dpm)
    second, _ = problem.run(sequential.sample, dpm)
    assert stats.rounds == 10 and torch.equal(first, second)  # the solver's history is reset per chunk
