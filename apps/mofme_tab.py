"""Gallery tab: all-weather restoration with MoFME (feature-modulated experts + uncertainty-aware router).

Pick a held-out sample photo or upload one, add rain / snow / haze / raindrops at a chosen severity
(or tick "already degraded" for a real bad-weather photo), and see degraded and restored side by side,
with PSNR/SSIM when a clean reference exists (always, unless the upload was already degraded), plus
two per-patch maps from the last MoE layer: which expert gets the largest combine weight, and the
router's uncertainty (spread of its routing probabilities over the MC-dropout ensemble).

The shipped small weights (models/mofme/trained/small-fme, trained by `zoo train mofme --recipe small`)
load on first use. Images of any size up to MAX_PIXELS are restored in overlapping 240 x 240 tiles;
grayscale / RGBA uploads are converted to RGB; smaller than one 8 x 8 patch or larger than
MAX_PIXELS is refused with a message. Uploads reach the handler as files (gradio does not decode them):
the size is read from the file header, so an oversized photo is refused before its pixels are decoded.
"""
from __future__ import annotations

import threading

import gradio as gr
import numpy as np

from .upload_limits import check_image_file, is_file, limits_markdown

TITLE = "MoFME all-weather restoration"
MAX_PIXELS = 2048 * 2048  # tab limit (the processor itself accepts up to 16 MP)
EFFECTS = {"Rain streaks": "rain", "Snow": "snow", "Haze": "haze", "Raindrops on the lens": "raindrop"}
# 16 distinguishable colours for expert ids (tab20 without the pale half)
PALETTE = (np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
                     [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120],
                     [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148]], np.float32) / 255.0)

_state: dict[str, object] = {}
_lock = threading.Lock()


def load_model():
    """(model, processor) from the shipped weights, loaded once."""
    with _lock:
        if "model" not in _state:
            from transformers import AutoImageProcessor, AutoModelForImageToImage

            from zoo.pipelines.evaluate_mofme import find_recipe, shipped_weights_dir

            folder = shipped_weights_dir() / f"{find_recipe(shipped_weights_dir())}-fme"
            processor = AutoImageProcessor.from_pretrained(folder)
            processor.max_image_pixels = MAX_PIXELS
            _state.update(model=AutoModelForImageToImage.from_pretrained(folder).eval(), processor=processor)
    return _state["model"], _state["processor"]


def sample_names() -> list[str]:
    from zoo.pipelines.photos import TEST_PHOTOS

    return list(TEST_PHOTOS)


def patch_map(values: np.ndarray, shape: tuple[int, int], patch: int) -> np.ndarray:
    """[rows, cols, 3] per-patch colours -> [H, W, 3] image (nearest), cropped to the photo."""
    return np.repeat(np.repeat(values, patch, axis=0), patch, axis=1)[: shape[0], : shape[1]]


def expert_map(dominant: np.ndarray, background: np.ndarray, patch: int) -> np.ndarray:
    colours = patch_map(PALETTE[dominant % len(PALETTE)], background.shape[:2], patch)
    return 0.45 * background + 0.55 * colours


def uncertainty_map(uncertainty: np.ndarray, shape: tuple[int, int], patch: int) -> tuple[np.ndarray, float]:
    from matplotlib import colormaps

    top = float(uncertainty.max()) or 1.0
    return patch_map(colormaps["magma"](uncertainty / top)[..., :3].astype(np.float32), shape, patch), top


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def read_upload(upload) -> np.ndarray:
    """An uploaded file (checked against MAX_PIXELS from its header, then decoded) or an array -> [H, W, 3] float."""
    from PIL import Image, ImageOps

    from zoo.models.mofme.processing_mofme import to_rgb_array

    if not is_file(upload):
        return to_rgb_array(upload)
    check_image_file(upload, MAX_PIXELS, "the uploaded photo")
    try:
        with Image.open(upload) as image:
            return to_rgb_array(ImageOps.exif_transpose(image))  # camera photos: as the browser showed them
    except OSError as error:  # a header that reads but pixel data that does not (truncated file)
        raise ValueError(f"the uploaded photo cannot be decoded ({error})") from None


