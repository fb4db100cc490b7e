"""Checkpoint formats: native round trip, original Diffusion Policy .ckpt, LeRobot directories, refusals, errors."""

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from paradigms_policy.checkpoint import CheckpointError, load_policy, read_weights, save_policy
from paradigms_policy.config import PolicyConfig, SchedulerConfig
from paradigms_policy.model import ConditionalUnet1D
from paradigms_policy.normalizer import AffineNormalizer

OBS_DIM, ACTION_DIM, HORIZON, N_OBS_STEPS, N_ACTION_STEPS = 20, 2, 16, 2, 8
STATE_DIM, ENV_DIM = 2, 18  # LeRobot splits the observation into [state, environment_state]
SMALL_UNET = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, kernel_size=5, n_groups=8, cond_predict_scale=True)
SCHEDULER = SchedulerConfig(name="ddpm", num_train_timesteps=100, num_inference_steps=10,
                            beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="epsilon")


# ---------------------------------------------------------------------------------------------
# Reference policy and helpers.


@pytest.fixture(scope="module")
def reference():
    config = PolicyConfig.for_shapes(OBS_DIM, ACTION_DIM, HORIZON, N_OBS_STEPS, N_ACTION_STEPS, scheduler=SCHEDULER,
                                     **SMALL_UNET)
    generator = torch.Generator().manual_seed(0)
    model = ConditionalUnet1D.from_config(config.unet)
    with torch.no_grad():
        for parameter in model.parameters():  # every tensor distinct, so a mis-mapped key changes the output
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    obs_min = torch.rand(OBS_DIM, generator=generator) * 100
    obs_max = obs_min + 1 + torch.rand(OBS_DIM, generator=generator) * 400
    action_min = torch.rand(ACTION_DIM, generator=generator) * 10
    action_max = action_min + 50 + torch.rand(ACTION_DIM, generator=generator) * 400
    return dict(config=config, model=model, obs_min=obs_min, obs_max=obs_max, action_min=action_min,
                action_max=action_max, obs_normalizer=AffineNormalizer.from_min_max(obs_min, obs_max),
                action_normalizer=AffineNormalizer.from_min_max(action_min, action_max))


@pytest.fixture(scope="module")
def native_dir(reference, tmp_path_factory):
    directory = tmp_path_factory.mktemp("native") / "policy"
    save_policy(directory, reference["config"], reference["model"], reference["obs_normalizer"],
                reference["action_normalizer"], metadata={"note": "test"})
    return directory


def denoiser_output(model: ConditionalUnet1D) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(3, HORIZON, ACTION_DIM, generator=generator)
    global_cond = torch.randn(3, OBS_DIM * N_OBS_STEPS, generator=generator)
    timesteps = torch.tensor([0, 17, 99])
    with torch.no_grad():
        return model(sample, timesteps, global_cond)


@pytest.fixture(scope="module")
def native_output(native_dir):
    return denoiser_output(load_policy(native_dir).model)


