"""DiffusionPolicy: shapes, bad input, and the temporal warm start."""
import numpy as np
import pytest
import torch

from paradigms_policy.policy import DiffusionPolicy


@pytest.fixture
def make_policy(policy_config, model, normalizers):
    """DiffusionPolicy(the small model, pixel normalisers, **sampler settings); the policies share the model."""
    def make(**sampler):
        return DiffusionPolicy(policy_config, model, *normalizers, **sampler)
    return make


def test_predict_returns_the_chunk_to_execute_and_the_horizon(make_policy):
    policy = make_policy()
    single = policy.predict(np.full((2, 20), 200.0), generator=torch.Generator().manual_seed(0))
    assert single.actions.shape == (8, 2) and single.action_horizon.shape == (16, 2)
    np.testing.assert_array_equal(single.actions, single.action_horizon[1:9])  # from the latest observation on
    batch = policy.predict(np.full((3, 2, 20), 200.0))
    assert batch.actions.shape == (3, 8, 2) and batch.stats.rounds == 100


@pytest.mark.parametrize("bad, message", [(np.zeros((2, 19)), r"\(2, 20\)"), (np.zeros((20,)), r"\(2, 20\)"),
                                          (np.full((2, 20), np.nan), "NaN")])
def test_bad_observations_are_refused(make_policy, bad, message):
    with pytest.raises(ValueError, match=message):
        make_policy().predict(bad)


def test_temporal_warm_start_keeps_the_answer_and_reset_forgets_the_previous_chunk(make_policy):
    options = {"window": 100, "tolerance": 0.01}
    cold = make_policy(sampler="paradigms", sampler_options=options)
    warm = make_policy(sampler="paradigms", sampler_options={**options, "warm_start": "temporal"})
    observations = [np.full((2, 20), 200.0), np.full((2, 20), 205.0)]

    def chunks(policy):
        return [policy.predict(obs, generator=torch.Generator().manual_seed(step)) for step, obs in enumerate(observations)]

    cold_chunks, warm_chunks = chunks(cold), chunks(warm)
    # Nothing to start from on the first chunk: the cold solve exactly.
    assert warm_chunks[0].stats == cold_chunks[0].stats
    assert torch.equal(warm_chunks[0].normalized_horizon, cold_chunks[0].normalized_horizon)
    # The second starts from the first chunk's trajectory: other iterates, the same answer within tolerance.
    assert warm_chunks[1].stats.residual_history != cold_chunks[1].stats.residual_history
    assert (warm_chunks[1].normalized_horizon - cold_chunks[1].normalized_horizon).abs().max() < 0.01
    warm.reset()
    again = warm.predict(observations[1], generator=torch.Generator().manual_seed(1))
    assert again.stats == cold_chunks[1].stats and torch.equal(again.normalized_horizon, cold_chunks[1].normalized_horizon)


def test_warm_start_needs_a_parallel_sampler(make_policy):
    with pytest.raises(ValueError, match="parallel sampler"):
        make_policy(sampler="sequential", sampler_options={"warm_start": "temporal"})
    with pytest.raises(ValueError, match="warm_start must be one of"):
        make_policy(sampler="paradigms", sampler_options={"warm_start": "spatial"})


def test_commitment_holds_the_actions_and_uses_the_overlap_by_mode(make_policy):
    from paradigms_policy.samplers.inpainting import soft_weights

    policy = make_policy()
    held, overlap = np.full((3, 2), 100.0), np.full((5, 2), 300.0)
    hard = policy.commitment(held, 0, overlap)
    assert hard["committed_positions"] == [0, 1, 2] and set(hard) == {"committed_actions", "committed_positions"}
    torch.testing.assert_close(policy.action_normalizer.unnormalize(hard["committed_actions"]),
                               torch.full((1, 3, 2), 100.0))
    soft = policy.commitment(held, 1, overlap, "soft")
    assert soft["committed_positions"] == list(range(1, 9)) and soft["committed_weights"] == soft_weights(3, 8)
    guided = policy.commitment(held, 1, overlap, "guided")
    assert guided["committed_positions"] == [1, 2, 3]
    np.testing.assert_allclose(guided["guidance"].weights[0, :, 0], [0.0] + soft_weights(3, 8) + [0.0] * 7, atol=1e-7)
    torch.testing.assert_close(policy.action_normalizer.unnormalize(guided["guidance"].targets[:, 4:9]),
                               torch.full((1, 5, 2), 300.0))


@pytest.mark.parametrize("first, mode, message", [(9, "soft", "8 committed actions from position 9 do not fit"),
                                                  (14, "hard", "3 committed actions from position 14"),
                                                  (0, "blend", "mode must be one of hard, soft, guided")])
def test_bad_commitments_are_refused(make_policy, first, mode, message):
    with pytest.raises(ValueError, match=message):
        make_policy().commitment(np.zeros((3, 2)), first, np.zeros((5, 2)), mode)
