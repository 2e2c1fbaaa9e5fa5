"""Held-out evaluation of MoFME vs its conventional MoE counterpart: `zoo eval mofme [--weights DIR]`.

The held-out set: every TEST photo (pipelines.photos, never cropped for training) under every
weather effect at severity 0.5, seed = index of the (photo, effect) pair. Full images are restored
with the processor's overlapping tiles. Reported: PSNR / SSIM (skimage, data range 1, RGB) of the
degraded input, of MoFME and of the MoE counterpart, per effect and overall (mean over images).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .photos import TEST_PHOTOS, photos
from .train import evaluation
from .weather import DEGRADATIONS, degrade

EVAL_SEVERITY = 0.5
VARIANTS = {"fme": "MoFME", "ffn": "MoE counterpart"}


def shipped_weights_dir() -> Path:
    """models/mofme/trained/: tiny-fme/, tiny-ffn/ (save_pretrained folders) and eval.json."""
    from zoo.models import trained_dir

    return trained_dir("mofme")


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(reference, image, data_range=1.0))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    return float(structural_similarity(reference, image, data_range=1.0, channel_axis=2))


def held_out_pairs():
    """(name, effect, clean, degraded) for every test photo x effect."""
    index = 0
    for name, clean in photos("test").items():
        for effect in DEGRADATIONS:
            yield name, effect, clean, degrade(clean, effect, EVAL_SEVERITY, seed=index)
            index += 1


def evaluate_models(models: dict[str, object], processor) -> dict:
    """models: label -> model (eval mode). Returns {label: {effect: {psnr, ssim}, 'all': {...}}} incl. 'input'."""
    from zoo.models.mofme import restore_image

    scores: dict[str, dict[str, list[tuple[float, float]]]] = {}

    def add(label, effect, reference, image):
        for key in (effect, "all"):
            scores.setdefault(label, {}).setdefault(key, []).append((psnr(reference, image), ssim(reference, image)))

    for _, effect, clean, degraded in held_out_pairs():
        add("input", effect, clean, degraded)
        for label, model in models.items():
            add(label, effect, clean, restore_image(model, processor, degraded).image)
    return {label: {effect: {"psnr": float(np.mean([s[0] for s in v])), "ssim": float(np.mean([s[1] for s in v])),
                             "images": len(v)} for effect, v in per_effect.items()}
            for label, per_effect in scores.items()}


def format_results(results: dict) -> str:
    effects = [e for e in results["input"] if e != "all"] + ["all"]
    labels = list(results)
    width = max(len(label) for label in labels) + 2
    lines = ["PSNR (dB) / SSIM on held-out photos (" + ", ".join(TEST_PHOTOS) + f"), severity {EVAL_SEVERITY}",
             "".ljust(width) + "".join(e.rjust(16) for e in effects)]
    for label in labels:
        lines.append(label.ljust(width) + "".join(f"{results[label][e]['psnr']:7.2f} / {results[label][e]['ssim']:.3f}".rjust(16)
                                                  for e in effects))
    if "MoFME" in results:
        gain = results["MoFME"]["all"]["psnr"] - results["input"]["all"]["psnr"]
        lines.append(f"MoFME - input: {gain:+.2f} dB (target >= +3 dB)")
    if "MoFME" in results and "MoE counterpart" in results:
        gap = results["MoFME"]["all"]["psnr"] - results["MoE counterpart"]["all"]["psnr"]
        lines.append(f"MoFME - MoE counterpart: {gap:+.2f} dB (target >= -0.3 dB)")
    return "\n".join(lines)


def load_variants(weights_dir: Path) -> dict[str, object]:
    from transformers import AutoModelForImageToImage

    found = {}
    for variant, label in VARIANTS.items():
        folder = weights_dir / f"tiny-{variant}"
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"no trained {label} weights in {folder} (run `zoo train mofme --recipe tiny`)")
        found[label] = AutoModelForImageToImage.from_pretrained(folder).eval()
    return found


@evaluation("mofme")
def evaluate_mofme(weights_dir: Path | None = None) -> dict:
    from transformers import AutoImageProcessor

    weights_dir = Path(weights_dir) if weights_dir else shipped_weights_dir()
    models = load_variants(weights_dir)
    processor = AutoImageProcessor.from_pretrained(weights_dir / "tiny-fme")
    results = evaluate_models(models, processor)
    print(format_results(results))
    return results


def save_results(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")
