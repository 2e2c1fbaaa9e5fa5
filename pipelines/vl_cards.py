"""Fill the vision-language model cards from the shipped parts' metadata (the figures each training
run recorded), their evaluation reports and the MoTE benchmark output:

    python -m zoo.pipelines.vl_cards --evaluate OUT_DIR   # re-evaluate the shipped parts first (~1 min each)
    python -m zoo.pipelines.vl_cards OUT_DIR              # render from the saved reports

A report (per question type, and the control with every question asked about another question's
image) is saved next to the shipped parts, models/<system>/trained/easyvqa-tiny.report.json."""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from string import Template

from safetensors import safe_open

from . import vl_easyvqa as vqa

CARDS = {"moiie": "moiie.md", "mote": "mote.md", "moe_llava": "moe_llava.md"}


def benchmark_path() -> Path:
    """MoTE's packed-expert benchmark output (benchmarks/), shipped with its trained parts."""
    from zoo.models import trained_dir

    return trained_dir("mote") / "benchmark.txt"


def metadata(system: str) -> dict | None:
    import json

    path = vqa.shipped_path(system)
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


SYSTEMS = ("moiie", "mote", "moe_llava", "dense_vl")
REPORT_COLUMNS = ("all", "yes/no", "shape", "colour", "images shuffled")


def report_path(system: str) -> Path:
    return vqa.shipped_path(system).with_suffix(".report.json")


def evaluate(system: str) -> dict:
    """Evaluate the shipped parts (pipelines.train_vl.evaluate_shipped) and save the report."""
    import json

    from .train_vl import evaluate_shipped

    report = evaluate_shipped(system)
    report_path(system).write_text(json.dumps(report, indent=2) + "\n")
    return report


def result_row(system: str, trained: dict | None) -> str:
    import json

    if trained is None:
        return f"| {system} | not trained yet |" + " |" * len(REPORT_COLUMNS)
    path = report_path(system)
    report = json.loads(path.read_text())["easyvqa_test_accuracy"] if path.is_file() else {}
    cells = [f"{trained['easyvqa_test_accuracy']:.1%}"]  # recorded by the training run (fp32 parts)
    cells += [f"{report[c]:.1%}" if c in report else "-" for c in REPORT_COLUMNS]  # the shipped bf16 parts
    return f"| {system} | " + " | ".join(cells) + " |"


def render(system: str) -> str:
    results = {s: metadata(s) for s in SYSTEMS}
    rows = "\n".join(result_row(s, m) for s, m in results.items())
    own = results.get(system) or {}
    benchmark = benchmark_path()
    fields = {"result_rows": rows, "benchmark": benchmark.read_text().strip() if benchmark.is_file() else "(not run)",
              **{k: own.get(k, "?") for k in ("eval_questions", "stage1_steps", "stage2_steps", "batch_size",
                                                "trainable_params", "train_minutes")}}
    template = importlib.resources.files("zoo.model_cards").joinpath(CARDS[system]).read_text()
    return Template(template).safe_substitute(fields)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zoo.pipelines.vl_cards", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=".", help="where the rendered cards go (default: .)")
    parser.add_argument("--evaluate", action="store_true", help="re-evaluate the shipped parts and save their reports first")
    args = parser.parse_args(argv)  # an unknown flag is an error, not a directory name
    if args.evaluate:
        for system in SYSTEMS:
            if vqa.shipped_path(system).is_file():
                print(system, evaluate(system)["easyvqa_test_accuracy"])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for system, name in CARDS.items():
        (out / name).write_text(render(system))
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
