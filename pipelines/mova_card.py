"""The MoVA tiny model card, rendered from the report shipped with the parts (models/mova/trained/).

    python -m zoo.pipelines.mova_card [OUTPUT.md]      # print the card, or write it
"""
from __future__ import annotations

import json

from .card_cli import card_main, fill_template


def shipped_report() -> dict:
    from .train_mova import REPORT_FILE, shipped_dir

    return json.loads((shipped_dir() / REPORT_FILE).read_text())


def pool_description() -> str:
    from zoo.models.mova.presets import PACKAGED_EXPERTS

    def tower(spec: dict) -> str:
        layer = spec.get("feature_layer")
        return spec.get("name", spec["kind"]) + ("" if layer in (None, -1) else f", feature stage {layer}")

    return "; ".join(f"**{e['name']}** (`{tower(e['tower'])}`) for {e['description']}" for e in PACKAGED_EXPERTS)


def render(report: dict | None = None) -> str:
    """The card with the table of `report` (default: the shipped one); `report["test"]` may be recomputed."""
    from .train_mova import table

    report = report or shipped_report()
    settings, agreement = report["settings"], report["validation_pass1_agreement"]
    values = {**settings, "minutes": report["minutes"], "questions": report["test"]["questions"],
              "table": table(report["test"]), "pool": pool_description(),
              "num_experts": len(report["routing_labels"]["train"]) - 1,  # the experts and "none"
              "agreement_exact": f"{agreement['exact']:.0%}", "agreement_per_expert": f"{agreement['per_expert']:.0%}"}
    return fill_template("mova.md", values)


def main(argv=None) -> None:
    card_main(render, "python -m zoo.pipelines.mova_card", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
