"""The XMoE-from-scratch model card, rendered from the study that `python -m zoo.pipelines.xmoe_study --write`
ships (models/xmoe/trained/scratch-study.json) and the shipped arm's results.

    python -m zoo.pipelines.xmoe_card [OUTPUT.md]
"""
from __future__ import annotations

import json

from .card_cli import card_main, fill_template


def study_path():
    from zoo.models import trained_dir

    return trained_dir("xmoe") / "scratch-study.json"


def render(study: dict | None = None) -> str:
    from .train_xmoe import shipped_dir
    from .xmoe_study import markdown_table

    study = study or json.loads(study_path().read_text())
    shipped = json.loads((shipped_dir() / "results.json").read_text())
    settings = shipped["settings"]
    rows = {row["arm"]: row for row in study["rows"]}
    scratch = [row for row in study["rows"] if not row["arm"].startswith("dense-")]
    d2s = [row for row in study["rows"] if row["arm"].startswith("dense-")]
    values = {
        "scratch_table": markdown_table(scratch), "d2s_table": markdown_table(d2s),
        "claims": "\n".join(f"- {line}" for line in study["claims"]),
        "hidden": settings["hidden"], "layers": settings["layers"], "heads": settings["heads"],
        "vocab": settings["vocab"], "seq_len": settings["seq_len"], "batch": settings["batch"],
        "steps": settings["steps"], "lr": settings["lr"], "train_tokens": f"{shipped['train_tokens']:,}",
        "parameters": f"{shipped['parameters'] / 1e6:.2f} M", "seeds": len(rows[shipped["arm"]]["seeds"]),
        "test_ppl": shipped["test"]["perplexity"], "test_flops": f"{shipped['test']['expert_flops']:.1%}",
        "test_k": shipped["test"]["experts_per_token"], "train_minutes": f"{shipped['train_seconds'] / 60:.1f}",
    }
    return fill_template("xmoe.md", values)


def main(argv=None) -> None:
    card_main(render, "python -m zoo.pipelines.xmoe_card", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
