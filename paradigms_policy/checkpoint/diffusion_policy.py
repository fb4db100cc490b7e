"""Read an original Diffusion Policy workspace checkpoint (`.ckpt`) without running pickled code.

Diffusion Policy saves its workspace with `torch.save(payload, f, pickle_module=dill)`, where

    payload = {'cfg': <omegaconf DictConfig of the Hydra run>,
               'state_dicts': {'model': ..., 'ema_model': ..., 'optimizer': ...},
               'pickles': {...}}

`unpickler.load_archive` unpickles it (a scan of the pickle's opcodes, then torch's weights-only
unpickler with inert stand-ins for omegaconf; omegaconf and dill are never imported).

Weights (`_policy_state`): `state_dicts['ema_model']` when present (the weights Diffusion Policy
evaluates with), else `state_dicts['model']`: the U-Net under `model.*`, the normaliser under
`normalizer.params_dict.{obs,action}.{scale,offset}` (x -> x * scale + offset, exactly our
`AffineNormalizer`), `_dummy_variable` entries dropped. Each must be a plain floating-point CPU
tensor, and together they may hold no more bytes than the archive stores (no overlapping views).

Configuration (`_policy_config`), read through `dp_cfg.Cfg` from `cfg.policy`, then cfg's top level:
- what is supported (`_check_supported`): the low-dim U-Net policy with the observation as a
  global condition (`obs_as_global_cond: true`); a state dict with `obs_encoder.*` weights is the
  hybrid image policy, read by `dp_image.py`;
- the U-Net (`_unet_options`): `cfg.policy.model.*`, else the weight shapes (`weights.infer_unet`),
  then checked against every stored shape (`weights.check_weights`);
- the horizons and sizes (`_horizons`): horizon, n_obs_steps, n_action_steps, obs_dim, action_dim;
- the scheduler (`dp_cfg.scheduler_options`): `cfg.policy.noise_scheduler.*` and
  `cfg.policy.num_inference_steps`, absent keys taking diffusers' constructor defaults.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import MAX_WIDTH, ConfigError, PolicyConfig, SchedulerConfig, UnetConfig, integer, show
from ..normalizer import AffineNormalizer
from .dp_cfg import ABSENT, Cfg, Values, run_metadata, scheduler_options, unwrap
from .dp_image import read_dp_image
from .errors import CheckpointError, PolicyWeights, invalid_config
from .unpickler import Refused, load_archive, torch_reason
from .weights import check_weights, infer_unet

MODEL_PREFIX = "model."
NORMALIZER_PREFIX = "normalizer.params_dict."
# For a low-dim checkpoint (no obs_encoder weights); image ones go to dp_image.py.
UNSUPPORTED_POLICY_WORDS = ("Image", "Hybrid", "Video", "Transformer", "BET", "Ibc", "Robomimic")
CONDITIONING = (("obs_as_global_cond", True), ("obs_as_local_cond", False), ("pred_action_steps_only", False))


def read_dp_checkpoint(path: Path) -> PolicyWeights:
    """`PolicyWeights` from a Diffusion Policy workspace `.ckpt`; every problem is a `CheckpointError`."""
    path = Path(path)
    payload, stored = _load_payload(path)
    source, unet_state, other = _policy_state(path, payload, stored)
    root = unwrap(payload.get("cfg"))
    if root is None:
        root = {}
    if not isinstance(root, dict):
        raise CheckpointError(path, f"cfg is a {type(root).__name__}, expected a mapping")
    cfg = Cfg(root)
    if any(key.startswith("obs_encoder.") for key in other):
        return read_dp_image(path, cfg, source, unet_state, other)
    obs_normalizer = _normalizer(path, other, "obs")
    action_normalizer = _normalizer(path, other, "action")
    config = _policy_config(path, cfg, unet_state, obs_normalizer)
    if obs_normalizer.dim != config.obs_dim or action_normalizer.dim != config.action_dim:
        raise CheckpointError(path, f"normaliser sizes (obs {obs_normalizer.dim}, action {action_normalizer.dim}) "
                                    f"do not match the configuration (obs_dim {config.obs_dim}, "
                                    f"action_dim {config.action_dim})")
    return PolicyWeights(config, unet_state, obs_normalizer, action_normalizer, run_metadata(cfg, source, config))


# --------------------------------------------------------------------------------------------
# The file and its tensors.


def _load_payload(path: Path) -> tuple[Any, int]:
    """(the unpickled workspace payload, the bytes the archive stores)."""
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        return load_archive(path)
    except Refused as err:
        raise CheckpointError(path, str(err)) from None
    except zipfile.BadZipFile as err:
        raise CheckpointError(path, f"not a readable torch zip checkpoint ({err}); the file may be truncated or "
                                    "corrupt (the legacy non-zip torch format is not supported)") from None
    except Exception as err:  # torch and zipfile report corruption with many exception types
        raise CheckpointError(path, f"cannot unpickle the checkpoint ({torch_reason(err)}); the file may be "
                                    "truncated or corrupt") from None


def _policy_state(path: Path, payload: Any,
                  stored: int) -> tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(which state dict, the U-Net's tensors without `model.`, the other tensors) of the policy."""
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"expected a Diffusion Policy workspace payload (a dict), found "
                                    f"{type(payload).__name__}")
    state_dicts = payload.get("state_dicts")
    if not isinstance(state_dicts, dict):
        raise CheckpointError(path, "the payload has no 'state_dicts' (not a Diffusion Policy workspace checkpoint)")
    source = next((name for name in ("ema_model", "model") if isinstance(state_dicts.get(name), dict) and any(
        isinstance(key, str) and key.startswith(MODEL_PREFIX) for key in state_dicts[name])), None)
    if source is None:
        raise CheckpointError(path, "state_dicts has neither an 'ema_model' nor a 'model' entry with 'model.*' weights")
    unet_state, other = _split_tensors(path, source, state_dicts[source], stored)
    if any(key.startswith("local_cond_encoder.") for key in unet_state):
        raise CheckpointError(path, "this U-Net uses a local condition (obs_as_local_cond); "
                                    "only the global-condition low-dim policy is supported")
    return source, unet_state, other


