"""DiffusionPolicy: shapes, bad input, and the temporal warm start."""
import numpy as np
import pytest
import torch

from paradigms_policy.policy import DiffusionPolicy

from conftest import pixel_normalizers, small_config, small_model


def make_policy(**sampler):
    config = small_config()
    return DiffusionPolicy(config, small_model(config=config), *pixel_normalizers(), **sampler)


def test_predict_returns_the_chunk_to_execute_and_the_horizon():
    policy = make_policy()
    single = policy.predict(np.full((2, 20), 200.0), generator=torch.Generator().manual_seed(0))
    assert single.actions.shape == (8, 2) and single.action_horizon.shape == (16, 2)
    np.testing.assert_array_equal(single.actions, single.action_horizon[1:9])  # from the latest observation on
    batch = policy.predict(np.full((3, 2, 20), 200.0))
    assert batch.actions.shape == (3, 8, 2) and batch.stats.rounds == 100


@pytest.mark.parametrize("bad, message", [(np.zeros((2, 19)), r"\(2, 20\)"), (np.zeros((20,)), r"\(2, 20\)"),
                                          (np.full((2, 20), np.nan), "NaN")])
def test_bad_observations_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        make_policy().predict(bad)


def test_temporal_warm_start_changes_rounds_not_the_answer():
    cold = make_policy(sampler="paradigms", sampler_options={"window": 100, "tolerance": 0.01})
    warm = make_policy(sampler="paradigms", sampler_options={"window": 100, "tolerance": 0.01, "warm_start": "temporal"})
    observations = [np.full((2, 20), 200.0), np.full((2, 20), 205.0)]
    rounds = {}
    for name, policy in (("cold", cold), ("warm", warm)):
        outputs = [policy.predict(obs, generator=torch.Generator().manual_seed(step)) for step, obs in enumerate(observations)]
        rounds[name] = [output.stats.rounds for output in outputs]
        if name == "cold":
            expected = outputs[1].normalized_horizon
        else:
            assert (outputs[1].normalized_horizon - expected).abs().max() < 0.01
    assert rounds["warm"][0] == rounds["cold"][0]  # nothing to start from on the first chunk
    warm.reset()
    assert warm._previous_trajectory is None


def test_warm_start_needs_a_parallel_sampler():
    with pytest.raises(ValueError, match="parallel sampler"):
        make_policy(sampler="sequential", sampler_options={"warm_start": "temporal"})
    with pytest.raises(ValueError, match="warm_start must be one of"):
        make_policy(sampler="paradigms", sampler_options={"warm_start": "spatial"})