def assert_errors_with_path(path, match=None):
    """load_policy(path) raises a CheckpointError (nothing else) whose message names the path."""
    with pytest.raises(CheckpointError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------
# Native format.


def test_native_round_trip(reference, native_dir):
    policy = load_policy(native_dir)
    assert policy.config == reference["config"]
    assert torch.equal(denoiser_output(policy.model), denoiser_output(reference["model"]))
    for name in ("obs_normalizer", "action_normalizer"):
        assert torch.equal(getattr(policy, name).scale, reference[name].scale)
        assert torch.equal(getattr(policy, name).offset, reference[name].offset)
    assert read_weights(native_dir).metadata == {"note": "test"}


# ---------------------------------------------------------------------------------------------
# Original Diffusion Policy workspace checkpoints.


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def dp_cfg(config: PolicyConfig, resolve: bool = True, overrides: dict | None = None):
    """A cfg laid out as Diffusion Policy's train_diffusion_unet_lowdim_workspace.yaml."""
    omegaconf = pytest.importorskip("omegaconf")
    unet, scheduler = config.unet, config.scheduler
    document = {
        "name": "train_diffusion_unet_lowdim",
        "_target_": "diffusion_policy.workspace.train_diffusion_unet_lowdim_workspace.TrainDiffusionUnetLowdimWorkspace",
        "obs_dim": config.obs_dim, "action_dim": config.action_dim, "keypoint_dim": 2, "task_name": "pusht_lowdim",
        "exp_name": "default", "horizon": config.horizon, "n_obs_steps": config.n_obs_steps,
        "n_action_steps": config.n_action_steps, "n_latency_steps": 0, "past_action_visible": False,
        "keypoint_visible_rate": 1.0, "obs_as_local_cond": False, "obs_as_global_cond": True,
        "pred_action_steps_only": False,
        "policy": {
            "_target_": "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy",
            "model": {
                "_target_": "diffusion_policy.model.diffusion.conditional_unet1d.ConditionalUnet1D",
                "input_dim": unet.input_dim, "local_cond_dim": None, "global_cond_dim": unet.global_cond_dim,
                "diffusion_step_embed_dim": unet.diffusion_step_embed_dim, "down_dims": list(unet.down_dims),
                "kernel_size": unet.kernel_size, "n_groups": unet.n_groups,
                "cond_predict_scale": unet.cond_predict_scale,
            },
            "noise_scheduler": {
                "_target_": "diffusers.schedulers.scheduling_ddpm.DDPMScheduler",
                "num_train_timesteps": scheduler.num_train_timesteps, "beta_start": scheduler.beta_start,
                "beta_end": scheduler.beta_end, "beta_schedule": scheduler.beta_schedule,
                "variance_type": "fixed_small", "clip_sample": scheduler.clip_sample,
                "prediction_type": scheduler.prediction_type,
            },
            "horizon": "${horizon}", "obs_dim": "${obs_dim}", "action_dim": "${action_dim}",
            "n_action_steps": config.n_action_steps, "n_obs_steps": "${n_obs_steps}",
            "num_inference_steps": scheduler.num_inference_steps, "obs_as_local_cond": "${obs_as_local_cond}",
            "obs_as_global_cond": "${obs_as_global_cond}", "pred_action_steps_only": "${pred_action_steps_only}",
            "oa_step_convention": True,
        },
        "ema": {"_target_": "diffusion_policy.model.diffusion.ema_model.EMAModel", "power": 0.75, "max_value": 0.9999},
        "training": {"device": "cuda:0", "seed": 42, "num_epochs": 5000, "use_ema": True},
        "task": {"name": "pusht_lowdim", "dataset": {"zarr_path": "data/pusht/pusht_cchi_v7_replay.zarr"}},
    }
    cfg = omegaconf.OmegaConf.create(_merge(document, overrides or {}))
    if resolve:
        omegaconf.OmegaConf.resolve(cfg)  # as Diffusion Policy's train.py does before building the workspace
    return cfg


def dp_policy_state(model: torch.nn.Module, obs_normalizer: AffineNormalizer, action_normalizer: AffineNormalizer,
                    obs_range, action_range) -> OrderedDict:
    """The state dict of a DiffusionUnetLowdimPolicy: _dummy_variable, model.*, normalizer.*, mask_generator.*."""
    state = OrderedDict()
    state["_dummy_variable"] = torch.empty(0)
    for key, tensor in model.state_dict().items():
        state["model." + key] = tensor.clone()
    for field, normalizer, (low, high) in (("obs", obs_normalizer, obs_range), ("action", action_normalizer, action_range)):
        prefix = f"normalizer.params_dict.{field}."
        state[prefix + "offset"] = normalizer.offset.clone()
        state[prefix + "scale"] = normalizer.scale.clone()
        state[prefix + "input_stats.max"] = high.clone()
        state[prefix + "input_stats.mean"] = (low + high) / 2
        state[prefix + "input_stats.min"] = low.clone()
        state[prefix + "input_stats.std"] = (high - low) / 4
    state["mask_generator._dummy_variable"] = torch.empty(0)
    return state


def write_dp_checkpoint(path: Path, reference, cfg, with_ema: bool = True) -> Path:
    """A workspace checkpoint written exactly as Diffusion Policy's BaseWorkspace.save_checkpoint does."""
    dill = pytest.importorskip("dill")
    obs_range = (reference["obs_min"], reference["obs_max"])
    action_range = (reference["action_min"], reference["action_max"])
    good = dp_policy_state(reference["model"], reference["obs_normalizer"], reference["action_normalizer"],
                           obs_range, action_range)
    training_model = ConditionalUnet1D.from_config(reference["config"].unet)  # differs from the EMA weights
    optimizer = torch.optim.AdamW(training_model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
    state_dicts = {}
    if with_ema:
        state_dicts["model"] = dp_policy_state(training_model, reference["obs_normalizer"],
                                               reference["action_normalizer"], obs_range, action_range)
        state_dicts["ema_model"] = good
    else:
        state_dicts["model"] = good
    state_dicts["optimizer"] = optimizer.state_dict()
    payload = {"cfg": cfg, "state_dicts": state_dicts, "pickles": {"_output_dir": dill.dumps("/data/outputs/run")}}
    with open(path, "wb") as handle:
        torch.save(payload, handle, pickle_module=dill)
    return path


@pytest.mark.parametrize("resolve", [True, False], ids=["resolved-cfg", "interpolated-cfg"])
def test_dp_checkpoint_matches_native(reference, native_output, tmp_path, resolve):
    path = write_dp_checkpoint(tmp_path / "epoch=0100-test_mean_score=0.900.ckpt", reference,
                               dp_cfg(reference["config"], resolve=resolve))
    weights = read_weights(path)
    assert weights.metadata["weights"] == "ema_model"
    assert not any("_dummy_variable" in key for key in weights.unet_state_dict)
    policy = load_policy(path)
    assert policy.config == reference["config"]
    assert torch.equal(denoiser_output(policy.model), native_output)
    for name in ("obs_normalizer", "action_normalizer"):
        assert torch.equal(getattr(policy, name).scale, reference[name].scale)
        assert torch.equal(getattr(policy, name).offset, reference[name].offset)


def test_dp_checkpoint_without_ema_and_sparse_cfg(reference, native_output, tmp_path):
    """Only 'model' weights; cfg without the model section: the U-Net options come from the weight shapes."""
    cfg = dp_cfg(reference["config"])
    del cfg.policy["model"]
    path = write_dp_checkpoint(tmp_path / "latest.ckpt", reference, cfg, with_ema=False)
    weights = read_weights(path)
    assert weights.metadata["weights"] == "model"
    assert weights.config == reference["config"]
    assert torch.equal(denoiser_output(load_policy(path).model), native_output)


def test_dp_checkpoint_missing_required_key(reference, tmp_path):
    cfg = dp_cfg(reference["config"])
    del cfg["horizon"]
    del cfg.policy["horizon"]
    path = write_dp_checkpoint(tmp_path / "nohorizon.ckpt", reference, cfg)
    error = assert_errors_with_path(path, "horizon")
    assert "cfg.policy.horizon" in str(error)


def test_dp_checkpoint_refuses_non_global_condition(reference, tmp_path):
    cfg = dp_cfg(reference["config"], overrides={"obs_as_global_cond": False, "policy": {"obs_as_global_cond": False}})
    path = write_dp_checkpoint(tmp_path / "inpaint.ckpt", reference, cfg)
    assert_errors_with_path(path, "obs_as_global_cond")


def test_dp_checkpoint_refuses_image_policy(reference, tmp_path):
    cfg = dp_cfg(reference["config"], overrides={"policy": {
        "_target_": "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy"}})
    path = write_dp_checkpoint(tmp_path / "image.ckpt", reference, cfg)
    assert_errors_with_path(path, "not supported")


def test_dp_checkpoint_shape_mismatch(reference, tmp_path):
    cfg = dp_cfg(reference["config"], overrides={"policy": {"model": {"down_dims": [32, 64]}}})
    path = write_dp_checkpoint(tmp_path / "mismatch.ckpt", reference, cfg)
    assert_errors_with_path(path, "mismatch")


# ---------------------------------------------------------------------------------------------
# Malicious pickles: refused before anything runs.


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class ExecCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).write_text('pwned')",)


class SubprocessCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import subprocess

        return subprocess.check_call, (["touch", str(self.marker)],)


class FileWrite:
    """builtins.open directly: writing a file needs no code execution beyond the call itself."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("gadget, refused_name", [
    (SystemCall, "system"), (EvalCall, "builtins.eval"), (ExecCall, "builtins.exec"),
    (SubprocessCall, "subprocess.check_call"), (FileWrite, "open"),
], ids=["os.system", "eval", "exec", "subprocess", "open"])
@pytest.mark.parametrize("pickler", ["dill", "pickle"])
def test_malicious_checkpoint_is_refused(reference, tmp_path, gadget, refused_name, pickler):
    module = pytest.importorskip("dill") if pickler == "dill" else pickle
    marker = tmp_path / "pwned"
    payload = {"cfg": {"horizon": 16}, "state_dicts": {"model": {"model.x": torch.zeros(1)}},
               "pickles": {"trap": gadget(marker)}}
    path = tmp_path / "evil.ckpt"
    torch.save(payload, path, pickle_module=module)
    error = assert_errors_with_path(path, "refused")
    assert refused_name in str(error)
    assert "not a class a Diffusion Policy checkpoint needs" in str(error)
    assert not marker.exists()


def _with_data_pkl(tmp_path: Path, data: bytes, name: str) -> Path:
    """A torch zip checkpoint whose data.pkl is replaced by hand-written pickle bytes."""
    import zipfile

    base = tmp_path / "base.ckpt"
    torch.save({"a": 1}, base)
    path = tmp_path / name
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            target.writestr(item, data if item.filename.endswith("data.pkl") else source.read(item.filename))
    return path


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


@pytest.mark.parametrize("data, match", [
    # BUILD with slot state on an admitted function, trying to overwrite its __defaults__.
    (b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + b"N}X\x0c\x00\x00\x00__defaults__)s\x86b.",
     "refused to set state"),
    (b"\x80\x02" + _global("dill._dill", "_load_type") + b"X\x08\x00\x00\x00CodeType\x85R.", "refused to unpickle"),
    (b"\x80\x02" + _global("__builtin__", "eval") + b"X\x01\x00\x00\x001\x85R.", "refused to unpickle builtins.eval"),
    (b"\x80\x02" + _global("torch.storage", "_load_from_bytes") + b"C\x00\x85R.", "refused to unpickle"),
    (b"\x80\x02" + _global("_codecs", "encode") + b"X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", "latin-1"),
], ids=["build-on-function", "dill-code-type", "py2-eval", "nested-torch-load", "codecs"])
def test_handwritten_pickles_are_refused(tmp_path, data, match):
    import torch._utils

    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    path = _with_data_pkl(tmp_path, data, "crafted.ckpt")
    assert_errors_with_path(path, match)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_and_legacy_files_are_refused(tmp_path):
    scripted = tmp_path / "scripted.ckpt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    assert_errors_with_path(scripted, "TorchScript")
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"a": 1}, legacy, _use_new_zipfile_serialization=False)
    assert_errors_with_path(legacy, "legacy")


def test_dill_function_is_refused(tmp_path):
    dill = pytest.importorskip("dill")
    marker = tmp_path / "pwned"
    path = tmp_path / "function.ckpt"
    payload = {"cfg": {}, "state_dicts": {}, "hook": lambda: marker.write_text("pwned")}
    torch.save(payload, path, pickle_module=dill)
    assert_errors_with_path(path, "refused to unpickle dill._dill.")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# LeRobot directories.


def to_lerobot_key(key: str) -> str:
    """Our (Diffusion Policy) U-Net names the LeRobot way, written out independently of the reader."""
    parts = key.split(".")
    # Residual blocks: <...>.blocks.0.<...> -> <...>.conv1.<...>
    renamed = []
    index = 0
    while index < len(parts):
        if parts[index] == "blocks" and index + 1 < len(parts):
            renamed.append("conv1" if parts[index + 1] == "0" else "conv2")
            index += 2
        else:
            renamed.append(parts[index])
            index += 1
    # Sampling layers: down_modules.L.2.conv.weight -> down_modules.L.2.weight
    if len(renamed) == 5 and renamed[0] in ("down_modules", "up_modules") and renamed[2] == "2" and renamed[3] == "conv":
        renamed = renamed[:3] + renamed[4:]
    return "diffusion.unet." + ".".join(renamed)


def lerobot_config(reference, normalization_mapping=None, extra_features=None) -> dict:
    config = reference["config"]
    unet = config.unet
    document = {
        "type": "diffusion",
        "n_obs_steps": config.n_obs_steps, "horizon": config.horizon, "n_action_steps": config.n_action_steps,
        "normalization_mapping": normalization_mapping or {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ENV": "MIN_MAX",
                                                           "ACTION": "MIN_MAX"},
        "input_features": {
            "observation.state": {"type": "STATE", "shape": [STATE_DIM]},
            "observation.environment_state": {"type": "ENV", "shape": [ENV_DIM]},
            **(extra_features or {}),
        },
        "output_features": {"action": {"type": "ACTION", "shape": [ACTION_DIM]}},
        "device": "cuda", "use_amp": False, "drop_n_last_frames": 7, "vision_backbone": "resnet18",
        "crop_shape": [84, 84], "down_dims": list(unet.down_dims), "kernel_size": unet.kernel_size,
        "n_groups": unet.n_groups, "diffusion_step_embed_dim": unet.diffusion_step_embed_dim,
        "use_film_scale_modulation": unet.cond_predict_scale, "noise_scheduler_type": "DDPM",
        "num_train_timesteps": config.scheduler.num_train_timesteps, "beta_schedule": config.scheduler.beta_schedule,
        "beta_start": config.scheduler.beta_start, "beta_end": config.scheduler.beta_end,
        "prediction_type": config.scheduler.prediction_type, "clip_sample": config.scheduler.clip_sample,
        "clip_sample_range": config.scheduler.clip_sample_range,
        "num_inference_steps": config.scheduler.num_inference_steps, "do_mask_loss_for_padding": False,
    }
    return document


def lerobot_stats(reference) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "observation.state": {"min": reference["obs_min"][:STATE_DIM], "max": reference["obs_max"][:STATE_DIM]},
        "observation.environment_state": {"min": reference["obs_min"][STATE_DIM:], "max": reference["obs_max"][STATE_DIM:]},
        "action": {"min": reference["action_min"], "max": reference["action_max"]},
    }


def write_lerobot_dir(directory: Path, reference, variant: str, config: dict | None = None,
                      drop_stat: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    document = config or lerobot_config(reference)
    (directory / "config.json").write_text(json.dumps(document, indent=2))
    tensors = {to_lerobot_key(k): v.clone().contiguous() for k, v in reference["model"].state_dict().items()}
    stats = lerobot_stats(reference)
    if variant == "buffers":
        for feature, values in stats.items():
            prefix = feature.replace(".", "_")
            modules = ["normalize_targets", "unnormalize_outputs"] if feature == "action" else ["normalize_inputs"]
            for module in modules:
                for stat, tensor in values.items():
                    key = f"{module}.buffer_{prefix}.{stat}"
                    if f"{feature}.{stat}" != drop_stat:
                        tensors[key] = tensor.clone()
    else:
        flat = {f"{feature}.{stat}": tensor.clone() for feature, values in stats.items() for stat, tensor in values.items()
                if f"{feature}.{stat}" != drop_stat}
        save_file(flat, str(directory / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
        save_file({k: v.clone() for k, v in flat.items() if k.startswith("action.")},
                  str(directory / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
        if variant == "processor+json":
            pipeline = {"name": "policy_preprocessor", "steps": [
                {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
                {"registry_name": "to_batch_processor", "config": {}},
                {"registry_name": "device_processor", "config": {"device": "cuda"}},
                {"registry_name": "normalizer_processor", "config": {
                    "eps": 1e-8, "features": {}, "norm_map": document["normalization_mapping"]},
                 "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors"},
            ]}
            (directory / "policy_preprocessor.json").write_text(json.dumps(pipeline))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def lerobot_minmax(x, low, high, buffer_formula: bool):
    """LeRobot's min/max normalisation, computed as LeRobot writes it."""
    if buffer_formula:
        return (x - low) / (high - low + 1e-8) * 2 - 1
    return 2 * (x - low) / (high - low) - 1


def test_lerobot_key_names_are_lerobot_names(reference):
    names = {to_lerobot_key(k) for k in reference["model"].state_dict()}
    for expected in ("diffusion.unet.down_modules.0.0.conv1.block.0.weight",
                     "diffusion.unet.down_modules.0.0.conv2.block.1.bias",
                     "diffusion.unet.down_modules.0.0.cond_encoder.1.weight",
                     "diffusion.unet.down_modules.0.0.residual_conv.weight",
                     "diffusion.unet.down_modules.0.2.weight", "diffusion.unet.up_modules.0.2.bias",
                     "diffusion.unet.mid_modules.1.conv2.block.0.weight",
                     "diffusion.unet.final_conv.0.block.0.weight", "diffusion.unet.final_conv.1.weight",
                     "diffusion.unet.diffusion_step_encoder.1.weight"):
        assert expected in names


@pytest.mark.parametrize("variant", ["buffers", "processor", "processor+json"])
def test_lerobot_directory_matches_native(reference, native_output, tmp_path, variant):
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, variant)
    policy = load_policy(directory)
    assert policy.config == reference["config"]
    assert torch.equal(denoiser_output(policy.model), native_output)

    buffer_formula = variant == "buffers"
    stats = lerobot_stats(reference)
    generator = torch.Generator().manual_seed(2)
    obs = reference["obs_min"] + torch.rand(5, OBS_DIM, generator=generator) * (reference["obs_max"] - reference["obs_min"])
    expected_obs = torch.cat([
        lerobot_minmax(obs[:, :STATE_DIM].double(), stats["observation.state"]["min"].double(),
                       stats["observation.state"]["max"].double(), buffer_formula),
        lerobot_minmax(obs[:, STATE_DIM:].double(), stats["observation.environment_state"]["min"].double(),
                       stats["observation.environment_state"]["max"].double(), buffer_formula),
    ], dim=1)
    torch.testing.assert_close(policy.obs_normalizer.normalize(obs).double(), expected_obs, rtol=1e-5, atol=1e-5)
    # Against our own min/max normaliser: the same map up to float rounding.
    torch.testing.assert_close(policy.obs_normalizer.normalize(obs), reference["obs_normalizer"].normalize(obs),
                               rtol=1e-5, atol=1e-5)
    normalized_actions = torch.rand(5, ACTION_DIM, generator=generator) * 2 - 1
    low, high = stats["action"]["min"].double(), stats["action"]["max"].double()
    expected_actions = (normalized_actions.double() + 1) / 2 * (high - low) + low  # LeRobot's unnormalise
    torch.testing.assert_close(policy.action_normalizer.unnormalize(normalized_actions).double(), expected_actions,
                               rtol=1e-5, atol=1e-4)


