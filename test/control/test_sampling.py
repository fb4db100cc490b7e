"""control/sampling.py: the node's window and tolerance parameters resolved for the running sampler."""
import numpy as np
import pytest
import torch

from paradigms_policy.config import SchedulerConfig
from paradigms_policy.control.sampling import SamplerChoice, resolve_sampler, sampler_defaults
from paradigms_policy.policy import DiffusionPolicy
from paradigms_policy.samplers import PARALLEL_SAMPLERS, paradigms, parataa

from conftest import pixel_normalizers, small_config, small_model

STEPS = 20
OWN_DEFAULTS = {"paradigms": (paradigms.DEFAULT_WINDOW, paradigms.DEFAULT_TOLERANCE),
                "parataa": (parataa.DEFAULT_WINDOW, parataa.DEFAULT_TOLERANCE)}
WINDOW = np.stack([np.full(20, 250.0), np.full(20, 260.0)])


@pytest.fixture(scope="module")
def policy():
    config = small_config(SchedulerConfig(name="ddim", num_inference_steps=STEPS))
    return DiffusionPolicy(config, small_model(config=config), *pixel_normalizers())


def predict(policy, choice, **options):
    policy.set_sampler(choice.name, **choice.options())
    return policy.predict(WINDOW, generator=torch.Generator().manual_seed(3), **options)


def test_every_parallel_sampler_has_its_defaults_listed():
    assert set(OWN_DEFAULTS) == set(PARALLEL_SAMPLERS)
    assert OWN_DEFAULTS == {"paradigms": (16, 0.1), "parataa": (None, 2e-4)}


@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_window_0_and_tolerance_minus_1_are_the_samplers_own_defaults(name):
    window, tolerance = OWN_DEFAULTS[name]
    assert sampler_defaults(name) == (window, tolerance)
    choice = resolve_sampler(name, window=0, tolerance=-1.0)
    assert choice == SamplerChoice(name, window, tolerance, fixed_shape=False)
    assert choice.options() == {"window": window, "tolerance": tolerance, "fixed_shape": False}
    assert resolve_sampler(name) == choice  # the parameters' defaults are 0 and -1


@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_set_values_reach_every_parallel_sampler(name):
    choice = resolve_sampler(name, window=4, tolerance=0.0, fixed_shape=True)
    assert choice.options() == {"window": 4, "tolerance": 0.0, "fixed_shape": True}
    assert choice.describe() == f"{name} (window 4, tolerance 0)"


def test_the_sequential_sampler_takes_no_options_and_unknown_names_fail():
    choice = resolve_sampler("sequential", window=4, tolerance=0.5, fixed_shape=True)
    assert choice.options() == {} and not choice.parallel
    assert (choice.describe(), choice.window_text()) == ("sequential", "n/a")
    assert resolve_sampler("parataa").describe() == "parataa (window whole chain, tolerance 0.0002)"
    with pytest.raises(ValueError, match="unknown sampler 'fast'"):
        resolve_sampler("fast")


@pytest.mark.parametrize("name, first_round_evals", [("paradigms", 16), ("parataa", STEPS)])
def test_the_default_window_is_what_the_sampler_evaluates_per_round(policy, name, first_round_evals):
    output = predict(policy, resolve_sampler(name), max_rounds=1)
    assert output.stats.rounds == 1 and output.stats.model_evals == first_round_evals


@pytest.mark.parametrize("name", PARALLEL_SAMPLERS)
def test_tolerance_0_gives_the_sequential_answer_and_a_loose_one_stops_early(policy, name):
    expected = predict(policy, resolve_sampler("sequential"))
    exact = predict(policy, resolve_sampler(name, tolerance=0.0))
    np.testing.assert_allclose(exact.actions, expected.actions, rtol=0, atol=0.01)  # pixels
    default = predict(policy, resolve_sampler(name))
    loose = predict(policy, resolve_sampler(name, tolerance=100.0))
    assert loose.stats.rounds < default.stats.rounds
    assert np.abs(loose.actions - expected.actions).max() > 1.0
