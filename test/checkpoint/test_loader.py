"""Recognising the format, and building the model only from weights that fit its configuration (loader.py)."""
from dataclasses import replace

import pytest
import torch
from checkpoint_files import assert_load_fails, dp_cfg, reference, write_dp_checkpoint, write_lerobot_dir

from paradigms_policy.checkpoint import CheckpointError, PolicyWeights, build_model, detect_format, save_policy

def test_formats_are_recognised(tmp_path):
    ref = reference()
    native = save_policy(tmp_path / "native", ref.config, ref.model, ref.obs_normalizer, ref.action_normalizer)
    lerobot = write_lerobot_dir(tmp_path / "lerobot", ref, "buffers")
    ckpt = write_dp_checkpoint(tmp_path / "latest.ckpt", ref, dp_cfg(ref.config))
    renamed = ckpt.rename(tmp_path / "latest.pt")  # a torch zip is recognised by its content too
    assert [detect_format(p) for p in (native, lerobot, renamed)] == ["native", "lerobot", "diffusion_policy"]


def test_missing_path(tmp_path):
    assert_load_fails(tmp_path / "does-not-exist", "no such file or directory")


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_load_fails(tmp_path / "empty", "the directory has no config.json")


def test_unknown_file_and_directory_formats(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("not a checkpoint\n")
    assert_load_fails(path, "unknown checkpoint format")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    assert_load_fails(tmp_path / "other", "neither a paradigms_policy nor a LeRobot diffusion config")


def test_build_model_refuses_weights_narrower_than_the_config():
    """build_model checks every shape before it allocates: a 1024-wide config over 16/32-wide weights."""
    ref = reference()
    wide = replace(ref.config, unet=replace(ref.config.unet, down_dims=(1024, 1024)))
    weights = PolicyWeights(wide, ref.model.state_dict(), ref.obs_normalizer, ref.action_normalizer)
    message = r"source: unet.down_dims is \(1024, 1024\) but the weights have \(16, 32\)"
    with pytest.raises(CheckpointError, match=message):
        build_model(weights, "source")


def test_build_model_loads_the_weights():
    ref = reference()
    weights = PolicyWeights(ref.config, ref.model.state_dict(), ref.obs_normalizer, ref.action_normalizer)
    model = build_model(weights, "source")
    for name, tensor in ref.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
