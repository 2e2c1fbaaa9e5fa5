"""MoFMEImageProcessor: photos in any common form -> [B, 3, H, W] floats in [0, 1], and tiled restoration.

Input forms: PIL images, numpy arrays (H x W, H x W x 1/3/4; uint8 0..255 or float 0..1) and torch
tensors (C x H x W). Grayscale is repeated to RGB, RGBA / LA are composited over white (so
transparent regions become the white background a viewer shows). Anything else is refused with a
ValueError naming the shape.

Large images are restored in overlapping tiles (paper: 240 x 240 crops, overlapping at test time):
tiles start on the patch grid, so per-patch routing maps from different tiles line up; pixel outputs
are blended with weights that ramp linearly across the overlap, routing maps are averaged.
Limits: each side >= patch_size (a smaller image holds no patch), at most `max_image_pixels` pixels
(default 16 MP, i.e. 4096 x 4096).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

MAX_IMAGE_PIXELS = 4096 * 4096


def to_rgb_array(image) -> np.ndarray:
    """Any supported image -> float32 [H, W, 3] in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("RGBA") if "A" in image.mode or image.mode == "P" else image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        if image.dim() == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(f"unsupported image type {type(image).__name__}: give a PIL image, numpy array or torch tensor")
    if image.dtype == np.uint8:
        array = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        array = image.astype(np.float32)
        if array.size and (np.nanmax(array) > 1.0 + 1e-3 or np.nanmin(array) < -1e-3):
            raise ValueError(f"float images must hold values in [0, 1], got range [{array.min():.3g}, {array.max():.3g}]")
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}: use uint8 (0..255) or float (0..1)")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image must be H x W, or H x W x C with C in 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA); got shape {image.shape}")
    if array.shape[2] in (2, 4):  # composite over white
        alpha = array[:, :, -1:]
        array = array[:, :, :-1] * alpha + (1.0 - alpha)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.clip(array, 0.0, 1.0)


class MoFMEImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, patch_size: int = 8, tile_size: int = 240, tile_overlap: int = 32,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, **kwargs):
        super().__init__(**kwargs)
        if tile_size % patch_size or tile_overlap % patch_size or not 0 <= tile_overlap < tile_size:
            raise ValueError(f"tile_size ({tile_size}) and tile_overlap ({tile_overlap}) must be multiples of patch_size "
                             f"({patch_size}) with 0 <= tile_overlap < tile_size")
        self.patch_size = patch_size
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.max_image_pixels = max_image_pixels

    def check_size(self, height: int, width: int) -> None:
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"image is {width}x{height} pixels, smaller than one {self.patch_size}x{self.patch_size} patch")
        if height * width > self.max_image_pixels:
            raise ValueError(f"image is {width}x{height} = {height * width / 1e6:.1f} MP, above the limit of "
                             f"{self.max_image_pixels / 1e6:.1f} MP; downscale it first")

    def pad(self, array: np.ndarray) -> np.ndarray:
        """[H, W, 3] -> padded (mirror) so both sides are multiples of patch_size."""
        height, width = array.shape[:2]
        extra = (-height % self.patch_size, -width % self.patch_size)
        return np.pad(array, ((0, extra[0]), (0, extra[1]), (0, 0)), mode="symmetric")

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """One image or a list of same-size images -> pixel_values [B, 3, H', W'] (padded), original_sizes [B, 2]."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        arrays = [to_rgb_array(image) for image in images]
        sizes = {a.shape[:2] for a in arrays}
        if len(sizes) != 1:
            raise ValueError(f"a batch needs images of one size, got sizes {sorted(sizes)}; process them one by one")
        self.check_size(*arrays[0].shape[:2])
        pixels = np.stack([self.pad(a).transpose(2, 0, 1) for a in arrays])
        data = {"pixel_values": pixels, "original_sizes": np.array([a.shape[:2] for a in arrays])}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def tile_starts(self, length: int) -> list[int]:
        if length <= self.tile_size:
            return [0]
        stride = self.tile_size - self.tile_overlap
        starts = list(range(0, length - self.tile_size, stride))
        return starts + [length - self.tile_size]

    def blend_window(self, height: int, width: int) -> np.ndarray:
        """[h, w] weights ramping linearly over the overlap, so seams fade instead of jumping."""
        ramp = max(self.tile_overlap, 1)

        def axis(n):
            position = np.arange(n, dtype=np.float32)
            return np.minimum(1.0, np.minimum(position + 1, n - position) / ramp)

        return axis(height)[:, None] * axis(width)[None, :]


@dataclass
class Restoration:
    image: np.ndarray  # [H, W, 3] float in [0, 1]
    routing_weights: np.ndarray | None  # [H/p, W/p, E] combine weights (last MoE layer), averaged over tiles
    uncertainty: np.ndarray | None  # [H/p, W/p] UaR per-patch uncertainty (last MoE layer)

    @property
    def dominant_expert(self) -> np.ndarray | None:  # [H/p, W/p]
        return None if self.routing_weights is None else self.routing_weights.argmax(-1)


@torch.no_grad()
def restore_image(model, processor: MoFMEImageProcessor, image, tiles_per_batch: int = 4, layer: int = -1) -> Restoration:
    """Restore one image of any allowed size by overlapping tiles; returns pixels + per-patch routing maps.
    Put the model in eval mode first: in training mode the UaR uses each tile batch's own statistics."""
    if model.config.patch_size != processor.patch_size:
        raise ValueError(f"processor patch_size ({processor.patch_size}) != model patch_size ({model.config.patch_size})")
    array = to_rgb_array(image)
    height, width = array.shape[:2]
    processor.check_size(height, width)
    padded = processor.pad(array)
    full_h, full_w = padded.shape[:2]
    p = processor.patch_size
    boxes = [(y, x) for y in processor.tile_starts(full_h) for x in processor.tile_starts(full_w)]
    tile_h, tile_w = min(full_h, processor.tile_size), min(full_w, processor.tile_size)
    window = processor.blend_window(tile_h, tile_w)[:, :, None]
    out = np.zeros_like(padded)
    weight = np.zeros((full_h, full_w, 1), np.float32)
    routing = uncertainty = None
    hits = np.zeros((full_h // p, full_w // p, 1), np.float32)
    model_dtype = next(model.parameters()).dtype
    for i in range(0, len(boxes), tiles_per_batch):
        chunk = boxes[i:i + tiles_per_batch]
        pixels = torch.from_numpy(np.stack([padded[y:y + tile_h, x:x + tile_w].transpose(2, 0, 1) for y, x in chunk]))
        result = model(pixel_values=pixels.to(model_dtype), output_router_logits=True)
        restored = result.reconstruction.float().permute(0, 2, 3, 1).numpy()
        weights = result.routing_weights[layer].float().numpy().reshape(len(chunk), tile_h // p, tile_w // p, -1)
        if routing is None:
            routing = np.zeros((full_h // p, full_w // p, weights.shape[-1]), np.float32)
        has_uncertainty = result.routing_uncertainty is not None
        if has_uncertainty and uncertainty is None:
            uncertainty = np.zeros((full_h // p, full_w // p, 1), np.float32)
        for j, (y, x) in enumerate(chunk):
            out[y:y + tile_h, x:x + tile_w] += restored[j] * window
            weight[y:y + tile_h, x:x + tile_w] += window
            py, px, gh, gw = y // p, x // p, tile_h // p, tile_w // p
            routing[py:py + gh, px:px + gw] += weights[j]
            hits[py:py + gh, px:px + gw] += 1
            if has_uncertainty:
                u = result.routing_uncertainty[layer][j].float().numpy().reshape(gh, gw, 1)
                uncertainty[py:py + gh, px:px + gw] += u
    image_out = (out / weight)[:height, :width]
    rows, cols = -(-height // p), -(-width // p)  # patches that touch the real image
    routing = (routing / hits)[:rows, :cols]
    uncertainty = None if uncertainty is None else (uncertainty / hits)[:rows, :cols, 0]
    return Restoration(np.clip(image_out, 0.0, 1.0), routing, uncertainty)


__all__ = ["MAX_IMAGE_PIXELS", "MoFMEImageProcessor", "Restoration", "restore_image", "to_rgb_array"]
