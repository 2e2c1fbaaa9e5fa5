"""Render model_cards/mofme.md from measured figures: the held-out evals of both recipes
(models/mofme/trained/eval-small.json and eval-tiny.json, written by `zoo train mofme --recipe small|tiny
--set ship=true`) and, when present, the paper-size benchmark (models/mofme/trained/benchmark.txt, written by
`python -m benchmarks.mofme --save ...`); and the pictures the card and the README show
(model_cards/images/mofme_<effect>.png: input / MoFME / counterpart / clean on a held-out photo).

    python -m zoo.pipelines.mofme_card [OUTPUT.md]
    python -m zoo.pipelines.mofme_card --figures [FOLDER]
"""
from __future__ import annotations

import importlib.resources
import json
import string
import sys
from pathlib import Path

import numpy as np

from .evaluate_mofme import CLEAN_GRID, EVAL_SEVERITY, VARIANTS, held_out_pairs, psnr, score_labels, shipped_weights_dir
from .photos import TEST_PHOTOS, TRAIN_PHOTOS, VALIDATION_PHOTOS

CARD_RECIPES = ("small", "tiny")  # the card's tables, the shipped (gallery) model first
FIGURE_PHOTO = "coffee"  # held-out photo of the pictures
FIGURE_DIR = Path(__file__).resolve().parents[1] / "model_cards" / "images"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def recipe_figures(weights_dir: Path, recipe: str) -> dict:
    """The card's placeholders for one recipe, prefixed `<recipe>_`: its table rows, gains, parameters, time."""
    from transformers import AutoModelForImageToImage

    from zoo.models.mofme.presets import moe_ffn_parameters

    results = json.loads((weights_dir / f"eval-{recipe}.json").read_text())
    training = results["training"]
    models = {v: AutoModelForImageToImage.from_pretrained(weights_dir / f"{recipe}-{v}") for v in VARIANTS}
    effects = [e for e in results["input"] if e != "all"] + ["all"]
    rows = [f"| {label} | " + " | ".join(f"{results[label][e]['psnr']:.2f} / {results[label][e]['ssim']:.3f}" for e in effects) + " |"
            for label in score_labels(results)]
    grid = results["patch_grid"]
    grid_rows = [f"| {label} | " + " | ".join(f"{grid[label][e]:+.2f}" for e in effects) + " |" for label in grid]
    config, settings = models["fme"].config, training["settings"]
    total = {v: models[v].num_parameters() for v in VARIANTS}
    values = {
        "result_rows": "\n".join(rows), "grid_rows": "\n".join(grid_rows),
        "fme_block_params": _millions(moe_ffn_parameters(models["fme"])),
        "ffn_block_params": _millions(moe_ffn_parameters(models["ffn"])),
        "fme_total_params": _millions(total["fme"]), "ffn_total_params": _millions(total["ffn"]),
        "params_saved": f"{100 * (1 - total['fme'] / total['ffn']):.0f}%",
        "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers, "num_heads": config.num_attention_heads,
        "num_experts": config.num_experts, "top_k": config.num_experts_per_tok, "unembedding": config.unembedding,
        "steps": settings["steps"], "batch": settings["batch"], "crop": settings["crop"], "lr": settings["lr"],
        "fme_seconds": f"{training['seconds']['MoFME']:.0f}", "ffn_seconds": f"{training['seconds']['MoE counterpart']:.0f}",
        "gain_vs_input": f"{results['MoFME']['all']['psnr'] - results['input']['all']['psnr']:+.2f}",
        "gap_vs_moe": f"{results['MoFME']['all']['psnr'] - results['MoE counterpart']['all']['psnr']:+.2f}",
        "min_effect_gain": f"{min(results['MoFME'][e]['psnr'] - results['input'][e]['psnr'] for e in effects[:-1]):+.2f}",
    }
    return {f"{recipe}_{key}": value for key, value in values.items()} | {"effects": effects}


def render_model_card(weights_dir: Path | None = None) -> str:
    weights_dir = weights_dir or shipped_weights_dir()
    values = {}
    for recipe in CARD_RECIPES:
        values |= recipe_figures(weights_dir, recipe)
    effects = values.pop("effects")
    bench = weights_dir / "benchmark.txt"
    values |= {
        "test_photos": ", ".join(TEST_PHOTOS), "validation_photos": ", ".join(VALIDATION_PHOTOS),
        "num_train_photos": len(TRAIN_PHOTOS), "num_fit_photos": len(TRAIN_PHOTOS) - len(VALIDATION_PHOTOS),
        "severity": EVAL_SEVERITY, "effect_header": " | ".join(effects), "effect_rule": "---|" * len(effects),
        "clean_grid": CLEAN_GRID, "figure_photo": FIGURE_PHOTO,
        "benchmark": "```\n" + bench.read_text().rstrip() + "\n```" if bench.exists() else "(not run yet)",
    }
    template = importlib.resources.files("zoo.model_cards").joinpath("mofme.md").read_text()
    return string.Template(template).substitute(values)


def figure_panels(models: dict[str, object], processor, photo: str = FIGURE_PHOTO) -> dict[str, list[tuple[str, np.ndarray]]]:
    """effect -> [(title, [H, W, 3] image)]: input, each model's restoration and the clean photo, PSNR in the titles."""
    from zoo.models.mofme import restore_image

    panels = {}
    for name, effect, clean, degraded in held_out_pairs():
        if name != photo:
            continue
        row = [(f"input {psnr(clean, degraded):.2f} dB", degraded)]
        for label, model in models.items():
            restored = restore_image(model, processor, degraded).image
            row.append((f"{label} {psnr(clean, restored):.2f} dB", restored))
        panels[effect] = row + [("clean", clean)]
    return panels


def save_figures(folder: Path = FIGURE_DIR, weights_dir: Path | None = None, recipe: str = "small") -> list[Path]:
    """One PNG per effect (input / MoFME / counterpart / clean) from the shipped `recipe` weights."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from transformers import AutoImageProcessor

    from .evaluate_mofme import load_variants

    weights_dir = weights_dir or shipped_weights_dir()
    models = load_variants(weights_dir, recipe)
    processor = AutoImageProcessor.from_pretrained(weights_dir / f"{recipe}-fme")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for effect, row in figure_panels(models, processor).items():
        height, width = row[0][1].shape[:2]
        figure, axes = plt.subplots(1, len(row), figsize=(3.2 * len(row), 3.2 * height / width + 0.4), dpi=100)
        for axis, (title, image) in zip(axes, row):
            axis.imshow(np.clip(image, 0, 1), interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        figure.suptitle(f"{effect}, severity {EVAL_SEVERITY}, held-out '{FIGURE_PHOTO}' ({recipe} recipe)", fontsize=10)
        figure.tight_layout()
        path = folder / f"mofme_{effect}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


if __name__ == "__main__":
    if sys.argv[1:2] == ["--figures"]:
        for path in save_figures(Path(sys.argv[2]) if len(sys.argv) > 2 else FIGURE_DIR):
            print(path)
    else:
        card = render_model_card()
        if len(sys.argv) > 1:
            Path(sys.argv[1]).write_text(card)
        else:
            print(card)
