"""The Uni-MoE tiny model card, rendered from the results shipped with the parts (models/unimoe/trained/).

    python -m zoo.pipelines.unimoe_card [OUTPUT.md]      # print the card, or write it
"""
from __future__ import annotations

import json

from .card_cli import card_main, fill_template


def shipped_results() -> dict:
    from zoo.models import trained_dir

    from .train_unimoe import SHIPPED_PREFIX

    return json.loads((trained_dir("unimoe") / f"{SHIPPED_PREFIX}results.json").read_text())


def render(results: dict | None = None) -> str:
    from .train_unimoe import format_tables

    results = results or shipped_results()
    settings = results["settings"]
    values = {**{k: v for k, v in settings.items()}, "top_k": settings["num_experts_per_tok"],
              "dense_steps": results["dense_steps"], "tables": format_tables(results, "test"),
              "total_minutes": round(results["seconds"]["total"] / 60, 1)}
    return fill_template("unimoe.md", values)


def main(argv=None) -> None:
    card_main(render, "python -m zoo.pipelines.unimoe_card", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
