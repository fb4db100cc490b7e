"""LeRobot Diffusion Policy directories: the U-Net under LeRobot's names, its normalisation statistics."""
import pytest
import torch
from checkpoint_files import (ACTION_DIM, ENV_DIM, OBS_DIM, STATE_DIM, assert_load_fails, denoiser_output,
                              lerobot_config, lerobot_stats, reference, to_lerobot_key, write_lerobot_dir)

from paradigms_policy.checkpoint import load_policy, read_weights


def test_reference_files_use_lerobots_names():
    """The writer's names, as LeRobot's DiffusionConditionalUnet1d spells them."""
    names = {to_lerobot_key(k) for k in reference().model.state_dict()}
    for expected in ("diffusion.unet.down_modules.0.0.conv1.block.0.weight",
                     "diffusion.unet.down_modules.0.0.conv2.block.1.bias",
                     "diffusion.unet.down_modules.0.0.cond_encoder.1.weight",
                     "diffusion.unet.down_modules.0.0.residual_conv.weight",
                     "diffusion.unet.down_modules.0.2.weight", "diffusion.unet.up_modules.0.2.bias",
                     "diffusion.unet.mid_modules.1.conv2.block.0.weight",
                     "diffusion.unet.final_conv.0.block.0.weight", "diffusion.unet.final_conv.1.weight",
                     "diffusion.unet.diffusion_step_encoder.1.weight"):
        assert expected in names


def lerobot_minmax(x, low, high, buffer_formula: bool):
    """LeRobot's min/max normalisation, computed as LeRobot writes it."""
    if buffer_formula:
        return (x - low) / (high - low + 1e-8) * 2 - 1
    return 2 * (x - low) / (high - low) - 1


@pytest.mark.parametrize("variant", ["buffers", "processor", "processor+json"])
def test_directory_reads_as_the_policy_it_holds(tmp_path, variant):
    ref = reference()
    policy = load_policy(write_lerobot_dir(tmp_path / "lerobot", ref, variant))
    assert policy.config == ref.config
    assert torch.equal(denoiser_output(policy.model), denoiser_output(ref.model))  # every renamed key in its place

    buffer_formula = variant == "buffers"
    stats = lerobot_stats(ref)
    generator = torch.Generator().manual_seed(2)
    obs = ref.obs_min + torch.rand(5, OBS_DIM, generator=generator) * (ref.obs_max - ref.obs_min)
    state, env = stats["observation.state"], stats["observation.environment_state"]
    expected_obs = torch.cat([
        lerobot_minmax(obs[:, :STATE_DIM].double(), state["min"].double(), state["max"].double(), buffer_formula),
        lerobot_minmax(obs[:, STATE_DIM:].double(), env["min"].double(), env["max"].double(), buffer_formula),
    ], dim=1)
    torch.testing.assert_close(policy.obs_normalizer.normalize(obs).double(), expected_obs, rtol=1e-5, atol=1e-5)
    normalized_actions = torch.rand(5, ACTION_DIM, generator=generator) * 2 - 1
    low, high = stats["action"]["min"].double(), stats["action"]["max"].double()
    expected_actions = (normalized_actions.double() + 1) / 2 * (high - low) + low  # LeRobot's unnormalise
    torch.testing.assert_close(policy.action_normalizer.unnormalize(normalized_actions).double(), expected_actions,
                               rtol=1e-5, atol=1e-4)


def test_default_mapping_leaves_environment_state_unnormalised(tmp_path):
    """LeRobot normalises only the feature types its mapping names; ENV is absent from its default mapping."""
    ref = reference()
    mapping = {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
    document = lerobot_config(ref, normalization_mapping=mapping)
    weights = read_weights(write_lerobot_dir(tmp_path / "lerobot", ref, "buffers", config=document))
    assert torch.equal(weights.obs_normalizer.scale[STATE_DIM:], torch.ones(ENV_DIM))
    assert torch.equal(weights.obs_normalizer.offset[STATE_DIM:], torch.zeros(ENV_DIM))
    assert weights.metadata["normalization"]["observation.environment_state"] == "IDENTITY"


@pytest.mark.parametrize("variant", ["buffers", "processor"])
def test_missing_statistics(tmp_path, variant):
    directory = write_lerobot_dir(tmp_path / "lerobot", reference(), variant,
                                  drop_stat="observation.environment_state.max")
    assert_load_fails(directory, "missing normalisation statistics observation.environment_state.max")


def test_image_features_are_refused(tmp_path):
    ref = reference()
    document = lerobot_config(ref, extra_features={"observation.image": {"type": "VISUAL", "shape": [3, 96, 96]}})
    assert_load_fails(write_lerobot_dir(tmp_path / "lerobot", ref, "buffers", config=document),
                      "image feature 'observation.image' is not supported")


def test_ddim_and_null_inference_steps(tmp_path):
    ref = reference()
    document = lerobot_config(ref)
    document.update(noise_scheduler_type="DDIM", num_inference_steps=None)
    scheduler = read_weights(write_lerobot_dir(tmp_path / "lerobot", ref, "buffers", config=document)).config.scheduler
    assert scheduler.name == "ddim"
    assert scheduler.num_inference_steps == scheduler.num_train_timesteps == 100


def test_truncated_weights(tmp_path):
    directory = write_lerobot_dir(tmp_path / "lerobot", reference(), "buffers")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_load_fails(directory, str(weights), "truncated")


def test_config_that_does_not_fit_the_weights(tmp_path):
    ref = reference()
    document = lerobot_config(ref)
    document["down_dims"] = [32, 64]
    assert_load_fails(write_lerobot_dir(tmp_path / "lerobot", ref, "buffers", config=document),
                      "down_dims is (32, 64) but the weights have (16, 32)")
