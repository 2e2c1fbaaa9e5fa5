"""The MoME speech results: one report shipped beside the trained parts, and the model card rendered from it.

    python -m zoo.pipelines.mome_card --record MOME.json LORA.json   # the tiny run's mome-results.json (or
                                                                     # `zoo eval mome` output) + the
                                                                     # tiny-lora run's lora-results.json
    python -m zoo.pipelines.mome_card [OUTPUT.md]                    # render the card from the report

The report (models/mome/trained/speech-tiny.report.json) holds WER per compression rate on both held-out
sets for MoME, the per-rate LoRA baseline and Whisper tiny.en, and MoME's audio-token expert shares per
rate; tests/test_mome_trained.py recomputes MoME's figures from the shipped parts and checks them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .card_cli import fill_template

SETS = {"asterisk": "Asterisk prompts (551, real voice, 8 kHz)", "pyannote": "pyannote sample (13 utterances)"}


def report_path() -> Path:
    from zoo.models import trained_dir

    return trained_dir("mome") / "speech-tiny.report.json"


def record(mome_eval: dict, lora_results: dict) -> dict:
    """One report from MoME's figures (`evaluate_shipped`'s output, or the recipe's results file: it scores the
    bf16-rounded parts it ships, so both hold the same figures) and the tiny-lora run's results."""
    trained = mome_eval.get("trained", mome_eval)
    return {"mome": {s: mome_eval["wer"][s] for s in SETS}, "audio_expert_share": mome_eval["wer"]["audio_expert_share"],
            "per_rate_lora": lora_results["wer"], "whisper_tiny_en": lora_results["whisper_tiny_en_wer"],
            "settings": trained["settings"], "train_minutes": trained["train_minutes"],
            "lora_train_minutes": lora_results["train_minutes"], "final_train_loss": trained["final_train_loss"],
            "trainable_params": trained["trainable_params"], "eval_minutes": mome_eval.get("eval_minutes")}


def wer_rows(report: dict) -> str:
    rates = [str(r) for r in report["settings"]["rates"]]
    rows = []
    for key, title in SETS.items():
        for system, label in (("mome", "MoME"), ("per_rate_lora", "per-rate LoRA")):
            rows.append(f"| {title} | {label} | " + " | ".join(f"{report[system][key][r]:.3f}" for r in rates) + " |")
        whisper = report["whisper_tiny_en"][key]
        rows.append(f"| {title} | Whisper tiny.en (own decoder, 30 s input) | " + " | ".join(f"{whisper:.3f}" for _ in rates) + " |")
    return "\n".join(rows)


def share_rows(report: dict) -> str:
    return "\n".join(f"| {rate} | " + " | ".join(f"{s:.3f}" for s in shares) + " |"
                     for rate, shares in report["audio_expert_share"].items())


def render(report: dict | None = None) -> str:
    report = report or json.loads(report_path().read_text())
    settings = report["settings"]
    rates = [str(r) for r in settings["rates"]]
    experts = len(next(iter(report["audio_expert_share"].values())))
    values = {
        "rate_header": " | ".join(f"rate {r}" for r in rates), "rate_rule": "---|" * len(rates),
        "wer_rows": wer_rows(report), "expert_header": " | ".join(f"expert {e}" for e in range(experts)),
        "expert_rule": "---|" * experts, "share_rows": share_rows(report),
        "steps": settings["steps"], "batch_size": settings["batch_size"], "lr": settings["lr"],
        "rates_per_step": settings["rates_per_step"], "routed": settings["num_routed_experts"],
        "shared": settings["num_shared_experts"], "top_k": settings["num_experts_per_tok"],
        "bottleneck": settings["bottleneck_size"], "lora_rank": settings["lora_rank"],
        "train_minutes": report["train_minutes"], "lora_train_minutes": report["lora_train_minutes"],
        "trainable_params": f"{report['trainable_params'] / 1e6:.2f} M", "final_train_loss": report["final_train_loss"],
        "align_rate": settings["align_rate"], "align_steps": settings["align_steps"],
        "align_batch_size": settings["align_batch_size"],
    }
    return fill_template("mome.md", values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.pipelines.mome_card", description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=None, help="where the card goes (default: print it)")
    parser.add_argument("--record", nargs=2, metavar=("MOME_EVAL_JSON", "LORA_RESULTS_JSON"),
                        help="write the shipped report from these two result files first")
    args = parser.parse_args(argv)
    if args.record:
        mome, lora = (json.loads(Path(p).read_text()) for p in args.record)
        report_path().write_text(json.dumps(record(mome, lora), indent=1) + "\n")
        print(f"wrote {report_path()}")
    card = render()
    if args.output:
        Path(args.output).write_text(card)
    else:
        print(card)


if __name__ == "__main__":
    main()
