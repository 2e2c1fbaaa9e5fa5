"""MoVA's frozen vision experts: one interface over several libraries, each a feature map on its own grid.

    raw pixels [B, 3, S, S] in [0, 1] --resize to the expert's input + its normalisation--> tower
        --> feature map [B, C, h, w] (--optional frozen conv "compress": C -> C', stride s-->)
        --bilinear resize to the base grid--> [B, G*G, C]                        (expert_tokens)

Kinds of `tower` spec (a plain dict inside MovaConfig.vision_experts):
    {"kind": "timm" | "hf" | "open_clip", ...}   the zoo's towers (zoo.multimodal.vision_towers): packaged
                                                 MobileNetV2 / EfficientNet-Lite0, any timm model, CLIP/SigLIP,
                                                 open_clip ViTs; "feature_layer" picks the stage (a low-level map
                                                 keeps colour that a late map loses)
    {"kind": "hf_vision", "config": {...}}       any transformers vision model with a patch grid (DINOv2, ViT,
                                                 SAM's image encoder); prefix tokens (CLS, registers) are dropped
    {"kind": "pix2struct", "config": {...}, "image_size": 720}   Pix2Struct / Deplot's encoder, fed a full grid
                                                 of flattened 16 x 16 patches with their row / column ids
    {"kind": "facenet_mtcnn", "image_size": 160, "weights": "packaged"}   the P-Net of facenet-pytorch's MTCNN
                                                 face detector (its 32-channel conv3 map)
    any kind + "compress": {"channels": C', "stride": s}   a conv after the tower (Vary's stride-2 conv,
                                                 Co-DETR / SAM's channel compression), frozen like the tower

Random init is for tests; the shipped model's experts use packaged weights ("weights" in a timm spec, or
"weights": "packaged" for MTCNN). Every expert is frozen: built with requires_grad False, kept in eval mode.
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from zoo.integrations.assets import WeightsPackage, WeightsPackageMissing
from zoo.multimodal.vision_towers import VisionTower, build_vision_tower

EXPERT_KINDS = ("timm", "hf", "open_clip", "hf_vision", "pix2struct", "facenet_mtcnn")
ZOO_TOWER_KINDS = ("timm", "hf", "open_clip")
MTCNN = WeightsPackage("facenet-pytorch", "facenet_pytorch", "2.6.0", "data/pnet.pt")


def square_side(num_tokens: int, what: str) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{what}: {num_tokens} tokens do not form a square grid")
    return side


def tokens_to_map(tokens: torch.Tensor, what: str) -> torch.Tensor:
    """[B, N, C] grid tokens (row-major) -> [B, C, s, s]."""
    side = square_side(tokens.shape[1], what)
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class ZooTowerExpert(nn.Module):
    """A zoo.multimodal.vision_towers tower; its tokens become a map."""

    def __init__(self, spec: Mapping, load_weights: bool):
        super().__init__()
        self.tower: VisionTower = build_vision_tower(spec, load_weights=load_weights)
        self.image_size, self.hidden_size = self.tower.image_size, self.tower.hidden_size
        self.image_mean, self.image_std = tuple(self.tower.image_mean), tuple(self.tower.image_std)
        self.what = f"vision tower {spec.get('kind')}:{spec.get('name') or spec.get('model') or 'config'}"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return tokens_to_map(self.tower(pixel_values), self.what)  # [B, C, h, w]


class HFVisionExpert(nn.Module):
    """Any transformers vision model built from a config dict: [B, C, h, w] outputs (SAM) as they are,
    [B, P + h*w, C] token outputs with the P prefix tokens (CLS, registers) dropped."""

    def __init__(self, config: Mapping, feature_layer: int | None = None, image_mean=(0.485, 0.456, 0.406),
                 image_std=(0.229, 0.224, 0.225)):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = dict(config)
        model_type = config.pop("model_type", None)
        try:
            self.config = AutoConfig.for_model(model_type, **config)
        except ValueError as error:
            raise ValueError(f"hf_vision expert: {error}") from None
        self.model = AutoModel.from_config(self.config)
        self.image_size = int(self.config.image_size)
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.feature_layer = feature_layer
        self.hidden_size = int(getattr(self.config, "output_channels", None) or self.config.hidden_size) \
            if model_type == "sam_vision_model" else int(self.config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, output_hidden_states=self.feature_layer is not None)
        features = out.last_hidden_state if self.feature_layer is None else out.hidden_states[self.feature_layer]
        if features.dim() == 4:
            return features  # [B, C, h, w]
        prefix = features.shape[1] - math.isqrt(features.shape[1]) ** 2
        return tokens_to_map(features[:, prefix:], f"hf_vision expert {self.config.model_type}")


class Pix2StructExpert(nn.Module):
    """Pix2Struct's encoder on the full grid of patches of a square image (no aspect-ratio packing)."""

    def __init__(self, config: Mapping, image_size: int = 720, patch_size: int = 16):
        super().__init__()
        from transformers import Pix2StructVisionConfig, Pix2StructVisionModel

        if image_size % patch_size:
            raise ValueError(f"pix2struct expert: image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size, self.image_size = patch_size, image_size
        self.side = image_size // patch_size
        config = {"patch_embed_hidden_size": 3 * patch_size * patch_size, "seq_len": self.side * self.side, **config}
        self.model = Pix2StructVisionModel(Pix2StructVisionConfig(**config))
        self.hidden_size = self.model.config.hidden_size
        self.image_mean = self.image_std = (0.5, 0.5, 0.5)

    def flattened_patches(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, s*s, 2 + 3*p*p]: 1-based row and column ids, then the patch (row-major, channels last)."""
        b, p, s = pixel_values.shape[0], self.patch_size, self.side
        patches = pixel_values.reshape(b, 3, s, p, s, p).permute(0, 2, 4, 3, 5, 1).reshape(b, s * s, p * p * 3)
        rows = torch.arange(1, s + 1, device=pixel_values.device, dtype=pixel_values.dtype).repeat_interleave(s)
        cols = torch.arange(1, s + 1, device=pixel_values.device, dtype=pixel_values.dtype).repeat(s)
        ids = torch.stack([rows, cols], dim=-1).expand(b, -1, -1)
        return torch.cat([ids, patches], dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.flattened_patches(pixel_values)
        mask = torch.ones(patches.shape[:2], device=patches.device, dtype=torch.long)
        tokens = self.model(flattened_patches=patches, attention_mask=mask).last_hidden_state  # [B, s*s, C]
        return tokens_to_map(tokens, "pix2struct expert")


class MTCNNPNetExpert(nn.Module):
    """facenet-pytorch's MTCNN P-Net (a face / non-face scanner, fully convolutional): its conv3 map, 32 channels.
    Layer names are facenet's, so its packaged pnet.pt loads as is."""

    def __init__(self, image_size: int = 160, weights: str | None = None, load_weights: bool = True):
        super().__init__()
        if weights not in (None, "packaged"):
            raise ValueError(f"facenet_mtcnn expert: weights must be 'packaged' or None (random), got {weights!r}")
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.image_size, self.hidden_size = image_size, 32
        # facenet's MTCNN feeds (pixel - 127.5) / 128: mean 0.5, std 0.5 on [0, 1] pixels (128/255 ~ 0.5)
        self.image_mean, self.image_std = (127.5 / 255,) * 3, (128 / 255,) * 3
        if weights == "packaged" and load_weights and not self.conv1.weight.is_meta:
            state = torch.load(mtcnn_pnet_path(), map_location="cpu", weights_only=True)
            head = {k for k in state if k.startswith("conv4")}  # the box / score heads: not features
            self.load_state_dict({k: v for k, v in state.items() if k not in head})

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(pixel_values)))
        return self.prelu3(self.conv3(self.prelu2(self.conv2(x))))  # [B, 32, h, w]


