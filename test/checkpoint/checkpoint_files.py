"""Reference policy and writers of checkpoint files for the checkpoint tests.

The writers lay files out the way Diffusion Policy, LeRobot and torch.save do, from code written
here (not from the package's own key mapping). Plain functions rather than fixtures in a
test/checkpoint/conftest.py: a second conftest module would shadow test/conftest.py for the
`from conftest import ...` of the other test directories.
"""
from __future__ import annotations

import functools
import json
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from paradigms_policy.checkpoint import CheckpointError, load_policy
from paradigms_policy.config import PolicyConfig, SchedulerConfig
from paradigms_policy.model import ConditionalUnet1D
from paradigms_policy.normalizer import AffineNormalizer

OBS_DIM, ACTION_DIM, HORIZON, N_OBS_STEPS, N_ACTION_STEPS = 20, 2, 16, 2, 8
STATE_DIM, ENV_DIM = 2, 18  # LeRobot splits the observation into [state, environment_state]
SMALL_UNET = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, kernel_size=5, n_groups=8, cond_predict_scale=True)
SCHEDULER = SchedulerConfig(name="ddpm", num_train_timesteps=100, num_inference_steps=10,
                            beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="epsilon")


@dataclass(frozen=True)
class Reference:
    config: PolicyConfig
    model: ConditionalUnet1D
    obs_min: torch.Tensor
    obs_max: torch.Tensor
    action_min: torch.Tensor
    action_max: torch.Tensor
    obs_normalizer: AffineNormalizer
    action_normalizer: AffineNormalizer


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    """A small policy whose every parameter is distinct, so that a mis-mapped key changes the output."""
    config = PolicyConfig.for_shapes(OBS_DIM, ACTION_DIM, HORIZON, N_OBS_STEPS, N_ACTION_STEPS, scheduler=SCHEDULER,
                                     **SMALL_UNET)
    generator = torch.Generator().manual_seed(0)
    model = ConditionalUnet1D.from_config(config.unet)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    obs_min = torch.rand(OBS_DIM, generator=generator) * 100
    obs_max = obs_min + 1 + torch.rand(OBS_DIM, generator=generator) * 400
    action_min = torch.rand(ACTION_DIM, generator=generator) * 10
    action_max = action_min + 50 + torch.rand(ACTION_DIM, generator=generator) * 400
    return Reference(config, model, obs_min, obs_max, action_min, action_max,
                     AffineNormalizer.from_min_max(obs_min, obs_max),
                     AffineNormalizer.from_min_max(action_min, action_max))


def denoiser_output(model: ConditionalUnet1D) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(3, HORIZON, ACTION_DIM, generator=generator)
    global_cond = torch.randn(3, OBS_DIM * N_OBS_STEPS, generator=generator)
    with torch.no_grad():
        return model(sample, torch.tensor([0, 17, 99]), global_cond)


def assert_same_policy(policy, ref: Reference) -> None:
    """The loaded policy computes exactly what the reference does."""
    assert policy.config == ref.config
    assert torch.equal(denoiser_output(policy.model), denoiser_output(ref.model))
    for name in ("obs_normalizer", "action_normalizer"):
        assert torch.equal(getattr(policy, name).scale, getattr(ref, name).scale)
        assert torch.equal(getattr(policy, name).offset, getattr(ref, name).offset)