def test_lerobot_default_mapping_leaves_environment_state_unnormalised(reference, tmp_path):
    """LeRobot normalises only the feature types its mapping names; ENV is absent from its default mapping."""
    document = lerobot_config(reference, normalization_mapping={"VISUAL": "MEAN_STD", "STATE": "MIN_MAX",
                                                                "ACTION": "MIN_MAX"})
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, "buffers", config=document)
    weights = read_weights(directory)
    assert torch.equal(weights.obs_normalizer.scale[STATE_DIM:], torch.ones(ENV_DIM))
    assert torch.equal(weights.obs_normalizer.offset[STATE_DIM:], torch.zeros(ENV_DIM))
    assert weights.metadata["normalization"]["observation.environment_state"] == "IDENTITY"


@pytest.mark.parametrize("variant", ["buffers", "processor"])
def test_lerobot_missing_statistics(reference, tmp_path, variant):
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, variant,
                                  drop_stat="observation.environment_state.max")
    with pytest.raises(CheckpointError, match=r"observation\.environment_state\.max"):
        load_policy(directory)


def test_lerobot_refuses_image_features(reference, tmp_path):
    document = lerobot_config(reference, extra_features={"observation.image": {"type": "VISUAL", "shape": [3, 96, 96]}})
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, "buffers", config=document)
    with pytest.raises(CheckpointError, match="image feature"):
        load_policy(directory)