def mtcnn_pnet_path() -> Path:
    """facenet-pytorch's pnet.pt, located without importing the package (its __init__ pulls in more)."""
    spec = importlib.util.find_spec(MTCNN.module)
    if spec is None:
        raise WeightsPackageMissing(f"the facenet_mtcnn expert needs {MTCNN.distribution!r}; install it with "
                                    f"`{MTCNN.pip_command}`")
    return MTCNN.file()


def build_expert_tower(spec: Mapping, load_weights: bool = True) -> nn.Module:
    spec = dict(spec)
    compress = spec.pop("compress", None)
    kind = spec.get("kind")
    try:
        if kind in ZOO_TOWER_KINDS:
            tower = ZooTowerExpert(spec, load_weights)
        elif kind == "hf_vision":
            spec.pop("kind")
            tower = HFVisionExpert(**spec)
        elif kind == "pix2struct":
            spec.pop("kind")
            tower = Pix2StructExpert(**spec)
        elif kind == "facenet_mtcnn":
            spec.pop("kind")
            tower = MTCNNPNetExpert(load_weights=load_weights, **spec)
        else:
            raise ValueError(f"vision expert kind must be one of {EXPERT_KINDS}, got {kind!r}")
    except TypeError as error:  # unknown / missing spec keys
        raise ValueError(f"vision expert spec for kind {kind!r}: {error}") from None
    return VisionExpert(tower, compress)


class VisionExpert(nn.Module):
    """A frozen tower (+ optional compress conv): raw [0, 1] pixels at any size -> [B, C, h, w]."""

    def __init__(self, tower: nn.Module, compress: Mapping | None = None):
        super().__init__()
        self.tower = tower
        self.image_size = tower.image_size
        # plain tuples, not buffers: a non-persistent buffer is left uninitialised when from_pretrained builds on meta
        self.image_mean, self.image_std = tuple(tower.image_mean), tuple(tower.image_std)
        self.hidden_size = tower.hidden_size
        self.compress = None
        if compress is not None:
            if not isinstance(compress, Mapping) or set(compress) - {"channels", "stride"} or "channels" not in compress:
                raise ValueError(f"vision expert 'compress' must be {{'channels': int, 'stride': int}}, got {compress!r}")
            stride = compress.get("stride", 1)
            self.compress = nn.Conv2d(self.hidden_size, compress["channels"], 3, stride=stride, padding=1)
            self.hidden_size = compress["channels"]
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: BatchNorm statistics and dropout stay in eval mode

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw [0, 1] pixels -> this tower's input size and normalisation."""
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            # in fp32: torch's antialiased bilinear resize has no bf16 / fp16 kernel on the CPU
            pixels = F.interpolate(pixels.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                   antialias=True, align_corners=False).to(pixels.dtype)
        mean = torch.tensor(self.image_mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        features = self.tower(self.prepare(pixels).to(dtype))
        return features if self.compress is None else self.compress(features)  # [B, C, h, w]


def expert_tokens(feature_map: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, h, w] -> bilinear resize to the base grid -> [B, grid*grid, C] (the release resizes every map to 48 x 48)."""
    if feature_map.shape[-2:] != (grid, grid):
        feature_map = F.interpolate(feature_map.float(), size=(grid, grid), mode="bilinear", align_corners=False)
    return feature_map.flatten(2).transpose(1, 2)


__all__ = ["EXPERT_KINDS", "MTCNN", "VisionExpert", "build_expert_tower", "expert_tokens", "mtcnn_pnet_path"]
