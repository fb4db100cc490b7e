"""Image-conditioned checkpoints (Diffusion Policy's hybrid .ckpt, LeRobot directories) against independent references.

The references (image_reference.py) follow the original projects' code; the loaded policy must give
the same actions for the same noise, up to float32 rounding (the encoders differ in the order of
their float operations: robomimic's sum(pos * attention) against a matmul, the normalisers' affine
forms), stated as RTOL below.
"""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from checkpoint_files import assert_load_fails, save_dp, to_lerobot_key
from image_reference import DpHybridReference, LeRobotReference

from paradigms_policy.checkpoint import load_policy, read_weights, save_policy

RTOL = 1e-5  # max |difference| / max |action|: measured 3e-6 (DP), 1e-6 to 2e-6 (LeRobot), float32 ulps
PUSHT_META = {"obs": OrderedDict([("image", {"shape": [3, 96, 96], "type": "rgb"}),
                                  ("agent_pos", {"shape": [2], "type": "low_dim"})]),
              "action": {"shape": [2]}}


def dp_ckpt(path, ref: DpHybridReference, overrides=None, state=None):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(ref.cfg_document(overrides))
    omegaconf.OmegaConf.resolve(cfg)
    state = state if state is not None else ref.state_dict()
    return save_dp(path, {"cfg": cfg, "state_dicts": {"model": state, "ema_model": state}, "pickles": {}})


def observations(meta_obs, batch=2, steps=2, seed=5):
    generator = torch.Generator().manual_seed(seed)
    obs = {}
    for key, meta in meta_obs.items():
        shape = (batch, steps, *meta["shape"])
        obs[key] = torch.rand(shape, generator=generator) * (1 if len(meta["shape"]) == 3 else 500)
    return obs


def actions_of(policy, obs, noise):
    normalized, _ = policy.sample_normalized(obs, noise=noise)
    return policy.executed_actions(policy.action_normalizer.unnormalize(normalized))


def assert_matches_reference(policy, ref, obs, reference_actions):
    """The condition within 1e-5 and the actions for the same noise within float32 rounding of the reference's."""
    low_dim = torch.cat([obs[k] for k in policy.config.low_dim_keys], -1)
    condition = policy.obs_encoder(obs, policy.obs_normalizer.normalize(low_dim))
    assert (condition - ref.global_cond(obs)).abs().max() < 1e-5
    noise = noise_for(ref)
    expected = reference_actions(obs, noise)
    difference = (actions_of(policy, obs, noise) - expected).abs().max()
    assert difference <= RTOL * expected.abs().max(), difference


