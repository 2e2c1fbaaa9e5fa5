"""Held-out evaluation of MoFME vs its conventional MoE counterpart: `zoo eval mofme [--weights DIR]`
(the shipped `small` models; `--weights` a folder holding <recipe>-fme/ and <recipe>-ffn/, small or tiny).

The held-out set: every TEST photo (pipelines.photos, never cropped for training) under every
weather effect at severity 0.5, seed = index of the (photo, effect) pair. Full images are restored
with the processor's overlapping tiles. Reported: PSNR / SSIM (skimage, data range 1, RGB) of the
degraded input, of MoFME and of the MoE counterpart, per effect and overall (mean over images), and
the patch lattice (`patch_grid_ratio`, dB) of each model's residual (restored - clean), next to the
clean photos' own figure, under results["patch_grid"].
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
RECIPES = ("small", "tiny")  # what `zoo eval mofme` looks for, first found first
CLEAN_GRID = "clean photo"  # results["patch_grid"] label of the clean photos' own lattice figure


def shipped_weights_dir() -> Path:
    """models/mofme/trained/: <recipe>-fme/, <recipe>-ffn/ (save_pretrained folders) and eval-<recipe>.json."""
    from zoo.models import trained_dir

    return trained_dir("mofme")


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(reference, image, data_range=1.0))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    return float(structural_similarity(reference, image, data_range=1.0, channel_axis=2))


def patch_grid_ratio(image: np.ndarray, patch: int, neighbours: int = 6) -> float:
    """How much a [H, W] or [H, W, C] signal shows a lattice of `patch`-pixel blocks, in dB; ~0: no lattice.

    Along each axis, `lattice_ratios` compares the power spectrum at the patch frequency 1/p and its harmonics
    with the neighbouring frequencies, for two signals, and takes the larger ratio per harmonic: the signal
    itself (a pattern repeated in every block, what the released decoder's per-token linear paints: +3 to
    +5 dB on the tiny model's hazy outputs), and its edge energy, the squared difference of neighbouring pixels
    (steps at every block edge put it on every p-th pixel; blocks of random constant levels alone would give
    spectral *nulls* at j/p, the zeros of the box's sinc). The figure is the mean over harmonics and axes.
    A photo's own figure need not be 0 (JPEG's 8 x 8 blocks), so compare a residual (restored - clean) with the
    clean photo's."""
    signal = (image if image.ndim == 3 else image[:, :, None]).astype(np.float64)
    ratios = []
    for axis in (0, 1):
        energy = (np.diff(signal, axis=axis) ** 2).sum(axis=2, keepdims=True)  # [H-1, W, 1] or [H, W-1, 1]
        found = []
        for part in (signal, energy):
            length = part.shape[axis] - part.shape[axis] % patch  # each harmonic on one exact frequency bin
            found.append(lattice_ratios(part[:length] if axis == 0 else part[:, :length], patch, axis, neighbours))
        ratios.append(np.maximum(*found))
    return float(np.mean(ratios))


def lattice_ratios(signal: np.ndarray, patch: int, axis: int, neighbours: int = 6) -> np.ndarray:
    """signal [H, W] or [H, W, C] (its length along `axis` a multiple of patch) -> [patch // 2] dB: along `axis`,
    the power spectrum (Hann window, mean over the other axis and the channels) at each harmonic j / patch
    (j = 1 .. patch / 2) over the median power of the `neighbours` bins on either side of it (its own +-1 bins
    left out)."""
    signal = signal if signal.ndim == 3 else signal[:, :, None]
    length = signal.shape[axis]
    centred = signal - signal.mean(axis=axis, keepdims=True)
    window = np.hanning(length).reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
    power = (np.abs(np.fft.rfft(centred * window, axis=axis)) ** 2).mean(axis=(1 - axis, 2))  # [length // 2 + 1]
    ratios = []
    for harmonic in range(1, patch // 2 + 1):
        peak = harmonic * length // patch
        around = [b for b in range(peak - neighbours - 1, peak + neighbours + 2) if abs(b - peak) > 1 and 0 < b < len(power)]
        ratios.append(10 * np.log10((power[peak] + 1e-20) / (np.median(power[around]) + 1e-20)))
    return np.array(ratios)


def held_out_pairs():
    """(name, effect, clean, degraded) for every test photo x effect."""
    index = 0
    for name, clean in photos("test").items():
        for effect in DEGRADATIONS:
            yield name, effect, clean, degrade(clean, effect, EVAL_SEVERITY, seed=index)
            index += 1


def evaluate_models(models: dict[str, object], processor) -> dict:
    """models: label -> model (eval mode). Returns {label: {effect: {psnr, ssim, images}, 'all': {...}}} incl.
    'input', and 'patch_grid': {label: {effect: dB}} (residual's lattice; CLEAN_GRID: the clean photos')."""
    from zoo.models.mofme import restore_image

    scores: dict[str, dict[str, list[tuple[float, float]]]] = {}
    grids: dict[str, dict[str, list[float]]] = {}

    def add(label, effect, reference, image, grid_of):
        for key in (effect, "all"):
            scores.setdefault(label, {}).setdefault(key, []).append((psnr(reference, image), ssim(reference, image)))
            grids.setdefault(label, {}).setdefault(key, []).append(patch_grid_ratio(grid_of, processor.patch_size))

    for _, effect, clean, degraded in held_out_pairs():
        for key in (effect, "all"):
            grids.setdefault(CLEAN_GRID, {}).setdefault(key, []).append(patch_grid_ratio(clean, processor.patch_size))
        add("input", effect, clean, degraded, degraded - clean)
        for label, model in models.items():
            restored = restore_image(model, processor, degraded).image
            add(label, effect, clean, restored, restored - clean)
    results = {label: {effect: {"psnr": float(np.mean([s[0] for s in v])), "ssim": float(np.mean([s[1] for s in v])),
                                "images": len(v)} for effect, v in per_effect.items()}
               for label, per_effect in scores.items()}
    results["patch_grid"] = {label: {effect: float(np.mean(v)) for effect, v in per_effect.items()}
                             for label, per_effect in grids.items()}
    return results


def score_labels(results: dict) -> list[str]:
    """The labels of results that hold PSNR / SSIM (not 'patch_grid', not 'training')."""
    return [label for label in results if label not in ("patch_grid", "training")]


def format_results(results: dict) -> str:
    effects = [e for e in results["input"] if e != "all"] + ["all"]
    labels = score_labels(results)
    width = max(len(label) for label in labels) + 2
    lines = ["PSNR (dB) / SSIM on held-out photos (" + ", ".join(TEST_PHOTOS) + f"), severity {EVAL_SEVERITY}",
             "".ljust(width) + "".join(e.rjust(16) for e in effects)]
    for label in labels:
        lines.append(label.ljust(width) + "".join(f"{results[label][e]['psnr']:7.2f} / {results[label][e]['ssim']:.3f}".rjust(16)
                                                  for e in effects))
    if "patch_grid" in results:
        grid = results["patch_grid"]
        lines.append("patch lattice (dB at 1/patch_size harmonics over neighbouring frequencies; residual = output - clean)")
        for label in grid:
            lines.append(label.ljust(width) + "".join(f"{grid[label][e]:+.2f}".rjust(16) for e in effects))
    if "MoFME" in results:
        gain = results["MoFME"]["all"]["psnr"] - results["input"]["all"]["psnr"]
        lines.append(f"MoFME - input: {gain:+.2f} dB")
    if "MoFME" in results and "MoE counterpart" in results:
        gap = results["MoFME"]["all"]["psnr"] - results["MoE counterpart"]["all"]["psnr"]
        lines.append(f"MoFME - MoE counterpart: {gap:+.2f} dB (target >= -0.3 dB)")
    return "\n".join(lines)


def find_recipe(weights_dir: Path) -> str:
    """The first of RECIPES whose <recipe>-fme/ is in weights_dir."""
    for name in RECIPES:
        if (weights_dir / f"{name}-fme" / "config.json").exists():
            return name
    raise FileNotFoundError(f"no trained MoFME weights in {weights_dir} (looked for {', '.join(f'{r}-fme/' for r in RECIPES)}; "
                            "run `zoo train mofme --recipe small --set ship=true`)")


def load_variants(weights_dir: Path, recipe: str = "tiny") -> dict[str, object]:
    from transformers import AutoModelForImageToImage

    found = {}
    for variant, label in VARIANTS.items():
        folder = weights_dir / f"{recipe}-{variant}"
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"no trained {label} weights in {folder} (run `zoo train mofme --recipe {recipe}`)")
        found[label] = AutoModelForImageToImage.from_pretrained(folder).eval()
    return found


@evaluation("mofme")
def evaluate_mofme(weights_dir: Path | None = None, recipe: str | None = None) -> dict:
    from transformers import AutoImageProcessor

    weights_dir = Path(weights_dir) if weights_dir else shipped_weights_dir()
    recipe = recipe or find_recipe(weights_dir)
    models = load_variants(weights_dir, recipe)
    processor = AutoImageProcessor.from_pretrained(weights_dir / f"{recipe}-fme")
    print(f"recipe: {recipe} ({weights_dir})")
    results = evaluate_models(models, processor)
    print(format_results(results))
    return results


def save_results(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def rescore_shipped(recipe: str, weights_dir: Path | None = None) -> dict:
    """Re-evaluate the shipped `recipe` weights and rewrite eval-<recipe>.json, keeping its "training" record:
    for when the held-out set or the measurements change and the weights do not (issue 17 made raindrop sizes
    absolute and added the patch lattice). `python -m zoo.pipelines.evaluate_mofme --rescore tiny`."""
    from transformers import AutoImageProcessor

    weights_dir = Path(weights_dir) if weights_dir else shipped_weights_dir()
    path = weights_dir / f"eval-{recipe}.json"
    training = json.loads(path.read_text())["training"]
    processor = AutoImageProcessor.from_pretrained(weights_dir / f"{recipe}-fme")
    results = evaluate_models(load_variants(weights_dir, recipe), processor)
    print(format_results(results))
    save_results({**results, "training": {"recipe": recipe, **training}}, path)
    return results


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["--rescore"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m zoo.pipelines.evaluate_mofme --rescore RECIPE")
    rescore_shipped(sys.argv[2])
