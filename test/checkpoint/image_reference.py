"""Independent references of the two image-conditioned Diffusion Policies, and writers of their files.

Written here from the structure of the original projects' public code, not from this package's
vision module or key mapping:
- torchvision's ResNet-18 (conv1, bn1, relu, maxpool, layer1..4, avgpool, fc; BasicBlock), with
  `width` for small tests; both originals keep `list(resnet.children())[:-2]` and replace every
  BatchNorm2d by GroupNorm(num_features // 16, num_features);
- Diffusion Policy's hybrid image policy: robomimic's ObservationEncoder (obs_nets / obs_randomizers
  per key in shape_meta order, ReLU feature activation after each image net), VisualCore (nets =
  ResNet18Conv, SpatialSoftmax with pos_x / pos_y / temperature buffers, Flatten, Linear), Diffusion
  Policy's eval-time centre CropRandomizer and LinearNormalizer, and `predict_action`;
- LeRobot's DiffusionRgbEncoder (backbone, pool with pos_grid, out, ReLU; centre crop), the
  global condition [state, cameras, environment state] and the buffer normalisers.
The U-Net is the package's ConditionalUnet1D called the plain (un-hoisted) way: its names and
arithmetic are checked against Diffusion Policy's elsewhere (test/core/test_model.py).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from safetensors.torch import save_file
from torch import nn

from paradigms_policy.model import ConditionalUnet1D


# --------------------------------------------------------------------------------------------
# torchvision-style ResNet-18 and the GroupNorm swap.


class TvBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TvResNet18(nn.Module):
    def __init__(self, width=64, in_channels=3, num_classes=1000):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(width * 2, 2)
        self.layer3 = self._make_layer(width * 4, 2)
        self.layer4 = self._make_layer(width * 8, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)

    def _make_layer(self, planes, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [TvBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers.append(TvBasicBlock(planes, planes))
        return nn.Sequential(*layers)


def replace_batchnorm(root: nn.Module) -> nn.Module:
    """Every BatchNorm2d -> GroupNorm(C // 16, C), as Diffusion Policy's replace_submodules does."""
    for name, child in list(root.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(root, name, nn.GroupNorm(num_groups=child.num_features // 16, num_channels=child.num_features))
        else:
            replace_batchnorm(child)
    return root


def gn_trunk(width, in_channels=3) -> nn.Sequential:
    return replace_batchnorm(nn.Sequential(*list(TvResNet18(width, in_channels).children())[:-2]))


def tv_center_crop(x, height, width):
    """torchvision.transforms.functional.center_crop for a crop inside the image."""
    image_height, image_width = x.shape[-2:]
    top = int(round((image_height - height) / 2.0))
    left = int(round((image_width - width) / 2.0))
    return x[..., top:top + height, left:left + width]


def randomise(module: nn.Module, seed: int, scale: float = 0.2) -> None:
    """Distinct values for every parameter (GroupNorm affine too), so a mis-mapped key changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * scale
            parameter.copy_(1.0 + noise if name.endswith("weight") and parameter.dim() == 1 else noise)


# --------------------------------------------------------------------------------------------
# Diffusion Policy's hybrid image policy (robomimic encoder).


class RmResNet18Conv(nn.Module):
    def __init__(self, width, in_channels=3):
        super().__init__()
        self.nets = gn_trunk(width, in_channels)

    def forward(self, x):
        return self.nets(x)


class RmSpatialSoftmax(nn.Module):
    def __init__(self, input_shape, num_kp=32, temperature=1.0):
        super().__init__()
        self._in_c, self._in_h, self._in_w = input_shape
        self.nets = nn.Conv2d(self._in_c, num_kp, kernel_size=1)
        self._num_kp = num_kp
        self.register_buffer("temperature", torch.ones(1) * temperature)
        pos_x, pos_y = np.meshgrid(np.linspace(-1., 1., self._in_w), np.linspace(-1., 1., self._in_h))
        self.register_buffer("pos_x", torch.from_numpy(pos_x.reshape(1, self._in_h * self._in_w)).float())
        self.register_buffer("pos_y", torch.from_numpy(pos_y.reshape(1, self._in_h * self._in_w)).float())

    def forward(self, feature):
        feature = self.nets(feature)
        feature = feature.reshape(-1, self._in_h * self._in_w)
        attention = F.softmax(feature / self.temperature, dim=-1)
        expected_x = torch.sum(self.pos_x * attention, dim=1, keepdim=True)
        expected_y = torch.sum(self.pos_y * attention, dim=1, keepdim=True)
        return torch.cat([expected_x, expected_y], 1).view(-1, self._num_kp, 2)


def trunk_side(side):
    side = (side - 1) // 2 + 1  # conv1 7x7 stride 2 pad 3
    for _ in range(4):
        side = (side - 1) // 2 + 1
    return side


class RmVisualCore(nn.Module):
    def __init__(self, shape, crop, width, num_kp, feature_dim):
        super().__init__()
        side_h, side_w = crop if crop is not None else shape[1:]
        self.nets = nn.Sequential(RmResNet18Conv(width, shape[0]),
                                  RmSpatialSoftmax((width * 8, trunk_side(side_h), trunk_side(side_w)), num_kp),
                                  nn.Flatten(start_dim=1, end_dim=-1), nn.Linear(num_kp * 2, feature_dim))

    def forward(self, x):
        return self.nets(x)


class DpCropRandomizer(nn.Module):
    """Diffusion Policy's CropRandomizer at evaluation: a centre crop in, identity out."""

    def __init__(self, crop):
        super().__init__()
        self.crop = crop

    def forward_in(self, x):
        return tv_center_crop(x, *self.crop)

    def forward_out(self, x):
        return x


class RmObservationEncoder(nn.Module):
    def __init__(self, shape_meta_obs: "OrderedDict[str, dict]", crop, width, num_kp, feature_dim):
        super().__init__()
        self.obs_shapes = OrderedDict((key, meta["shape"]) for key, meta in shape_meta_obs.items())
        self.obs_nets = nn.ModuleDict()
        self.obs_randomizers = nn.ModuleDict()
        for key, meta in shape_meta_obs.items():
            image = meta.get("type") == "rgb"
            self.obs_nets[key] = RmVisualCore(meta["shape"], crop, width, num_kp, feature_dim) if image else None
            self.obs_randomizers[key] = DpCropRandomizer(crop) if image and crop is not None else None
        self.activation = nn.ReLU()

    def forward(self, obs_dict):
        feats = []
        for k in self.obs_shapes:
            x = obs_dict[k]
            if self.obs_randomizers[k] is not None:
                x = self.obs_randomizers[k].forward_in(x)
            if self.obs_nets[k] is not None:
                x = self.activation(self.obs_nets[k](x))
            if self.obs_randomizers[k] is not None:
                x = self.obs_randomizers[k].forward_out(x)
            feats.append(torch.flatten(x, start_dim=1))
        return torch.cat(feats, dim=-1)


class DpHybridReference:
    """DiffusionUnetHybridImagePolicy.predict_action at evaluation, with a DDIM noise scheduler."""

    def __init__(self, shape_meta: dict, crop=(84, 84), width=16, num_kp=8, feature_dim=12, horizon=16,
                 n_obs_steps=2, n_action_steps=8, down_dims=(16, 32), step_dim=16, num_inference_steps=8, seed=0,
                 randomise_unet=True):
        self.shape_meta, self.crop = shape_meta, crop
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.num_inference_steps, self.step_dim, self.down_dims = num_inference_steps, step_dim, down_dims
        self.obs_encoder = RmObservationEncoder(shape_meta["obs"], crop, width, num_kp, feature_dim).eval()
        randomise(self.obs_encoder, seed)
        obs_feature_dim = sum(feature_dim if m.get("type") == "rgb" else m["shape"][0]
                              for m in shape_meta["obs"].values())
        self.action_dim = shape_meta["action"]["shape"][0]
        self.model = ConditionalUnet1D(input_dim=self.action_dim, global_cond_dim=obs_feature_dim * n_obs_steps,
                                       diffusion_step_embed_dim=step_dim, down_dims=down_dims, kernel_size=5,
                                       n_groups=8, cond_predict_scale=True).eval()
        if randomise_unet:  # (the full-size U-Net keeps torch's initialisation: 250M random draws are slow)
            randomise(self.model, seed + 1, 0.3)
        generator = torch.Generator().manual_seed(seed + 2)
        self.normalizer = {}  # key -> (scale, offset) as LinearNormalizer's params_dict
        for key, meta in shape_meta["obs"].items():
            if meta.get("type") == "rgb":  # get_image_range_normalizer: [0, 1] -> [-1, 1]
                self.normalizer[key] = (torch.tensor([2.0]), torch.tensor([-1.0]))
            else:
                self.normalizer[key] = (torch.rand(meta["shape"][0], generator=generator) * 0.05 + 0.003,
                                        torch.rand(meta["shape"][0], generator=generator) * 2 - 1)
        self.normalizer["action"] = (torch.rand(self.action_dim, generator=generator) * 0.05 + 0.003,
                                     torch.rand(self.action_dim, generator=generator) * 2 - 1)
        self.scheduler = DDIMScheduler(num_train_timesteps=100, beta_start=0.0001, beta_end=0.02,
                                       beta_schedule="squaredcos_cap_v2", clip_sample=True, set_alpha_to_one=True,
                                       steps_offset=0, prediction_type="epsilon")

    def _normalize(self, key, x):
        scale, offset = self.normalizer[key]
        shape = x.shape
        x = x.reshape(-1, scale.shape[0])
        return (x * scale + offset).reshape(shape)

    def _unnormalize(self, key, x):
        scale, offset = self.normalizer[key]
        shape = x.shape
        x = x.reshape(-1, scale.shape[0])
        return ((x - offset) / scale).reshape(shape)

    @torch.no_grad()
    def global_cond(self, obs_dict):
        nobs = {key: self._normalize(key, value) for key, value in obs_dict.items()}
        batch = next(iter(nobs.values())).shape[0]
        this_nobs = {k: v[:, :self.n_obs_steps].reshape(-1, *v.shape[2:]) for k, v in nobs.items()}
        return self.obs_encoder(this_nobs).reshape(batch, -1)

    @torch.no_grad()
    def predict_action(self, obs_dict, noise):
        global_cond = self.global_cond(obs_dict)
        trajectory = noise.clone()
        self.scheduler.set_timesteps(self.num_inference_steps)
        for t in self.scheduler.timesteps:
            model_output = self.model(trajectory, t, global_cond=global_cond)
            trajectory = self.scheduler.step(model_output, t, trajectory).prev_sample
        action_pred = self._unnormalize("action", trajectory)
        start = self.n_obs_steps - 1
        return action_pred[:, start:start + self.n_action_steps]

    def state_dict(self) -> OrderedDict:
        """The policy's state dict as the workspace stores it (obs_encoder.*, model.*, normalizer.*)."""
        state = OrderedDict()
        for key, value in self.obs_encoder.state_dict().items():
            state["obs_encoder." + key] = value.clone()
        for key, value in self.model.state_dict().items():
            state["model." + key] = value.clone()
        for key, (scale, offset) in self.normalizer.items():
            state[f"normalizer.params_dict.{key}.offset"] = offset.clone()
            state[f"normalizer.params_dict.{key}.scale"] = scale.clone()
            state[f"normalizer.params_dict.{key}.input_stats.min"] = torch.zeros_like(scale)
        state["_dummy_variable"] = torch.empty(0)
        return state

    def cfg_document(self, overrides: dict | None = None) -> dict:
        """train_diffusion_unet_hybrid_workspace's cfg (the parts the policy is built from)."""
        shape_meta = {"obs": {k: dict(v) for k, v in self.shape_meta["obs"].items()},
                      "action": dict(self.shape_meta["action"])}
        policy = {
            "_target_": "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy",
            "shape_meta": "${shape_meta}",
            "noise_scheduler": {"_target_": "diffusers.schedulers.scheduling_ddim.DDIMScheduler",
                                "num_train_timesteps": 100, "beta_start": 0.0001, "beta_end": 0.02,
                                "beta_schedule": "squaredcos_cap_v2", "clip_sample": True, "set_alpha_to_one": True,
                                "steps_offset": 0, "prediction_type": "epsilon"},
            "horizon": "${horizon}", "n_action_steps": "${n_action_steps}", "n_obs_steps": "${n_obs_steps}",
            "num_inference_steps": self.num_inference_steps, "obs_as_global_cond": "${obs_as_global_cond}",
            "crop_shape": list(self.crop) if self.crop is not None else None,
            "diffusion_step_embed_dim": self.step_dim, "down_dims": list(self.down_dims),
            "kernel_size": 5, "n_groups": 8, "cond_predict_scale": True, "obs_encoder_group_norm": True,
            "eval_fixed_crop": True,
        }
        document = {"name": "train_diffusion_unet_hybrid", "task_name": "pusht_image", "shape_meta": shape_meta,
                    "horizon": self.horizon, "n_obs_steps": self.n_obs_steps, "n_action_steps": self.n_action_steps,
                    "obs_as_global_cond": True, "policy": policy}
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(document.get(key), dict):
                document[key].update(value)
            else:
                document[key] = value
        return document


# --------------------------------------------------------------------------------------------
# LeRobot's DiffusionPolicy with images.


class LrSpatialSoftmax(nn.Module):
    def __init__(self, input_shape, num_kp):
        super().__init__()
        self._in_c, self._in_h, self._in_w = input_shape
        self.nets = nn.Conv2d(self._in_c, num_kp, kernel_size=1)
        self._out_c = num_kp
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, self._in_w), np.linspace(-1.0, 1.0, self._in_h))
        pos_x = torch.from_numpy(pos_x.reshape(self._in_h * self._in_w, 1)).float()
        pos_y = torch.from_numpy(pos_y.reshape(self._in_h * self._in_w, 1)).float()
        self.register_buffer("pos_grid", torch.cat([pos_x, pos_y], dim=1))

    def forward(self, features):
        features = self.nets(features)
        features = features.reshape(-1, self._in_h * self._in_w)
        attention = F.softmax(features, dim=-1)
        return (attention @ self.pos_grid).view(-1, self._out_c, 2)


class LrRgbEncoder(nn.Module):
    def __init__(self, image_shape, crop, width, num_kp):
        super().__init__()
        self.crop = crop
        self.backbone = gn_trunk(width, image_shape[0])
        side_h, side_w = crop if crop is not None else image_shape[1:]
        with torch.no_grad():
            feature_map = self.backbone(torch.zeros(1, image_shape[0], side_h, side_w)).shape[1:]
        self.pool = LrSpatialSoftmax(feature_map, num_kp)
        self.out = nn.Linear(num_kp * 2, num_kp * 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        if self.crop is not None:
            x = tv_center_crop(x, *self.crop)
        x = torch.flatten(self.pool(self.backbone(x)), start_dim=1)
        return self.relu(self.out(x))


class LeRobotReference:
    """LeRobot's DiffusionPolicy.select_action's chunk (buffer normalisers, DDIM), [state, cameras, env]."""

    def __init__(self, cameras=("observation.image",), separate=False, with_env=False, image_shape=(3, 96, 96),
                 crop=(84, 84), width=16, num_kp=8, state_dim=2, env_dim=4, action_dim=2, horizon=16,
                 n_obs_steps=2, n_action_steps=8, down_dims=(16, 32), step_dim=16, num_inference_steps=8, seed=10):
        self.cameras, self.separate, self.with_env = list(cameras), separate, with_env
        self.image_shape, self.crop, self.width, self.num_kp = image_shape, crop, width, num_kp
        self.state_dim, self.env_dim, self.action_dim = state_dim, env_dim, action_dim
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.down_dims, self.step_dim, self.num_inference_steps = down_dims, step_dim, num_inference_steps
        count = len(self.cameras) if separate else 1
        encoders = [LrRgbEncoder(image_shape, crop, width, num_kp).eval() for _ in range(count)]
        self.rgb_encoder = nn.ModuleList(encoders) if separate else encoders[0]
        randomise(self.rgb_encoder, seed)
        cond = state_dim + num_kp * 2 * len(self.cameras) + (env_dim if with_env else 0)
        self.unet = ConditionalUnet1D(input_dim=action_dim, global_cond_dim=cond * n_obs_steps,
                                      diffusion_step_embed_dim=step_dim, down_dims=down_dims, kernel_size=5,
                                      n_groups=8, cond_predict_scale=True).eval()
        randomise(self.unet, seed + 1, 0.3)
        g = torch.Generator().manual_seed(seed + 2)
        self.stats = {"observation.state": {"min": torch.rand(state_dim, generator=g) * 50,
                                            "max": 60 + torch.rand(state_dim, generator=g) * 400},
                      "action": {"min": torch.rand(action_dim, generator=g) * 50,
                                 "max": 60 + torch.rand(action_dim, generator=g) * 400}}
        if with_env:
            self.stats["observation.environment_state"] = {"min": torch.rand(env_dim, generator=g) * 5,
                                                           "max": 6 + torch.rand(env_dim, generator=g) * 40}
        for camera in self.cameras:
            self.stats[camera] = {"mean": torch.rand(3, 1, 1, generator=g) * 0.5 + 0.2,
                                  "std": torch.rand(3, 1, 1, generator=g) * 0.3 + 0.1}
        self.scheduler = DDIMScheduler(num_train_timesteps=100, beta_start=0.0001, beta_end=0.02,
                                       beta_schedule="squaredcos_cap_v2", clip_sample=True, clip_sample_range=1.0,
                                       prediction_type="epsilon")

    def _minmax(self, key, x):
        low, high = self.stats[key]["min"], self.stats[key]["max"]
        return (x - low) / (high - low + 1e-8) * 2 - 1

    @torch.no_grad()
    def global_cond(self, batch):
        state = self._minmax("observation.state", batch["observation.state"])
        images = torch.stack([(batch[k] - self.stats[k]["mean"]) / (self.stats[k]["std"] + 1e-8)
                              for k in self.cameras], dim=-4)  # (b, s, n, c, h, w)
        b, s = state.shape[:2]
        if self.separate:
            per_camera = images.permute(2, 0, 1, 3, 4, 5).reshape(len(self.cameras), b * s, *images.shape[3:])
            feats = torch.cat([enc(imgs) for enc, imgs in zip(self.rgb_encoder, per_camera)])  # ((n b s), d)
            feats = feats.reshape(len(self.cameras), b, s, -1).permute(1, 2, 0, 3).reshape(b, s, -1)
        else:
            feats = self.rgb_encoder(images.reshape(b * s * len(self.cameras), *images.shape[3:]))
            feats = feats.reshape(b, s, -1)
        parts = [state, feats]
        if self.with_env:
            parts.append(self._minmax("observation.environment_state", batch["observation.environment_state"]))
        return torch.cat(parts, dim=-1).flatten(start_dim=1)

    @torch.no_grad()
    def actions(self, batch, noise):
        global_cond = self.global_cond(batch)
        sample = noise.clone()
        self.scheduler.set_timesteps(self.num_inference_steps)
        for t in self.scheduler.timesteps:
            model_output = self.unet(sample, torch.full(sample.shape[:1], t, dtype=torch.long), global_cond=global_cond)
            sample = self.scheduler.step(model_output, t, sample).prev_sample
        low, high = self.stats["action"]["min"], self.stats["action"]["max"]
        actions = (sample + 1) / 2 * (high - low) + low
        start = self.n_obs_steps - 1
        return actions[:, start:start + self.n_action_steps]

    def config_document(self, **overrides) -> dict:
        inputs = {"observation.state": {"type": "STATE", "shape": [self.state_dim]}}
        inputs.update({k: {"type": "VISUAL", "shape": list(self.image_shape)} for k in self.cameras})
        if self.with_env:
            inputs["observation.environment_state"] = {"type": "ENV", "shape": [self.env_dim]}
        document = {
            "type": "diffusion", "n_obs_steps": self.n_obs_steps, "horizon": self.horizon,
            "n_action_steps": self.n_action_steps,
            "normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ENV": "MIN_MAX", "ACTION": "MIN_MAX"},
            "input_features": inputs, "output_features": {"action": {"type": "ACTION", "shape": [self.action_dim]}},
            "vision_backbone": "resnet18", "crop_shape": list(self.crop) if self.crop else None,
            "crop_is_random": True, "pretrained_backbone_weights": None, "use_group_norm": True,
            "spatial_softmax_num_keypoints": self.num_kp, "use_separate_rgb_encoder_per_camera": self.separate,
            "down_dims": list(self.down_dims), "kernel_size": 5, "n_groups": 8,
            "diffusion_step_embed_dim": self.step_dim, "use_film_scale_modulation": True,
            "noise_scheduler_type": "DDIM", "num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
            "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True,
            "clip_sample_range": 1.0, "num_inference_steps": self.num_inference_steps,
        }
        document.update(overrides)
        return document

    def write(self, directory: Path, to_lerobot_key, config: dict | None = None, drop=()) -> Path:
        """config.json and model.safetensors with LeRobot's names and its buffer normalisers."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config or self.config_document(), indent=2))
        tensors = {to_lerobot_key(k): v.clone().contiguous() for k, v in self.unet.state_dict().items()}
        tensors.update({"diffusion.rgb_encoder." + k: v.clone().contiguous()
                        for k, v in self.rgb_encoder.state_dict().items()})
        for feature, values in self.stats.items():
            modules = ["normalize_targets", "unnormalize_outputs"] if feature == "action" else ["normalize_inputs"]
            for stat, tensor in values.items():
                for module in modules:
                    tensors[f"{module}.buffer_{feature.replace('.', '_')}.{stat}"] = tensor.clone().contiguous()
        for key in drop:
            tensors = {k: v for k, v in tensors.items() if not k.startswith(key)}
        save_file(tensors, str(directory / "model.safetensors"))
        return directory
