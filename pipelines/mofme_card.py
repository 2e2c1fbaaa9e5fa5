"""Render model_cards/mofme.md from measured figures: the held-out eval (models/mofme/trained/eval.json,
written by `zoo train mofme --recipe tiny --set ship=true`) and, when present, the paper-size benchmark
(models/mofme/trained/benchmark.txt, written by `python -m benchmarks.mofme --save ...`).

    python -m zoo.pipelines.mofme_card [OUTPUT.md]
"""
from __future__ import annotations

import importlib.resources
import json
import string
import sys
from pathlib import Path

from .evaluate_mofme import EVAL_SEVERITY, shipped_weights_dir
from .photos import TEST_PHOTOS, TRAIN_PHOTOS


LOSS_TEXT = {"l1": "L1 loss (the paper's)", "l2": "squared-error loss (not the paper's L1, see Limits)"}
LOSS_NOTE = {"l1": "", "l2": (
    " The recipe trains on the squared error: these tiny models predict a correction added to the input,"
    " and under L1 the conventional counterpart stayed at \"correction = 0\" (output = input) on rain, snow"
    " and raindrops, because L1's optimum is the median change of a pixel, and rain streaks and raindrops"
    " change only a minority of pixels.")}


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def render_model_card(weights_dir: Path | None = None) -> str:
    from transformers import AutoModelForImageToImage

    from zoo.models.mofme.presets import moe_ffn_parameters

    weights_dir = weights_dir or shipped_weights_dir()

    results = json.loads((weights_dir / "eval.json").read_text())
    models = {v: AutoModelForImageToImage.from_pretrained(weights_dir / f"tiny-{v}") for v in ("fme", "ffn")}
    config = models["fme"].config
    training = results.pop("training")
    effects = [e for e in results["input"] if e != "all"] + ["all"]
    rows = [f"| {label} | " + " | ".join(f"{r[e]['psnr']:.2f} / {r[e]['ssim']:.3f}" for e in effects) + " |"
            for label, r in results.items()]
    bench = weights_dir / "benchmark.txt"
    settings = training["settings"]
    values = {
        "num_layers": config.num_hidden_layers, "uar_samples": config.uar_num_samples, "top_k": config.num_experts_per_tok,
        "num_experts": config.num_experts, "hidden_size": config.hidden_size, "num_heads": config.num_attention_heads,
        "fme_block_params": _millions(moe_ffn_parameters(models["fme"])),
        "ffn_block_params": _millions(moe_ffn_parameters(models["ffn"])),
        "fme_total_params": _millions(models["fme"].num_parameters()),
        "ffn_total_params": _millions(models["ffn"].num_parameters()),
        "loss": LOSS_TEXT[settings.get("loss", "l1")],  # runs before the setting existed used L1
        "loss_note": LOSS_NOTE[settings.get("loss", "l1")],
        "steps": settings["steps"], "batch": settings["batch"], "crop": settings["crop"], "lr": settings["lr"],
        "clip": settings.get("clip", "no"),  # runs before the setting existed did not clip
        "fme_seconds": f"{training['seconds']['MoFME']:.0f}", "ffn_seconds": f"{training['seconds']['MoE counterpart']:.0f}",
        "test_photos": ", ".join(TEST_PHOTOS), "num_train_photos": len(TRAIN_PHOTOS), "severity": EVAL_SEVERITY,
        "effect_header": " | ".join(effects), "effect_rule": "---|" * len(effects), "result_rows": "\n".join(rows),
        "gain_vs_input": f"{results['MoFME']['all']['psnr'] - results['input']['all']['psnr']:+.2f}",
        "gap_vs_moe": f"{results['MoFME']['all']['psnr'] - results['MoE counterpart']['all']['psnr']:+.2f}",
        "benchmark": "```\n" + bench.read_text().rstrip() + "\n```" if bench.exists() else "(not run yet)",
    }
    template = importlib.resources.files("zoo.model_cards").joinpath("mofme.md").read_text()
    return string.Template(template).substitute(values)


if __name__ == "__main__":
    card = render_model_card()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(card)
    else:
        print(card)
