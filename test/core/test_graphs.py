"""CUDA-graph capture: eager and unchanged off CUDA; replays equal eager calls on CUDA."""
import pytest
import torch

from paradigms_policy.graphs import CapturedDenoiser
from paradigms_policy.samplers import get_sampler
from paradigms_policy.schedulers import make_scheduler
from paradigms_policy.config import SchedulerConfig


def solve(denoiser, model, device, sampler, scheduler=None, **options):
    torch.manual_seed(3)
    condition = model.encode_condition(torch.randn(2, 40, device=device))
    noise = torch.randn(2, 16, 2, device=device)
    return get_sampler(sampler)(denoiser, scheduler or make_scheduler(SchedulerConfig()), noise, condition,
                                generator=torch.Generator().manual_seed(0), **options)


def test_off_cuda_the_captured_denoiser_is_the_eager_call(model):
    captured = CapturedDenoiser(model.denoise)
    for sampler, options in (("sequential", {}), ("paradigms", {"window": 8, "fixed_shape": True})):
        eager, _ = solve(model.denoise, model, "cpu", sampler, **options)
        replayed, _ = solve(captured, model, "cpu", sampler, **options)
        assert torch.equal(eager, replayed)
    assert captured.captured_shapes == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graph_replays_match_eager_on_cuda(model):
    model = model.cuda()
    captured = CapturedDenoiser(model.denoise)
    for sampler, options in (("sequential", {}), ("paradigms", {"window": 8, "fixed_shape": True})):
        eager, _ = solve(model.denoise, model, "cuda", sampler, **options)
        replayed, _ = solve(captured, model, "cuda", sampler, **options)
        torch.testing.assert_close(replayed, eager, rtol=0, atol=1e-5)
    # One graph for the sequential batch, one for the fixed-shape window.
    assert len(captured.captured_shapes) == 2


def chain_loop_answer(model, device, scheduler):
    from paradigms_policy.graphs import CapturedChainLoop
    from paradigms_policy.samplers.chain import DenoisingChain

    torch.manual_seed(3)
    condition = model.encode_condition(torch.randn(2, 40, device=device))
    noise = torch.randn(2, 16, 2, device=device)
    chain = DenoisingChain.cached(scheduler, device, torch.float32)
    noise_terms = chain.draw_noise(noise.shape, torch.Generator().manual_seed(0), device, torch.float32)
    return CapturedChainLoop(model.denoise, chain)(noise, noise_terms, condition).clone()


def test_chain_loop_off_cuda_is_the_sequential_answer_bit_for_bit(model, standard_scheduler):
    expected, _ = solve(model.denoise, model, "cpu", "sequential", standard_scheduler)
    assert torch.equal(chain_loop_answer(model, "cpu", standard_scheduler), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_chain_loop_replay_matches_the_eager_loop_on_cuda(model):
    scheduler = make_scheduler(SchedulerConfig())
    model = model.cuda()
    replayed = chain_loop_answer(model, "cuda", scheduler)
    eager, _ = solve(model.denoise, model, "cuda", "paradigms", scheduler, window=1)
    torch.testing.assert_close(replayed, eager, rtol=0, atol=1e-5)