def _split_tensors(path: Path, source: str, state: dict,
                   stored: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the model.* tensors without the prefix, the others) of state_dicts[source], `_dummy_variable`s dropped."""
    unet_state: dict[str, torch.Tensor] = {}
    other: dict[str, torch.Tensor] = {}
    total = 0
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(path, f"state_dicts.{source} has a key {show(key)} that is not a string")
        if key.endswith("_dummy_variable"):
            continue
        tensor = _plain_tensor(path, f"state_dicts.{source}.{key[:200]}", value)
        total += tensor.numel() * tensor.element_size()
        if key.startswith(MODEL_PREFIX):
            unet_state[key[len(MODEL_PREFIX):]] = tensor
        else:
            other[key] = tensor
    if total > stored:
        raise CheckpointError(path, f"the tensors of state_dicts.{source} span {total} bytes, more than the archive's "
                                    f"{stored}: their views overlap (torch.save of a state dict writes none)")
    return unet_state, other


def _plain_tensor(path: Path, where: str, value: Any) -> torch.Tensor:
    """`value` as a fresh tensor object, if it is what a state dict holds: a plain dense floating-point CPU
    tensor without negation or conjugation bits. Attributes a pickle set on the object are left behind."""
    if type(value) is not torch.Tensor:
        raise CheckpointError(path, f"{where} is a {type(value).__name__}, not a tensor")
    tensor = torch.Tensor.detach(value)  # looked up on the class: nothing set on the instance is consulted
    if tensor.layout != torch.strided or tensor.device.type != "cpu" or not tensor.dtype.is_floating_point:
        raise CheckpointError(path, f"{where} is a {tensor.layout} {tensor.dtype} tensor on {tensor.device}; "
                                    "expected dense floating-point weights")
    if tensor.is_neg() or tensor.is_conj():
        raise CheckpointError(path, f"{where} carries a negation or conjugation bit (torch.save of a state dict "
                                    "writes none)")
    return tensor


def _normalizer(path: Path, state: dict[str, torch.Tensor], field: str) -> AffineNormalizer:
    """The obs or action normaliser from normalizer.params_dict.<field>.{scale,offset}."""
    keys = {name: f"{NORMALIZER_PREFIX}{field}.{name}" for name in ("scale", "offset")}
    for key in keys.values():
        if key not in state:
            raise CheckpointError(path, f"the policy state dict lacks {key} (the {field} normaliser)")
    try:
        return AffineNormalizer(state[keys["scale"]].float().flatten(), state[keys["offset"]].float().flatten())
    except ValueError as err:
        raise CheckpointError(path, f"invalid {field} normaliser: {err}") from None


# --------------------------------------------------------------------------------------------
# Configuration.


def _policy_config(path: Path, cfg: Cfg, unet_state: dict[str, torch.Tensor],
                   obs_normalizer: AffineNormalizer) -> PolicyConfig:
    """PolicyConfig from the cfg, with fallbacks from the weights; a problem names the cfg key it is about."""
    _check_supported(path, cfg)
    inferred = infer_unet(unet_state)
    if inferred is None:
        raise CheckpointError(path, "the model.* weights do not have the layout of Diffusion Policy's "
                                    "ConditionalUnet1D")
    if inferred["global_cond_dim"] <= 0:
        raise CheckpointError(path, "the U-Net has no global condition; only the global-condition low-dim policy "
                                    "is supported")
    values = Values(cfg)
    try:
        unet = _unet_options(values, inferred)
        horizons = _horizons(values, unet, obs_normalizer.dim)
        scheduler = scheduler_options(values)
        config = PolicyConfig(unet=UnetConfig(**unet), scheduler=SchedulerConfig(**scheduler), **horizons)
    except ConfigError as err:
        raise invalid_config(path, err, values.source) from None
    check_weights(path, config.unet, unet_state, values.source)
    return config


def _check_supported(path: Path, cfg: Cfg) -> None:
    """Refuse image/transformer policies, other models and other conditioning (cfg.policy._target_, ...)."""
    policy_class = (cfg.text("policy._target_") or "").rsplit(".", 1)[-1]
    if any(word in policy_class for word in UNSUPPORTED_POLICY_WORDS):
        raise CheckpointError(path, f"policy class {show(policy_class)} is not supported; only the low-dim U-Net "
                                    "policy (DiffusionUnetLowdimPolicy) is")
    model_target = cfg.text("policy.model._target_")
    if model_target is not None and not model_target.endswith("ConditionalUnet1D"):
        raise CheckpointError(path, f"model class {show(model_target)} is not supported; only ConditionalUnet1D is")
    for key, required in CONDITIONING:
        value, found = cfg.first((f"policy.{key}", key))
        if value is ABSENT:
            continue
        if not isinstance(value, bool):
            raise CheckpointError(path, f"cfg.{found} = {show(value)} is not true or false")
        if value != required:
            raise CheckpointError(path, f"cfg.{found} is {value}; only the low-dim policy with the observation as a "
                                        "global condition (obs_as_global_cond true, obs_as_local_cond and "
                                        "pred_action_steps_only false) is supported")


def _unet_options(values: Values, inferred: dict[str, Any]) -> dict[str, Any]:
    """UnetConfig options from cfg.policy.model.*, else from the weight shapes."""

    def take(name: str, fallback: Any, origin: str = "inferred from the weights") -> Any:
        return values.take(f"unet.{name}", (f"policy.model.{name}",), fallback, origin)

    options = {name: take(name, inferred[name]) for name in inferred}
    # GroupNorm weights do not reveal the group count; 8 is ConditionalUnet1D's default.
    options["n_groups"] = take("n_groups", 8, "ConditionalUnet1D's default")
    return options


def _horizons(values: Values, unet: dict[str, Any], normalizer_dim: int) -> dict[str, Any]:
    """obs_dim, action_dim, horizon, n_obs_steps, n_action_steps from cfg.policy.* or cfg.*."""

    def take(name: str, fallback: Any = ABSENT, origin: str = "") -> Any:
        return values.take(name, (f"policy.{name}", name), fallback, origin)

    obs_dim = integer("obs_dim", take("obs_dim", normalizer_dim, "the obs normaliser's size"), 1, MAX_WIDTH)
    global_cond_dim = integer("unet.global_cond_dim", unet["global_cond_dim"], 1, MAX_WIDTH)
    steps = global_cond_dim // obs_dim if global_cond_dim % obs_dim == 0 else ABSENT
    return dict(obs_dim=obs_dim, action_dim=take("action_dim", unet["input_dim"], "the U-Net's input_dim"),
                horizon=take("horizon"), n_obs_steps=take("n_obs_steps", steps, "global_cond_dim / obs_dim"),
                n_action_steps=take("n_action_steps"))
