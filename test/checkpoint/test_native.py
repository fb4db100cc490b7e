"""The native format: save_policy / load_policy round trip, and damaged or inconsistent directories."""
import json

import pytest
import torch
from checkpoint_files import assert_load_fails, assert_same_policy, reference
from safetensors.torch import load_file, save_file

from paradigms_policy.checkpoint import load_policy, read_weights, save_policy


@pytest.fixture
def native_dir(tmp_path):
    ref = reference()
    return save_policy(tmp_path / "policy", ref.config, ref.model, ref.obs_normalizer, ref.action_normalizer,
                       metadata={"note": "test"})


def test_round_trip_keeps_config_weights_normalizers_and_metadata(native_dir):
    assert_same_policy(load_policy(native_dir), reference())
    assert read_weights(native_dir).metadata == {"note": "test"}


def test_save_replaces_an_existing_checkpoint(native_dir):
    ref = reference()
    other = ref.config.with_scheduler(name="ddim", num_inference_steps=5)
    save_policy(native_dir, other, ref.model, ref.obs_normalizer, ref.action_normalizer)
    assert read_weights(native_dir).config == other
    assert sorted(p.name for p in native_dir.parent.iterdir()) == ["policy"]


def test_truncated_weights(native_dir):
    weights = native_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_load_fails(native_dir, str(weights), "truncated")


def test_unsupported_format_version(native_dir):
    document = json.loads((native_dir / "config.json").read_text())
    document["format_version"] = 2
    (native_dir / "config.json").write_text(json.dumps(document))
    assert_load_fails(native_dir, "format_version 2")


def test_config_that_does_not_fit_the_weights(native_dir):
    document = json.loads((native_dir / "config.json").read_text())
    document["policy"]["unet"]["down_dims"] = [16, 64]
    (native_dir / "config.json").write_text(json.dumps(document))
    assert_load_fails(native_dir, "policy.unet.down_dims is (16, 64) but the weights have (16, 32)")


def test_missing_and_unexpected_parameters(native_dir, tmp_path):
    path = native_dir / "model.safetensors"
    tensors = load_file(str(path))
    tensors["extra.weight"] = tensors.pop("final_conv.1.bias")
    save_file(tensors, str(path))
    assert_load_fails(native_dir, "1 missing (first: final_conv.1.bias)", "1 unexpected (first: 'extra.weight')")


def test_weights_are_checked_before_the_model_is_built(native_dir):
    """A weight of the right name and shape but an integer type is refused, not cast."""
    path = native_dir / "model.safetensors"
    tensors = load_file(str(path))
    tensors["final_conv.1.bias"] = torch.zeros(2, dtype=torch.int64)
    save_file(tensors, str(path))
    assert_load_fails(native_dir, "final_conv.1.bias holds torch.int64 values")

