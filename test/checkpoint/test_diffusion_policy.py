"""Original Diffusion Policy workspace checkpoints (.ckpt): read exactly, refused where unsupported or damaged."""
import zipfile

import pytest
import torch
from checkpoint_files import (assert_load_fails, assert_same_policy, dp_cfg, dp_cfg_document, dp_payload, reference,
                              save_dp, write_dp_checkpoint)

from paradigms_policy.checkpoint import load_policy, read_weights


@pytest.mark.parametrize("resolve", [True, False], ids=["resolved-cfg", "interpolated-cfg"])
def test_checkpoint_reads_as_the_policy_it_holds(tmp_path, resolve):
    ref = reference()
    path = write_dp_checkpoint(tmp_path / "epoch=0100-test_mean_score=0.900.ckpt", ref, dp_cfg(ref.config, resolve))
    weights = read_weights(path)
    assert weights.metadata["weights"] == "ema_model"
    assert weights.metadata["task_name"] == "pusht_lowdim"
    assert not any("_dummy_variable" in key for key in weights.unet_state_dict)
    assert_same_policy(load_policy(path), ref)


def test_model_weights_and_sparse_cfg(tmp_path):
    """Only 'model' weights; cfg without the model section: the U-Net options come from the weight shapes."""
    ref = reference()
    cfg = dp_cfg(ref.config)
    del cfg.policy["model"]
    path = write_dp_checkpoint(tmp_path / "latest.ckpt", ref, cfg, with_ema=False)
    assert read_weights(path).metadata["weights"] == "model"
    assert_same_policy(load_policy(path), ref)


def test_plain_dict_cfg_reads_like_the_dictconfig(tmp_path):
    ref = reference()
    path = write_dp_checkpoint(tmp_path / "plain.ckpt", ref, dp_cfg_document(ref.config))
    assert_same_policy(load_policy(path), ref)


def test_warning_where_the_original_executes_other_steps(tmp_path):
    ref = reference()
    cfg = dp_cfg(ref.config, overrides={"policy": {"oa_step_convention": False}})
    path = write_dp_checkpoint(tmp_path / "oa.ckpt", ref, cfg)
    assert any("oa_step_convention" in warning for warning in read_weights(path).metadata["warnings"])


def test_missing_required_key(tmp_path):
    ref = reference()
    cfg = dp_cfg(ref.config)
    del cfg["horizon"]
    del cfg.policy["horizon"]
    path = write_dp_checkpoint(tmp_path / "nohorizon.ckpt", ref, cfg)
    assert_load_fails(path, "cfg.policy.horizon / cfg.horizon is missing")


def test_non_global_condition_is_refused(tmp_path):
    ref = reference()
    cfg = dp_cfg(ref.config, overrides={"obs_as_global_cond": False, "policy": {"obs_as_global_cond": False}})
    path = write_dp_checkpoint(tmp_path / "inpaint.ckpt", ref, cfg)
    assert_load_fails(path, "cfg.policy.obs_as_global_cond is False")


def test_image_policy_is_refused(tmp_path):
    ref = reference()
    target = "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy"
    cfg = dp_cfg(ref.config, overrides={"policy": {"_target_": target}})
    path = write_dp_checkpoint(tmp_path / "image.ckpt", ref, cfg)
    assert_load_fails(path, "DiffusionUnetHybridImagePolicy", "is not supported")


def test_cfg_that_does_not_fit_the_weights(tmp_path):
    ref = reference()
    cfg = dp_cfg(ref.config, overrides={"policy": {"model": {"down_dims": [32, 64]}}})
    path = write_dp_checkpoint(tmp_path / "mismatch.ckpt", ref, cfg)
    assert_load_fails(path, "cfg.policy.model.down_dims is (32, 64) but the weights have (16, 32)")


def test_truncated_checkpoint(tmp_path):
    ref = reference()
    data = write_dp_checkpoint(tmp_path / "full.ckpt", ref, dp_cfg(ref.config)).read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        truncated = tmp_path / f"cut{cut}.ckpt"
        truncated.write_bytes(data[:cut])
        assert_load_fails(truncated, "truncated or corrupt")


def test_garbage_pickle_inside_a_zip(tmp_path):
    path = tmp_path / "garbage.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02garbage")
        archive.writestr("archive/version", b"3\n")
    assert_load_fails(path, "cannot unpickle the checkpoint")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_and_legacy_files_are_refused(tmp_path):
    scripted = tmp_path / "scripted.ckpt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    assert_load_fails(scripted, "TorchScript")
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"a": 1}, legacy, _use_new_zipfile_serialization=False)
    assert_load_fails(legacy, "legacy")


def test_state_dict_entry_that_is_not_a_tensor(tmp_path):
    ref = reference()
    payload = dp_payload(ref, dp_cfg(ref.config))
    payload["state_dicts"]["ema_model"]["model.final_conv.1.bias"] = [0.0, 0.0]
    path = save_dp(tmp_path / "list.ckpt", payload)
    assert_load_fails(path, "state_dicts.ema_model.model.final_conv.1.bias is a list, not a tensor")