def assert_load_fails(path, *fragments: str) -> CheckpointError:
    """load_policy(path) raises a CheckpointError (nothing else) whose message names the path and `fragments`."""
    with pytest.raises(CheckpointError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


# ---------------------------------------------------------------------------------------------
# Original Diffusion Policy workspaces.


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def dp_cfg_document(config: PolicyConfig, overrides: dict | None = None) -> dict:
    """A cfg laid out as Diffusion Policy's train_diffusion_unet_lowdim_workspace.yaml, as plain data."""
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
    return _merge(document, overrides or {})


def dp_cfg(config: PolicyConfig, resolve: bool = True, overrides: dict | None = None):
    """The cfg as the omegaconf DictConfig Diffusion Policy pickles, resolved as its train.py does or not."""
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(dp_cfg_document(config, overrides))
    if resolve:
        omegaconf.OmegaConf.resolve(cfg)
    return cfg


def dp_policy_state(model: torch.nn.Module, ref: Reference) -> OrderedDict:
    """The state dict of a DiffusionUnetLowdimPolicy: _dummy_variable, model.*, normalizer.*, mask_generator.*."""
    state = OrderedDict()
    state["_dummy_variable"] = torch.empty(0)
    for key, tensor in model.state_dict().items():
        state["model." + key] = tensor.clone()
    for field, normalizer, low, high in (("obs", ref.obs_normalizer, ref.obs_min, ref.obs_max),
                                         ("action", ref.action_normalizer, ref.action_min, ref.action_max)):
        prefix = f"normalizer.params_dict.{field}."
        state[prefix + "offset"] = normalizer.offset.clone()
        state[prefix + "scale"] = normalizer.scale.clone()
        state[prefix + "input_stats.max"] = high.clone()
        state[prefix + "input_stats.mean"] = (low + high) / 2
        state[prefix + "input_stats.min"] = low.clone()
        state[prefix + "input_stats.std"] = (high - low) / 4
    state["mask_generator._dummy_variable"] = torch.empty(0)
    return state


def dp_payload(ref: Reference, cfg, with_ema: bool = True) -> dict:
    """A workspace payload as Diffusion Policy's BaseWorkspace.save_checkpoint builds it; the reference
    weights are the EMA model's (or the only model's), the training model differs."""
    dill = pytest.importorskip("dill")
    training_model = ConditionalUnet1D.from_config(ref.config.unet)
    optimizer = torch.optim.AdamW(training_model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
    state_dicts = {"model": dp_policy_state(training_model, ref), "ema_model": dp_policy_state(ref.model, ref)}
    if not with_ema:
        state_dicts = {"model": state_dicts["ema_model"]}
    state_dicts["optimizer"] = optimizer.state_dict()
    return {"cfg": cfg, "state_dicts": state_dicts, "pickles": {"global_step": dill.dumps(1000)}}


def save_dp(path: Path, payload) -> Path:
    """torch.save with dill, as Diffusion Policy writes its workspace."""
    dill = pytest.importorskip("dill")
    with open(path, "wb") as handle:
        torch.save(payload, handle, pickle_module=dill)
    return path


def write_dp_checkpoint(path: Path, ref: Reference, cfg, with_ema: bool = True) -> Path:
    return save_dp(path, dp_payload(ref, cfg, with_ema))


# ---------------------------------------------------------------------------------------------
# Hand-written pickles.


def global_op(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def text_op(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def int_op(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def with_data_pkl(directory: Path, data: bytes, name: str) -> Path:
    """A torch zip checkpoint whose data.pkl is replaced by hand-written pickle bytes."""
    base = directory / f"{name}.base"
    torch.save({"a": torch.arange(4.0)}, base)
    path = directory / name
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            target.writestr(item, data if item.filename.endswith("data.pkl") else source.read(item.filename))
    base.unlink()
    return path


# ---------------------------------------------------------------------------------------------
# LeRobot directories.


def to_lerobot_key(key: str) -> str:
    """Our (Diffusion Policy) U-Net names the LeRobot way, written out independently of the reader."""
    parts = key.split(".")
    renamed = []
    index = 0
    while index < len(parts):  # residual blocks: <...>.blocks.0.<...> -> <...>.conv1.<...>
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


def lerobot_config(ref: Reference, normalization_mapping=None, extra_features=None) -> dict:
    config, unet = ref.config, ref.config.unet
    return {
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


def lerobot_stats(ref: Reference) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "observation.state": {"min": ref.obs_min[:STATE_DIM], "max": ref.obs_max[:STATE_DIM]},
        "observation.environment_state": {"min": ref.obs_min[STATE_DIM:], "max": ref.obs_max[STATE_DIM:]},
        "action": {"min": ref.action_min, "max": ref.action_max},
    }


def _write_processor_files(directory: Path, flat: dict[str, torch.Tensor], pipeline_json: dict | None) -> None:
    save_file(flat, str(directory / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    save_file({k: v.clone() for k, v in flat.items() if k.startswith("action.")},
              str(directory / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    if pipeline_json is not None:
        (directory / "policy_preprocessor.json").write_text(json.dumps(pipeline_json))


def write_lerobot_dir(directory: Path, ref: Reference, variant: str, config: dict | None = None,
                      drop_stat: str | None = None) -> Path:
    """A LeRobot directory; `variant` puts the statistics in model.safetensors buffers ('buffers') or in a
    processor file ('processor', 'processor+json' with the pipeline's JSON)."""
    directory.mkdir(parents=True, exist_ok=True)
    document = config or lerobot_config(ref)
    (directory / "config.json").write_text(json.dumps(document, indent=2))
    tensors = {to_lerobot_key(k): v.clone().contiguous() for k, v in ref.model.state_dict().items()}
    stats = {f"{feature}.{stat}": tensor.clone() for feature, values in lerobot_stats(ref).items()
             for stat, tensor in values.items() if f"{feature}.{stat}" != drop_stat}
    if variant == "buffers":
        for flat_key, tensor in stats.items():
            feature, stat = flat_key.rsplit(".", 1)
            modules = ["normalize_targets", "unnormalize_outputs"] if feature == "action" else ["normalize_inputs"]
            for module in modules:
                tensors[f"{module}.buffer_{feature.replace('.', '_')}.{stat}"] = tensor.clone()
    else:
        pipeline = {"name": "policy_preprocessor", "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "device_processor", "config": {"device": "cuda"}},
            {"registry_name": "normalizer_processor", "config": {
                "eps": 1e-8, "features": {}, "norm_map": document["normalization_mapping"]},
             "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors"},
        ]}
        _write_processor_files(directory, stats, pipeline if variant == "processor+json" else None)
    save_file(tensors, str(directory / "model.safetensors"))
    return directory
