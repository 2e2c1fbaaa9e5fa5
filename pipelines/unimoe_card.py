"""The Uni-MoE tiny model card, rendered from the results shipped with the parts (models/unimoe/trained/).

    python -m zoo.pipelines.unimoe_card [OUTPUT.md]      # print the card, or write it
"""
from __future__ import annotations

import argparse
import importlib.resources
import json
import string
from pathlib import Path


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
    template = importlib.resources.files("zoo.model_cards").joinpath("unimoe.md").read_text()
    return string.Template(template).substitute(values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.pipelines.unimoe_card", description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=None, help="where the card goes (default: print it)")
    card = render()
    args = parser.parse_args(argv)
    if args.output:
        Path(args.output).write_text(card)
    else:
        print(card)


if __name__ == "__main__":
    main()
