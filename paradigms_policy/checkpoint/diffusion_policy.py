"""Read an original Diffusion Policy workspace checkpoint (`.ckpt`) without running pickled code.

Diffusion Policy saves its workspace with `torch.save(payload, f, pickle_module=dill)`, where

    payload = {'cfg': <omegaconf DictConfig of the Hydra run>,
               'state_dicts': {'model': ..., 'ema_model': ..., 'optimizer': ...},
               'pickles': {...}}

A plain `torch.load` of such a file would import and call whatever the pickle names, so this
module hands torch a pickle module of its own (`RESTRICTED_PICKLE`) whose `Unpickler.find_class`
answers from a fixed table and never imports anything:

- torch's tensor and parameter rebuild functions, `torch.Size`, `torch.device` and torch dtypes
  (torch's own `find_class` wrapper resolves the `*Storage` names before ours is asked);
- `collections.OrderedDict`; `collections.defaultdict` (rebuilt as a plain dict);
  `_codecs.encode` for latin-1 text only (how protocol 2 stores bytes);
- a few builtin data types (dict, list, tuple, set, frozenset, int, float, complex, bool, str,
  bytes, bytearray), also when dill names them through `dill._dill._load_type`;
- omegaconf's containers, nodes and metadata, and the `typing` names they mention: these become
  inert placeholder objects that only record their pickled state (omegaconf is never imported
  and need not be installed); the placeholder tree is then turned into plain dicts and lists.

Any other global (os.system, builtins.eval, subprocess.*, dill's function/code builders, ...) stops
the load with a `CheckpointError` before it is called. Only the zip format of torch.save is read;
TorchScript archives and the legacy tar/pickle format are refused.

The policy is taken from `state_dicts['ema_model']` when present (the weights Diffusion Policy
evaluates with), else `state_dicts['model']`: the U-Net under `model.*`, the normaliser under
`normalizer.params_dict.{obs,action}.{scale,offset}` (x -> x * scale + offset, exactly our
`AffineNormalizer`), `_dummy_variable` entries dropped. The architecture comes from
`cfg.policy` (falling back to the top level of cfg, then to the weight shapes). Only the low-dim
policy with the observation as a global condition (`obs_as_global_cond: true`) is supported.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, PolicyConfig, SchedulerConfig, UnetConfig
from ..normalizer import AffineNormalizer
from .errors import CheckpointError, PolicyWeights
from .unpickler import (RESTRICTED_PICKLE, DictConfigPlaceholder, ListConfigPlaceholder, NodePlaceholder, Placeholder,
                        RefusedGlobal, TypeRef)

MODEL_PREFIX = "model."
NORMALIZER_PREFIX = "normalizer.params_dict."
MAX_CONFIG_DEPTH = 64


# --------------------------------------------------------------------------------------------
# Reading the file.


def read_dp_checkpoint(path: Path) -> PolicyWeights:
    """`PolicyWeights` from a Diffusion Policy workspace `.ckpt`; every problem is a `CheckpointError`."""
    path = Path(path)
    payload = _load_payload(path)
    if not isinstance(payload, dict):
        raise CheckpointError(path, "expected a Diffusion Policy workspace payload (a dict), found "
                                    f"{type(payload).__name__}")
    state_dicts = payload.get("state_dicts")
    if not isinstance(state_dicts, dict):
        raise CheckpointError(path, "the payload has no 'state_dicts' (not a Diffusion Policy workspace checkpoint)")
    source = None
    for candidate in ("ema_model", "model"):
        state = state_dicts.get(candidate)
        if isinstance(state, dict) and any(str(k).startswith(MODEL_PREFIX) for k in state):
            source = candidate
            break
    if source is None:
        raise CheckpointError(path, "state_dicts has neither an 'ema_model' nor a 'model' entry with 'model.*' weights")
    policy_state = state_dicts[source]

    unet_state: dict[str, torch.Tensor] = {}
    other: dict[str, torch.Tensor] = {}
    for key, value in policy_state.items():
        key = str(key)
        if key.endswith("_dummy_variable"):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"state_dicts.{source}.{key} is a {type(value).__name__}, not a tensor")
        if key.startswith(MODEL_PREFIX):
            unet_state[key[len(MODEL_PREFIX):]] = value
        else:
            other[key] = value
    if any(key.startswith("obs_encoder.") for key in other):
        raise CheckpointError(path, "this is an image-conditioned policy (it has obs_encoder weights); "
                                    "only the low-dim Diffusion Policy is supported")
    if any(key.startswith("local_cond_encoder.") for key in unet_state):
        raise CheckpointError(path, "this U-Net uses a local condition (obs_as_local_cond); "
                                    "only the global-condition low-dim policy is supported")

    cfg = _to_plain(payload.get("cfg"), path)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise CheckpointError(path, f"cfg is a {type(cfg).__name__}, expected a mapping")
    obs_normalizer = _normalizer(path, other, "obs")
    action_normalizer = _normalizer(path, other, "action")
    config, metadata = _policy_config(path, cfg, unet_state, obs_normalizer)
    metadata["weights"] = source
    if obs_normalizer.dim != config.obs_dim or action_normalizer.dim != config.action_dim:
        raise CheckpointError(path, f"normaliser sizes (obs {obs_normalizer.dim}, action {action_normalizer.dim}) "
                                    f"do not match the configuration (obs_dim {config.obs_dim}, "
                                    f"action_dim {config.action_dim})")
    return PolicyWeights(config, unet_state, obs_normalizer, action_normalizer, metadata)


def _load_payload(path: Path):
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(path, f"not a readable torch zip checkpoint ({err}); the file may be truncated or "
                                    "corrupt (the legacy non-zip torch format is not supported)") from None
    tails = {name.split("/", 1)[-1] for name in records}
    if "constants.pkl" in tails:
        raise CheckpointError(path, "this is a TorchScript archive, not a Diffusion Policy workspace checkpoint")
    if "data.pkl" not in tails:
        raise CheckpointError(path, "the zip archive has no data.pkl (not a torch.save checkpoint)")
    try:
        with open(path, "rb") as handle:  # a file object, so that torch.load takes no path-based shortcut
            return torch.load(handle, map_location="cpu", weights_only=False, mmap=False,
                              pickle_module=RESTRICTED_PICKLE)
    except RefusedGlobal as err:
        raise CheckpointError(path, str(err)) from None
    except Exception as err:  # torch and pickle report corruption with many exception types
        raise CheckpointError(path, f"cannot unpickle the checkpoint ({type(err).__name__}: {err}); "
                                    "the file may be truncated or corrupt") from None


# --------------------------------------------------------------------------------------------
# omegaconf placeholders -> plain data.

_MISSING = "???"


def _to_plain(value, path: Path, depth: int = 0, active: frozenset = frozenset()):
    if depth > MAX_CONFIG_DEPTH:
        raise CheckpointError(path, "cfg is nested too deeply")
    marker = id(value)
    if marker in active:
        raise CheckpointError(path, "cfg contains a reference cycle")
    inner = active | {marker}
    if isinstance(value, (DictConfigPlaceholder, ListConfigPlaceholder)):
        state = value.pickled_state
        content = state.get("_content") if isinstance(state, dict) else None
        return _to_plain(content, path, depth + 1, inner)
    if isinstance(value, NodePlaceholder):
        state = value.pickled_state
        return _to_plain(state.get("_val") if isinstance(state, dict) else None, path, depth + 1, inner)
    if isinstance(value, Placeholder):
        return None
    if isinstance(value, TypeRef):
        return value.name
    if isinstance(value, dict):
        return {(key if isinstance(key, (str, int, float, bool)) else str(key)): _to_plain(item, path, depth + 1, inner)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(item, path, depth + 1, inner) for item in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return None


_ABSENT = object()
_INTERPOLATION = re.compile(r"^\$\{\s*([A-Za-z_][\w\-]*(?:\.[A-Za-z_0-9][\w\-]*)*)\s*\}$")


class _Lookup:
    """Dotted access into the plain cfg, following simple absolute `${a.b}` interpolations."""

    def __init__(self, root: dict):
        self.root = root

    def get(self, dotted: str, _depth: int = 0):
        node: Any = self.root
        for part in dotted.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _ABSENT
        return self.resolve(node, _depth)

    def resolve(self, value, _depth: int = 0):
        if isinstance(value, str):
            if value == _MISSING:
                return _ABSENT
            match = _INTERPOLATION.match(value)
            if match:
                return self.get(match.group(1), _depth + 1) if _depth < 16 else _ABSENT
            if "${" in value:
                return _ABSENT  # a resolver (e.g. ${eval:...}) this reader does not evaluate
        return value

    def first(self, *dotted: str):
        """(value, key) for the first key present, else (_ABSENT, None)."""
        for key in dotted:
            value = self.get(key)
            if value is not _ABSENT:
                return value, key
        return _ABSENT, None


# --------------------------------------------------------------------------------------------
# Configuration.


def _policy_config(path: Path, cfg: dict, unet_state: dict[str, torch.Tensor],
                   obs_normalizer: AffineNormalizer) -> tuple[PolicyConfig, dict[str, Any]]:
    lookup = _Lookup(cfg)
    warnings: list[str] = []

    policy_target = lookup.get("policy._target_")
    policy_class = policy_target.rsplit(".", 1)[-1] if isinstance(policy_target, str) else ""
    if any(word in policy_class for word in ("Image", "Hybrid", "Video", "Transformer", "BET", "Ibc", "Robomimic")):
        raise CheckpointError(path, f"policy class {policy_target} is not supported; only the low-dim U-Net policy "
                                    "(DiffusionUnetLowdimPolicy) is")
    model_target = lookup.get("policy.model._target_")
    if isinstance(model_target, str) and not model_target.endswith("ConditionalUnet1D"):
        raise CheckpointError(path, f"model class {model_target} is not supported; only ConditionalUnet1D is")

    def value_of(kind, *keys, default=_ABSENT, fallback=_ABSENT):
        value, found = lookup.first(*keys)
        if value is _ABSENT or value is None:
            value = fallback if fallback is not _ABSENT else default
            found = None
        if value is _ABSENT:
            raise CheckpointError(path, f"cfg lacks {' / '.join('cfg.' + k for k in keys)} and it cannot be inferred "
                                        "from the weights")
        if value is None:
            return None
        try:
            if kind is bool:
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered not in ("true", "false"):
                        raise ValueError(value)
                    return lowered == "true"
                return bool(value)
            if kind is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                return int(value)
            return kind(value)
        except (TypeError, ValueError):
            raise CheckpointError(path, f"cfg.{found or keys[0]} = {value!r} is not a valid {kind.__name__}") from None

    for key, required in (("obs_as_global_cond", True), ("obs_as_local_cond", False),
                          ("pred_action_steps_only", False)):
        value = value_of(bool, f"policy.{key}", key, default=None)
        if value is not None and value != required:
            raise CheckpointError(path, f"cfg sets {key}={value}; only the low-dim policy with the observation as a "
                                        "global condition (obs_as_global_cond true, obs_as_local_cond and "
                                        "pred_action_steps_only false) is supported")
    inferred = _infer_unet(path, unet_state)
    if not inferred["global_cond_dim"]:
        raise CheckpointError(path, "the U-Net has no global condition; only the global-condition low-dim policy "
                                    "is supported")

    down_dims_raw, down_key = lookup.first("policy.model.down_dims")
    if down_dims_raw is _ABSENT or down_dims_raw is None:
        down_dims = inferred["down_dims"]
    else:
        if not isinstance(down_dims_raw, list) or not down_dims_raw:
            raise CheckpointError(path, f"cfg.{down_key} = {down_dims_raw!r} is not a list of channel counts")
        try:
            down_dims = tuple(int(lookup.resolve(d)) for d in down_dims_raw)
        except (TypeError, ValueError):
            raise CheckpointError(path, f"cfg.{down_key} = {down_dims_raw!r} is not a list of integers") from None

    action_dim = value_of(int, "policy.action_dim", "action_dim", "policy.model.input_dim",
                          fallback=inferred["input_dim"])
    input_dim = value_of(int, "policy.model.input_dim", fallback=action_dim)
    obs_dim = value_of(int, "policy.obs_dim", "obs_dim", fallback=obs_normalizer.dim)
    global_cond_dim = value_of(int, "policy.model.global_cond_dim", fallback=inferred["global_cond_dim"])
    n_obs_steps_fallback = global_cond_dim // obs_dim if obs_dim and global_cond_dim % obs_dim == 0 else _ABSENT
    n_obs_steps = value_of(int, "policy.n_obs_steps", "n_obs_steps", fallback=n_obs_steps_fallback)
    unet = dict(
        input_dim=input_dim,
        global_cond_dim=global_cond_dim,
        diffusion_step_embed_dim=value_of(int, "policy.model.diffusion_step_embed_dim",
                                          fallback=inferred["diffusion_step_embed_dim"]),
        down_dims=down_dims,
        kernel_size=value_of(int, "policy.model.kernel_size", fallback=inferred["kernel_size"]),
        # GroupNorm weights do not reveal the group count; 8 is ConditionalUnet1D's default.
        n_groups=value_of(int, "policy.model.n_groups", default=8),
        cond_predict_scale=value_of(bool, "policy.model.cond_predict_scale", fallback=inferred["cond_predict_scale"]),
    )
    scheduler, scheduler_warnings = _scheduler_config(path, lookup, value_of)
    warnings += scheduler_warnings

    oa_step_convention = value_of(bool, "policy.oa_step_convention", default=None)
    if oa_step_convention is False or (oa_step_convention is None and policy_class == "DiffusionUnetLowdimPolicy"):
        # DiffusionUnetLowdimPolicy defaults to oa_step_convention=False; the Push-T configs set it true.
        warnings.append("cfg.policy.oa_step_convention is false or absent: the original executes actions from "
                        "step n_obs_steps, "
                        "this package from step n_obs_steps - 1")
    try:
        config = PolicyConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            horizon=value_of(int, "policy.horizon", "horizon"),
            n_obs_steps=n_obs_steps,
            n_action_steps=value_of(int, "policy.n_action_steps", "n_action_steps"),
            unet=UnetConfig(**unet),
            scheduler=scheduler,
        )
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"invalid policy configuration: {err}") from None
    metadata: dict[str, Any] = {"source_format": "diffusion_policy"}
    for key in ("name", "task_name", "exp_name"):
        value = lookup.get(key)
        if isinstance(value, (str, int, float)):
            metadata[key] = value
    if isinstance(policy_target, str):
        metadata["policy_target"] = policy_target
    if warnings:
        metadata["warnings"] = warnings
    return config, metadata


_SCHEDULER_CLASSES = {
    "DDPMScheduler": "ddpm",
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpmsolver",
}


def _scheduler_config(path: Path, lookup: _Lookup, value_of) -> tuple[SchedulerConfig, list[str]]:
    """The noise scheduler of cfg.policy.noise_scheduler; absent keys take diffusers' constructor defaults."""
    warnings: list[str] = []
    target = lookup.get("policy.noise_scheduler._target_")
    class_name = target.rsplit(".", 1)[-1] if isinstance(target, str) else "DDPMScheduler"
    if class_name not in _SCHEDULER_CLASSES:
        raise CheckpointError(path, f"noise scheduler {target} is not supported (expected one of "
                                    f"{', '.join(_SCHEDULER_CLASSES)})")
    name = _SCHEDULER_CLASSES[class_name]
    ns = "policy.noise_scheduler."
    prediction_type = lookup.get(ns + "prediction_type")
    if prediction_type is _ABSENT or prediction_type is None:
        predict_epsilon = lookup.get(ns + "predict_epsilon")  # diffusers < 0.11 spelling
        prediction_type = "sample" if predict_epsilon is False else "epsilon"
    num_train_timesteps = value_of(int, ns + "num_train_timesteps", default=1000)
    options = dict(
        name=name,
        num_train_timesteps=num_train_timesteps,
        num_inference_steps=value_of(int, "policy.num_inference_steps", default=num_train_timesteps),
        beta_start=value_of(float, ns + "beta_start", default=0.0001),
        beta_end=value_of(float, ns + "beta_end", default=0.02),
        beta_schedule=value_of(str, ns + "beta_schedule", default="linear"),
        clip_sample=value_of(bool, ns + "clip_sample", default=True),
        clip_sample_range=value_of(float, ns + "clip_sample_range", default=1.0),
        prediction_type=str(prediction_type),
        set_alpha_to_one=value_of(bool, ns + "set_alpha_to_one", default=True),
        steps_offset=value_of(int, ns + "steps_offset", default=0),
    )
    variance_type = lookup.get(ns + "variance_type")
    if name == "ddpm" and isinstance(variance_type, str) and variance_type != "fixed_small":
        warnings.append(f"cfg noise_scheduler.variance_type is {variance_type!r}; this package samples DDPM with "
                        "'fixed_small'")
    try:
        return SchedulerConfig(**options), warnings
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(path, f"invalid noise scheduler configuration: {err}") from None