def noise_for(ref, batch=2, seed=7):
    return torch.randn(batch, ref.horizon, ref.action_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("meta", [
    PUSHT_META,
    {"obs": OrderedDict([("cam_a", {"shape": [3, 96, 96], "type": "rgb"}), ("agent_pos", {"shape": [3]}),
                         ("cam_b", {"shape": [3, 88, 100], "type": "rgb"})]), "action": {"shape": [2]}},
], ids=["pusht", "two-cameras"])
def test_dp_hybrid_checkpoint_gives_the_reference_actions(tmp_path, meta):
    ref = DpHybridReference(meta)
    path = dp_ckpt(tmp_path / "image.ckpt", ref)
    policy = load_policy(path)
    config = policy.config
    assert [spec.key for spec in config.observations] == list(meta["obs"])
    assert config.vision.crop_shape == (84, 84) and config.vision.width == 16 and config.vision.num_keypoints == 8
    assert_matches_reference(policy, ref, observations(meta["obs"]), ref.predict_action)


def lerobot_dir(tmp_path, ref: LeRobotReference, **config):
    return ref.write(tmp_path / "lerobot", to_lerobot_key, ref.config_document(**config) if config else None)


@pytest.mark.parametrize("options", [
    dict(), dict(cameras=("observation.images.top", "observation.images.wrist"), separate=True, with_env=True),
    dict(cameras=("observation.images.top", "observation.images.wrist"), separate=False, crop=None,
         image_shape=(3, 64, 72)),
], ids=["pusht", "two-cameras-separate-env", "shared-no-crop"])
def test_lerobot_image_directory_gives_the_reference_actions(tmp_path, options):
    ref = LeRobotReference(**options)
    policy = load_policy(lerobot_dir(tmp_path, ref))
    keys = [spec.key for spec in policy.config.observations]
    assert keys == ["observation.state", *ref.cameras] + (["observation.environment_state"] if ref.with_env else [])
    assert policy.config.vision.shared_encoder is not ref.separate and policy.config.vision.output_relu
    meta = {"observation.state": {"shape": [ref.state_dim]},
            **{k: {"shape": list(ref.image_shape)} for k in ref.cameras}}
    if ref.with_env:
        meta["observation.environment_state"] = {"shape": [ref.env_dim]}
    assert_matches_reference(policy, ref, observations(meta), ref.actions)


def test_native_round_trip_of_an_image_policy(tmp_path):
    ref = DpHybridReference(PUSHT_META)
    policy = load_policy(dp_ckpt(tmp_path / "image.ckpt", ref))
    weights = read_weights(tmp_path / "image.ckpt")
    save_policy(tmp_path / "native", policy.config, policy.model, policy.obs_normalizer, policy.action_normalizer,
                weights.metadata, encoder=policy.obs_encoder)
    again = load_policy(tmp_path / "native")
    assert again.config == policy.config
    obs, noise = observations(PUSHT_META["obs"]), noise_for(ref)
    assert torch.equal(actions_of(again, obs, noise), actions_of(policy, obs, noise))


def test_dp_refusals(tmp_path):
    ref = DpHybridReference(PUSHT_META)
    transformer = ("diffusion_policy.policy.diffusion_transformer_hybrid_image_policy."
                   "DiffusionTransformerHybridImagePolicy")
    assert_load_fails(dp_ckpt(tmp_path / "a.ckpt", ref, {"policy": {"_target_": transformer}}),
                      "DiffusionTransformerHybridImagePolicy", "is not supported")
    assert_load_fails(dp_ckpt(tmp_path / "b.ckpt", ref, {"policy": {"eval_fixed_crop": False}}), "eval_fixed_crop")
    assert_load_fails(dp_ckpt(tmp_path / "c.ckpt", ref, {"policy": {"obs_encoder_group_norm": False}}),
                      "obs_encoder_group_norm")
    document_without_meta = {"shape_meta": None, "policy": {"shape_meta": None}}
    assert_load_fails(dp_ckpt(tmp_path / "d.ckpt", ref, document_without_meta), "shape_meta")
    state = ref.state_dict()
    state["obs_encoder.obs_nets.image.nets.1.temperature"] = torch.tensor([2.0])
    assert_load_fails(dp_ckpt(tmp_path / "e.ckpt", ref, state=state), "temperature")
    state = ref.state_dict()
    del state["obs_encoder.obs_nets.image.nets.1.nets.weight"]
    assert_load_fails(dp_ckpt(tmp_path / "f.ckpt", ref, state=state), "spatial softmax")
    state = ref.state_dict()
    state["obs_encoder.obs_nets.image.nets.0.nets.4.0.bn1.running_mean"] = torch.zeros(16)
    assert_load_fails(dp_ckpt(tmp_path / "g.ckpt", ref, state=state), "BatchNorm")
    state = ref.state_dict()
    state["obs_encoder.obs_nets.image.nets.3.weight"] = torch.zeros(12, 15)
    assert_load_fails(dp_ckpt(tmp_path / "h.ckpt", ref, state=state), "shape mismatch", "out.weight")


def test_lerobot_refusals(tmp_path):
    ref = LeRobotReference()
    cases = [
        (dict(pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1"), ("diffusion.rgb_encoder.backbone",),
         "pretrained_backbone_weights"),
        (dict(use_group_norm=False), (), "use_group_norm"),
        (dict(vision_backbone="resnet34"), (), "vision_backbone"),
        (dict(spatial_softmax_num_keypoints=16), (), "spatial_softmax_num_keypoints"),
        (dict(resize_shape=[120, 120]), (), "resize_shape"),
        (dict(), ("diffusion.rgb_encoder.",), "image feature 'observation.image' is not supported"),
        (dict(use_separate_rgb_encoder_per_camera=True), (), "per-camera"),
    ]
    for index, (config, drop, fragment) in enumerate(cases):
        directory = ref.write(tmp_path / f"case{index}", to_lerobot_key, ref.config_document(**config), drop)
        assert_load_fails(directory, fragment)


def test_lerobot_defaults_for_omitted_image_settings(tmp_path):
    """A config.json without the vision settings takes DiffusionConfig's defaults (crop 84x84, 32 keypoints, shared)."""
    ref = LeRobotReference(num_kp=32)
    document = ref.config_document()
    for key in ("crop_shape", "spatial_softmax_num_keypoints", "use_separate_rgb_encoder_per_camera",
                "pretrained_backbone_weights", "use_group_norm", "vision_backbone"):
        del document[key]
    vision = read_weights(ref.write(tmp_path / "a", to_lerobot_key, document)).config.vision
    assert (vision.crop_shape, vision.num_keypoints, vision.shared_encoder) == ((84, 84), 32, True)
    newer = {**document, "crop_ratio": 1.0, "resize_shape": None}  # a later release: crop_shape defaults to null
    assert read_weights(ref.write(tmp_path / "b", to_lerobot_key, newer)).config.vision.crop_shape is None


def test_full_size_pusht_image_checkpoint_loads_and_runs(tmp_path):
    """The original Push-T image shapes (ResNet-18 width 64, 32 keypoints, U-Net 512/1024/2048, step 128)."""
    ref = DpHybridReference(PUSHT_META, width=64, num_kp=32, feature_dim=64, down_dims=(512, 1024, 2048),
                            step_dim=128, randomise_unet=False)
    path = dp_ckpt(tmp_path / "full.ckpt", ref)
    del ref.model  # the reference U-Net is only needed in the file
    policy = load_policy(path)
    assert policy.config.unet.global_cond_dim == 132 and policy.config.unet.down_dims == (512, 1024, 2048)
    assert sum(p.numel() for p in policy.obs_encoder.parameters()) == sum(
        p.numel() for p in ref.obs_encoder.parameters())
    obs = observations(PUSHT_META["obs"], batch=1)
    condition = policy.condition(obs)
    global_cond = policy.obs_encoder(obs, policy.obs_normalizer.normalize(obs["agent_pos"]))
    assert (global_cond - ref.global_cond(obs)).abs().max() < 1e-5
    with torch.no_grad():
        eps = policy.denoiser(torch.randn(1, 16, 2), torch.tensor(50), condition)
    assert eps.shape == (1, 16, 2) and torch.isfinite(eps).all()


def test_predict_takes_an_observation_dict_with_or_without_a_batch_axis(tmp_path):
    ref = DpHybridReference(PUSHT_META)
    policy = load_policy(dp_ckpt(tmp_path / "image.ckpt", ref))
    obs, noise = observations(PUSHT_META["obs"], batch=1), noise_for(ref, batch=1)
    batched = policy.predict(obs, noise=noise)
    single = policy.predict({key: value[0] for key, value in obs.items()}, noise=noise)
    assert batched.actions.shape == (1, 8, 2) and single.actions.shape == (8, 2)
    np.testing.assert_array_equal(single.actions, batched.actions[0])
    np.testing.assert_array_equal(batched.actions[0], actions_of(policy, obs, noise)[0].numpy())
    with pytest.raises(ValueError, match="a dict with the keys"):
        policy.predict(np.zeros((2, 2)))
    wrong = {key: value[0, :1] for key, value in obs.items()}
    with pytest.raises(ValueError, match="must be"):
        policy.predict(wrong)