def test_lerobot_ddim_and_null_inference_steps(reference, tmp_path):
    document = lerobot_config(reference)
    document.update(noise_scheduler_type="DDIM", num_inference_steps=None)
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, "buffers", config=document)
    scheduler = read_weights(directory).config.scheduler
    assert scheduler.name == "ddim"
    assert scheduler.num_inference_steps == scheduler.num_train_timesteps == 100


# ---------------------------------------------------------------------------------------------
# Errors: every one a CheckpointError naming the file.


def test_missing_path(tmp_path):
    assert_errors_with_path(tmp_path / "does-not-exist")


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_errors_with_path(tmp_path / "empty", "config.json")


def test_unknown_format_file(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("not a checkpoint\n")
    assert_errors_with_path(path)


def test_truncated_native_safetensors(native_dir, tmp_path):
    import shutil

    directory = tmp_path / "truncated"
    shutil.copytree(native_dir, directory)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_policy(directory)
    assert str(weights) in str(info.value)


def test_truncated_lerobot_safetensors(reference, tmp_path):
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, "buffers")
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_policy(directory)
    assert str(weights) in str(info.value)


def test_truncated_dp_checkpoint(reference, tmp_path):
    path = write_dp_checkpoint(tmp_path / "full.ckpt", reference, dp_cfg(reference["config"]))
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        truncated = tmp_path / f"cut{cut}.ckpt"
        truncated.write_bytes(data[:cut])
        assert_errors_with_path(truncated)


def test_corrupt_pickle_inside_zip(tmp_path):
    """A well-formed zip whose data.pkl is garbage."""
    import zipfile

    path = tmp_path / "garbage.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02garbage")
        archive.writestr("archive/version", b"3\n")
    assert_errors_with_path(path)


def test_native_shape_mismatch(native_dir, tmp_path):
    import shutil

    directory = tmp_path / "mismatch"
    shutil.copytree(native_dir, directory)
    document = json.loads((directory / "config.json").read_text())
    document["policy"]["unet"]["down_dims"] = [16, 64]
    (directory / "config.json").write_text(json.dumps(document))
    assert_errors_with_path(directory, "mismatch")


def test_lerobot_shape_mismatch(reference, tmp_path):
    document = lerobot_config(reference)
    document["down_dims"] = [32, 64]
    directory = write_lerobot_dir(tmp_path / "lerobot", reference, "buffers", config=document)
    assert_errors_with_path(directory, "mismatch")