def _infer_unet(path: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ConditionalUnet1D constructor options read off the weight shapes."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(path, f"the weights lack model.{key}; not a Diffusion Policy ConditionalUnet1D")
        return tuple(state[key].shape)

    step_shape = shape("diffusion_step_encoder.3.weight")
    levels = []
    while f"down_modules.{len(levels)}.0.blocks.0.block.0.weight" in state:
        levels.append(shape(f"down_modules.{len(levels)}.0.blocks.0.block.0.weight"))
    if not levels or len(step_shape) != 2 or any(len(s) != 3 for s in levels):
        raise CheckpointError(path, "the weights do not have the layout of Diffusion Policy's ConditionalUnet1D")
    film_shape = shape("down_modules.0.0.cond_encoder.1.weight")
    step_dim = step_shape[0]
    down_dims = tuple(s[0] for s in levels)
    return dict(
        input_dim=levels[0][1],
        diffusion_step_embed_dim=step_dim,
        down_dims=down_dims,
        kernel_size=levels[0][2],
        global_cond_dim=film_shape[1] - step_dim,
        cond_predict_scale=film_shape[0] == 2 * down_dims[0],
    )


def _normalizer(path: Path, state: dict[str, torch.Tensor], field: str) -> AffineNormalizer:
    keys = {name: f"{NORMALIZER_PREFIX}{field}.{name}" for name in ("scale", "offset")}
    for key in keys.values():
        if key not in state:
            raise CheckpointError(path, f"the policy state dict lacks {key} (the {field} normaliser)")
    try:
        return AffineNormalizer(state[keys["scale"]].detach().float().flatten(),
                                state[keys["offset"]].detach().float().flatten())
    except ValueError as err:
        raise CheckpointError(path, f"invalid {field} normaliser: {err}") from None
