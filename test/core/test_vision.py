"""The image encoder module and the observation layout of PolicyConfig."""
import json

import pytest
import torch

from paradigms_policy.config import ConfigError, ObservationSpec, PolicyConfig, UnetConfig, VisionConfig
from paradigms_policy.vision import ObservationEncoder, RgbEncoder, SpatialSoftmax, centre_crop, resnet18_trunk, \
    trunk_map_size


def image_config(**vision):
    observations = (ObservationSpec("image", (3, 96, 96), "image"), ObservationSpec("agent_pos", (2,)))
    vision = VisionConfig(**vision)
    unet = UnetConfig(input_dim=2, global_cond_dim=(2 + vision.feature_dim) * 2, down_dims=(16, 32),
                      diffusion_step_embed_dim=16)
    return PolicyConfig(obs_dim=2, unet=unet, observations=observations, vision=vision)


def test_low_dim_config_keeps_its_file_layout():
    config = PolicyConfig()
    data = config.to_dict()
    assert "observations" not in data and "vision" not in data
    assert PolicyConfig.from_dict(data) == config
    assert config.condition_dim == 20 and config.image_keys == ()


def test_image_config_round_trips_through_json():
    config = image_config(pooling="average", feature_dim=32, shared_encoder=True)
    again = PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.image_keys == ("image",) and again.low_dim_keys == ("agent_pos",) and again.condition_dim == 34


@pytest.mark.parametrize("change, field", [
    (dict(vision=dict(pooling="max")), "vision.pooling"),
    (dict(vision=dict(width=40)), "vision.width"),
    (dict(vision=dict(crop_shape=[100, 84])), "vision.crop_shape"),
    (dict(vision=dict(backbone="resnet50")), "vision.backbone"),
    (dict(vision=dict(shared_encoder=1)), "vision.shared_encoder"),
    (dict(obs_dim=3), "obs_dim"),
    (dict(vision=None), "vision"),
    (dict(observations=[{"key": "image", "shape": [3, 96], "kind": "image"}, {"key": "agent_pos", "shape": [2]}]),
     "observations[image].shape"),
    (dict(observations=[{"key": "image", "shape": [3, 96, 96], "kind": "depth"}]), "observations[image].kind"),
    (dict(unet=dict(global_cond_dim=4)), "unet.global_cond_dim"),  # (2 + 64) x 2 = 132 expected
])
def test_invalid_image_settings_name_the_field(change, field):
    data = image_config().to_dict()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(ConfigError) as info:
        PolicyConfig.from_dict(data)
    assert info.value.field == field


def test_trunk_has_resnet18s_convolution_parameters_and_map_size():
    trunk = resnet18_trunk(64)
    # torchvision's resnet18 has 11,689,512 parameters, its fc 513,000; GroupNorm has BatchNorm's affine sizes.
    assert sum(p.numel() for p in trunk.parameters()) == 11_689_512 - 513_000
    names = {name for name, _ in trunk.named_parameters()}
    assert {"0.weight", "1.weight", "4.0.conv1.weight", "5.0.downsample.0.weight", "7.1.bn2.bias"} <= names
    assert [trunk_map_size(side) for side in (84, 96, 76)] == [3, 3, 3]
    with torch.no_grad():
        assert resnet18_trunk(16)(torch.zeros(1, 3, 84, 100)).shape == (1, 128, 3, trunk_map_size(100))


def test_spatial_softmax_finds_a_peak():
    pool = SpatialSoftmax(channels=1, height=3, width=5, num_keypoints=1)
    with torch.no_grad():
        pool.nets.weight.fill_(1.0)
        pool.nets.bias.zero_()
    features = torch.zeros(1, 1, 3, 5)
    features[0, 0, 2, 4] = 100.0  # bottom right
    assert torch.allclose(pool(features), torch.tensor([[1.0, 1.0]]), atol=1e-6)
    assert torch.equal(pool.pos_grid[:5, 0], torch.linspace(-1, 1, 5)) and torch.all(pool.pos_grid[:5, 1] == -1)


def test_centre_crop_uses_torchvisions_offsets():
    image = torch.arange(96 * 96.0).reshape(1, 1, 96, 96)
    crop = centre_crop(image, 84, 84)
    assert crop.shape[-2:] == (84, 84) and crop[0, 0, 0, 0] == image[0, 0, 6, 6]
    assert centre_crop(torch.zeros(1, 1, 9, 9), 4, 4).shape[-2:] == (4, 4)


def test_observation_encoder_layout_and_average_pooling():
    config = image_config(pooling="average", feature_dim=5, width=16)
    encoder = ObservationEncoder(config.observations, config.vision).eval()
    assert isinstance(encoder.encoders[0], RgbEncoder) and not any("pool" in n for n, _ in encoder.named_parameters())
    images = {"image": torch.rand(2, 2, 3, 96, 96)}
    low_dim = torch.randn(2, 2, 2)
    with torch.no_grad():
        condition = encoder(images, low_dim).reshape(2, 2, 7)
    assert torch.equal(condition[..., 5:], low_dim)  # [image features, agent_pos] per step, in layout order
    assert (condition[..., :5] >= 0).all()  # the output ReLU
