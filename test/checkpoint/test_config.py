"""PolicyConfig and its parts check every value's type and range, naming the field (config.py)."""
import math

import numpy as np
import pytest

from paradigms_policy.config import ConfigError, PolicyConfig, SchedulerConfig

UNET = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, kernel_size=5, n_groups=8)


def make(unet=None, scheduler=None, **policy):
    return PolicyConfig.for_shapes(policy.pop("obs_dim", 20), 2, scheduler=SchedulerConfig(**(scheduler or {})),
                                   **policy, **{**UNET, **(unet or {})})


def test_dict_round_trip():
    config = make(scheduler={"name": "ddim", "num_inference_steps": 10})
    assert PolicyConfig.from_dict(config.to_dict()) == config


def test_integer_like_values_become_ints():
    config = make(horizon=np.int64(16), unet={"down_dims": [np.int32(16), 32]})
    assert type(config.horizon) is int and config.unet.down_dims == (16, 32)


@pytest.mark.parametrize("unet, scheduler, policy, field, problem", [
    ({"n_groups": 0}, {}, {}, "unet.n_groups", "must be in 1..65536 (got 0)"),
    ({"n_groups": 3}, {}, {}, "unet.down_dims[0]", "= 16 is not divisible by unet.n_groups = 3"),
    ({"n_groups": True}, {}, {}, "unet.n_groups", "must be an integer (got True)"),
    ({"kernel_size": -3}, {}, {}, "unet.kernel_size", "must be in 1..63 (got -3)"),
    ({"kernel_size": 4}, {}, {}, "unet.kernel_size", "must be odd (got 4)"),
    ({"kernel_size": 5.0}, {}, {}, "unet.kernel_size", "must be an integer (got 5.0)"),
    ({"down_dims": (16, 2**20)}, {}, {}, "unet.down_dims[1]", "must be in 1..65536 (got 1048576)"),
    ({"down_dims": (16,) * 9}, {}, {}, "unet.down_dims", "must be a list of 1..8 channel counts"),
    ({"down_dims": (4, 8), "n_groups": 4}, {}, {}, "unet.down_dims[0]", "is not divisible by 8"),
    ({"diffusion_step_embed_dim": 15}, {}, {}, "unet.diffusion_step_embed_dim", "must be even (got 15)"),
    ({"cond_predict_scale": 1}, {}, {}, "unet.cond_predict_scale", "must be true or false (got 1)"),
    ({}, {"num_train_timesteps": 10**9}, {}, "scheduler.num_train_timesteps", "must be in 1..10000"),
    ({}, {"num_inference_steps": 101}, {}, "scheduler.num_inference_steps", "must be in 1..100 (got 101)"),
    ({}, {"beta_start": math.nan}, {}, "scheduler.beta_start", "must be a finite number in (0.0, 1.0) (got nan)"),
    ({}, {"beta_start": 0.1, "beta_end": 0.01}, {}, "scheduler.beta_end", "is below scheduler.beta_start"),
    ({}, {"beta_schedule": "cosine"}, {}, "scheduler.beta_schedule", "must be one of linear, scaled_linear"),
    ({}, {"prediction_type": "noise"}, {}, "scheduler.prediction_type", "must be one of epsilon, sample"),
    ({}, {"steps_offset": -1}, {}, "scheduler.steps_offset", "must be in 0..99 (got -1)"),
    ({}, {"clip_sample": "yes"}, {}, "scheduler.clip_sample", "must be true or false (got 'yes')"),
    ({}, {}, {"horizon": 0}, "horizon", "must be in 1..1024 (got 0)"),
    ({}, {}, {"horizon": "16"}, "horizon", "must be an integer (got '16')"),
    ({}, {}, {"horizon": 15}, "horizon", "15 must be divisible by 2**1 for 2 U-Net levels"),
    ({}, {}, {"n_action_steps": 16}, "n_action_steps", "exceeds the horizon 16"),
    ({}, {}, {"n_action_steps": True}, "n_action_steps", "must be an integer (got True)"),
])
def test_invalid_values_name_the_field(unet, scheduler, policy, field, problem):
    with pytest.raises(ConfigError) as info:
        make(unet, scheduler, **policy)
    assert info.value.field == field
    assert problem in info.value.problem, info.value.problem


def test_from_dict_refuses_unknown_settings_and_non_objects():
    document = make().to_dict()
    document["unet"]["dropout"] = 0.1
    with pytest.raises(ConfigError, match=r"unet has unknown setting\(s\): \['dropout'\]"):
        PolicyConfig.from_dict(document)
    with pytest.raises(ConfigError, match="scheduler must be an object"):
        PolicyConfig.from_dict({**make().to_dict(), "scheduler": [1]})


def test_messages_about_huge_values_stay_short():
    with pytest.raises(ConfigError) as info:
        make(scheduler={"beta_schedule": "x" * 10**6})
    assert len(str(info.value)) < 200
    with pytest.raises(ConfigError) as info:
        make(horizon=10**5000)
    assert "an integer of 16610 bits" in str(info.value)
