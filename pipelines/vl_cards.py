"""Fill the vision-language model cards from the shipped parts' metadata (the figures each training
run recorded) and the MoTE benchmark output:  python -m zoo.pipelines.vl_cards OUT_DIR"""
from __future__ import annotations

import sys
from pathlib import Path
from string import Template

from safetensors import safe_open

from . import vl_easyvqa as vqa

CARDS = {"moiie": "moiie.md", "mote": "mote.md", "moe-llava": "moe_llava.md"}
CARD_DIR = Path(__file__).resolve().parent.parent / "model_cards"
BENCHMARK = vqa.SHIPPED_DIR / "mote" / "trained" / "benchmark.txt"


def metadata(system: str) -> dict | None:
    import json

    path = vqa.shipped_path(system)
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def render(system: str) -> str:
    results = {s: metadata(s) for s in ("moiie", "mote", "moe-llava", "dense-vl")}
    rows = "\n".join(f"| {s} | {m['easyvqa_test_accuracy']:.1%} |" if m else f"| {s} | not trained yet |"
                     for s, m in results.items())
    own = results.get(system) or {}
    fields = {"result_rows": rows, "benchmark": BENCHMARK.read_text().strip() if BENCHMARK.is_file() else "(not run)",
              **{k: own.get(k, "?") for k in ("eval_questions", "stage1_steps", "stage2_steps", "batch_size",
                                                "trainable_params", "train_minutes")}}
    return Template((CARD_DIR / CARDS[system]).read_text()).safe_substitute(fields)


def main(argv=None) -> None:
    out = Path((argv or sys.argv[1:] or ["."])[0])
    out.mkdir(parents=True, exist_ok=True)
    for system, name in CARDS.items():
        (out / name).write_text(render(system))
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