def run_restoration(upload, sample: str | None, effect: str, severity: float, seed: int, already_degraded: bool):
    """-> degraded, restored, expert map, uncertainty map ([H, W, 3] uint8) and a markdown report.
    `upload`: a file path (what the tab passes) or an image array. Raises ValueError / FileNotFoundError
    with a message for the user."""
    from zoo.models.mofme import restore_image
    from zoo.pipelines.evaluate_mofme import psnr, ssim
    from zoo.pipelines.photos import load_photo
    from zoo.pipelines.weather import degrade

    image = read_upload(upload) if upload is not None else None  # refused before the model loads
    model, processor = load_model()
    if image is not None:
        source = "your upload"
    elif sample:
        image = load_photo(sample).copy()
        source = f"sample '{sample}' (held out from training)"
    else:
        raise ValueError("upload a photo or pick a sample")
    processor.check_size(*image.shape[:2])
    if upload is not None and already_degraded:
        clean, degraded, how = None, image, "as uploaded (already degraded)"
    else:
        if effect not in EFFECTS:
            raise ValueError(f"unknown weather effect {effect!r}; choose one of {list(EFFECTS)}")
        clean, degraded = image, degrade(image, EFFECTS[effect], float(severity), seed=int(seed))
        how = f"{effect.lower()}, severity {float(severity):.2f}, seed {int(seed)}"
    result = restore_image(model, processor, degraded)
    patch = processor.patch_size
    lines = [f"**Input:** {source}, {image.shape[1]}x{image.shape[0]} px; degradation: {how}."]
    if clean is not None and np.array_equal(clean, degraded):
        lines.append("Severity 0: the input is the clean photo, so PSNR of the input is infinite; "
                     f"restored vs clean: {psnr(clean, result.image):.2f} dB.")
    elif clean is not None:
        lines.append(f"**PSNR / SSIM vs clean:** degraded {psnr(clean, degraded):.2f} dB / {ssim(clean, degraded):.3f} → "
                     f"restored **{psnr(clean, result.image):.2f} dB** / {ssim(clean, result.image):.3f}")
    else:
        lines.append("No clean reference for an already-degraded upload, so no PSNR.")
    counts = np.bincount(result.dominant_expert.reshape(-1), minlength=result.routing_weights.shape[-1])
    share = ", ".join(f"expert {e} {100 * c / counts.sum():.0f}%" for e, c in enumerate(counts))
    lines.append(f"**Dominant expert per {patch}x{patch} patch** (last MoE layer): {share}.")
    uncertainty, top = uncertainty_map(result.uncertainty, image.shape[:2], patch)
    lines.append(f"**Router uncertainty** (std of routing probabilities over the MC-dropout ensemble), "
                 f"black = 0 … white = {top:.3f}; mean {result.uncertainty.mean():.3f}.")
    return (to_uint8(degraded), to_uint8(result.image), to_uint8(expert_map(result.dominant_expert, degraded, patch)),
            to_uint8(uncertainty), "\n\n".join(lines))


def restore(upload, sample, effect, severity, seed, already_degraded):
    """Gradio handler: bad input becomes a message, never a crash."""
    try:
        return run_restoration(upload, sample, effect, severity, seed, already_degraded)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from error


def build() -> None:
    gr.Markdown(
        "One shared FFN with a cheap per-expert FiLM instead of E full FFNs (MoFME, AAAI 2024), routed by the "
        "uncertainty-aware router. Small CPU model (`zoo train mofme --recipe small`) trained on package photos; "
        "samples are held-out photos. "
        f"Large images are tiled (240 px tiles).\n\n{limits_markdown(MAX_PIXELS)}"
    )
    with gr.Row():
        with gr.Column():
            # a file, undecoded: the handler checks the pixel count from the header before decoding
            upload = gr.Image(label=f"Upload a photo (optional, up to {MAX_PIXELS / 1e6:.1f} MP)", type="filepath",
                              image_mode=None)
            sample = gr.Dropdown(sample_names(), value=sample_names()[0], label="…or a sample photo")
            already = gr.Checkbox(False, label="My upload is already degraded (skip synthetic weather)")
        with gr.Column():
            effect = gr.Radio(list(EFFECTS), value="Rain streaks", label="Weather effect")
            severity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Severity")
            seed = gr.Number(0, precision=0, label="Seed")
            button = gr.Button("Degrade and restore", variant="primary")
    with gr.Row():
        degraded = gr.Image(label="Degraded", interactive=False)
        restored = gr.Image(label="Restored by MoFME", interactive=False)
    with gr.Row():
        experts = gr.Image(label="Dominant expert per patch", interactive=False)
        uncertainty = gr.Image(label="Router uncertainty per patch", interactive=False)
    report = gr.Markdown()
    button.click(restore, [upload, sample, effect, severity, seed, already], [degraded, restored, experts, uncertainty, report])
