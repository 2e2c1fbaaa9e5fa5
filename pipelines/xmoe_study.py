"""The XMoE-from-scratch study: every arm of `zoo train xmoe --recipe scratch` for two seeds, then the
dense-to-sparse runs from each seed's dense arm, then one table and one plot.

    python -m zoo.pipelines.xmoe_study [--seeds 0 1] [--jobs 2] [--write]

Each run is its own `zoo train xmoe ...` process with one torch thread (`--jobs` at a time; a finished run's
results.json is reused, so an interrupted study continues where it stopped). With `--write` the table goes to
models/xmoe/trained/scratch-study.json, the plot to model_cards/images/xmoe-scratch.png, and seed 0's
xmoe-t0.9 arm is shipped to models/xmoe/trained/scratch/. Perplexities are on the test glosses (never used for
a choice); "spread" is half the range over the seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zoo.integrations.assets import cache_dir

from .train_xmoe import ARMS, SHIPPED_ARM, shipped_dir

# the slowest first, so the last job to start is a short one
SCRATCH_ORDER = ["xmoe-t0.9", "xmoe-t0.75", "top16-of-64", "xmoe-t0.5", "top8-of-64", "top2-of-8", "dense"]
DENSE_TO_SPARSE = [("dense-to-sparse-t0.9", ["threshold=0.9"]), ("dense-to-sparse-t0.75", ["threshold=0.75"]),
                   ("dense-continued", ["sparse=false", "threshold=1.0"])]
REFERENCE_ARM = "top16-of-64"  # top-k over the same small experts, at the threshold arms' compute cap
HALF_COMPUTE_ARM = "top8-of-64"  # the same experts at half that compute


def run_dir(root: Path, name: str, seed: int) -> Path:
    return root / f"{name}-seed{seed}"


def zoo_train(recipe: str, seed: int, output_dir: Path, settings: list[str], steps: int | None) -> dict:
    results = output_dir / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    command = [sys.executable, "-m", "zoo.apps.cli", "train", "xmoe", "--recipe", recipe, "--seed", str(seed),
               "--output-dir", str(output_dir), *[arg for s in settings for arg in ("--set", s)]]
    if steps is not None:
        command += ["--max-steps", str(steps)]
    if (output_dir / "checkpoints").is_dir() and any((output_dir / "checkpoints").glob("checkpoint-*.pt")):
        command.append("--resume")
    output_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(output_dir / "train.log", "a") as log:
        done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not results.is_file():
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); see {output_dir / 'train.log'}")
    return json.loads(results.read_text())


def run_study(root: Path, seeds: list[int], jobs: int, steps: int | None, d2s_steps: int | None) -> list[dict]:
    scratch = [(arm, seed) for arm in SCRATCH_ORDER for seed in seeds]
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(lambda job: zoo_train("scratch", job[1], run_dir(root, job[0], job[1]),
                                                      [f"arm={job[0]}"], steps), scratch))
        d2s = [(name, extra, seed) for name, extra in DENSE_TO_SPARSE for seed in seeds]
        results += list(pool.map(lambda job: zoo_train(
            "dense-to-sparse", job[2], run_dir(root, job[0], job[2]),
            [*job[1], f"dense_run={run_dir(root, 'dense', job[2])}"], d2s_steps), d2s))
    return results


def add_sharpness(root: Path, results: list[dict], rows: int = 128) -> None:
    """Each MoE run's router sharpness on the first `rows` test rows (train_xmoe.router_sharpness), computed
    from its saved model/ once and kept in sharpness.json beside its results."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .train_xmoe import corpus_rows, router_sharpness

    test_rows = None
    for r in results:
        if r["plan"] is None:
            continue
        name = r["arm"] if r["arm"] != "dense-to-sparse" else f"dense-to-sparse-t{r['plan']['threshold']}"
        cached = run_dir(root, name, r["seed"]) / "sharpness.json"
        if not cached.is_file():
            folder = cached.parent / "model"
            if test_rows is None:
                test_rows = corpus_rows(AutoTokenizer.from_pretrained(folder), r["settings"]["seq_len"])["test"][:rows]
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            cached.write_text(json.dumps(router_sharpness(model, test_rows)))
        r["router_sharpness"] = json.loads(cached.read_text())


# -- the table --------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarise(results: list[dict]) -> list[dict]:
    """One row per arm (in run order): test / validation perplexity over seeds, measured FLOPs, wall time."""
    rows: dict[str, dict] = {}
    for r in results:
        name = r["arm"] if r["arm"] != "dense-to-sparse" else f"dense-to-sparse t={r['plan']['threshold']}"
        row = rows.setdefault(name, {"arm": name, "description": r["description"], "seeds": [], "test_ppl": [],
                                     "validation_ppl": [], "expert_flops": [], "experts_per_token": [],
                                     "dropped": [], "train_seconds": [], "parameters": r["parameters"],
                                     "train_tokens": r["train_tokens"]})
        row["seeds"].append(r["seed"])
        row["test_ppl"].append(r["test"]["perplexity"])
        row["validation_ppl"].append(r["validation"]["perplexity"])
        row["expert_flops"].append(r["test"]["expert_flops"])
        row["experts_per_token"].append(r["test"]["experts_per_token"])
        row["dropped"].append(r["test"]["dropped_fraction"])
        row["train_seconds"].append(r["train_seconds"])
        if r.get("router_sharpness"):
            row.setdefault("top1_probability", []).append(r["router_sharpness"]["top1_probability"])
    for row in rows.values():
        ppl = row["test_ppl"]
        row["test_ppl_mean"], row["test_ppl_spread"] = _mean(ppl), (max(ppl) - min(ppl)) / 2
        row["expert_flops_mean"] = _mean(row["expert_flops"])
    return list(rows.values())


def markdown_table(rows: list[dict]) -> str:
    lines = ["| arm | expert FLOPs / token (dense FFN = 100%) | experts / token | experts wanted (before capacity) | "
             "router top-1 probability | test perplexity (mean ± half-range, seeds) | validation perplexity | "
             "train wall (s) | parameters |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        k = row["experts_per_token"]
        wanted = [n / (1 - d) for n, d in zip(k, row["dropped"])] if k[0] is not None else None
        top1 = f"{_mean(row['top1_probability']):.3f}" if row.get("top1_probability") else "-"
        lines.append(
            f"| {row['arm']} | {row['expert_flops_mean']:.1%} | {'-' if k[0] is None else f'{_mean(k):.2f}'} | "
            f"{'-' if wanted is None else f'{_mean(wanted):.1f}'} | "
            f"{top1} | "
            f"{row['test_ppl_mean']:.2f} ± {row['test_ppl_spread']:.2f} "
            f"({', '.join(f'{p:.2f}' for p in row['test_ppl'])}) | {_mean(row['validation_ppl']):.2f} | "
            f"{_mean(row['train_seconds']):.0f} | {row['parameters'] / 1e6:.2f} M |")
    return "\n".join(lines)


def compare(row: dict, reference: dict) -> str:
    """One arm against another: expert FLOPs saved, the test perplexity gap, and whether the seed ranges overlap."""
    saved = 1 - row["expert_flops_mean"] / reference["expert_flops_mean"]
    gap = row["test_ppl_mean"] - reference["test_ppl_mean"]
    spread = row["test_ppl_spread"] + reference["test_ppl_spread"]  # the two seed ranges overlap: on par
    verdict = "on par" if abs(gap) <= spread else ("worse" if gap > 0 else "better")
    return (f"{row['arm']} vs {reference['arm']}: {saved:+.1%} expert FLOPs saved, test perplexity {gap:+.2f} "
            f"(seed ranges {'overlap' if verdict == 'on par' else 'apart'}: {verdict})")


def claim_lines(rows: list[dict]) -> list[str]:
    """Each threshold arm against top-k over the same experts at the cap's compute and at half of it; top-k's
    own halving; standard against small experts; dense-to-sparse against training the dense model on."""
    by_name = {row["arm"]: row for row in rows}
    pairs = [(name, ref) for ref in (REFERENCE_ARM, HALF_COMPUTE_ARM) for name in by_name if name.startswith("xmoe-")]
    pairs += [(HALF_COMPUTE_ARM, REFERENCE_ARM), ("top2-of-8", REFERENCE_ARM), ("dense", REFERENCE_ARM)]
    pairs += [(name, "dense-continued") for name in by_name if name.startswith("dense-to-sparse")]
    return [compare(by_name[a], by_name[b]) for a, b in pairs if a in by_name and b in by_name]


# -- the plot ---------------------------------------------------------------------------------------
def plot(rows: list[dict], path: Path) -> Path:
    """Test perplexity against measured expert FLOPs, one marker per seed, a label per arm (PIL only)."""
    from PIL import Image, ImageDraw

    width, height, margin = 900, 560, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = [(f, p) for row in rows for f, p in zip(row["expert_flops"], row["test_ppl"])]
    x_low, x_high = 0.0, max(f for f, _ in points) * 1.1
    y_low, y_high = min(p for _, p in points) * 0.98, max(p for _, p in points) * 1.02

    def at(flops: float, ppl: float) -> tuple[float, float]:
        return (margin + (flops - x_low) / (x_high - x_low) * (width - 2 * margin),
                height - margin - (ppl - y_low) / (y_high - y_low) * (height - 2 * margin))

    draw.line([(margin, height - margin), (width - margin, height - margin)], fill="black")
    draw.line([(margin, margin), (margin, height - margin)], fill="black")
    for i in range(6):
        flops = x_low + (x_high - x_low) * i / 5
        ppl = y_low + (y_high - y_low) * i / 5
        x, _ = at(flops, y_low)
        _, y = at(x_low, ppl)
        draw.text((x - 12, height - margin + 6), f"{flops:.0%}", fill="black")
        draw.text((8, y - 6), f"{ppl:.1f}", fill="black")
    draw.text((width // 2 - 140, height - 30), "expert FLOPs per token (dense FFN = 100%)", fill="black")
    draw.text((8, 20), "test perplexity (WordNet glosses)", fill="black")
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    for i, row in enumerate(rows):
        colour = colours[i % len(colours)]
        for flops, ppl in zip(row["expert_flops"], row["test_ppl"]):
            x, y = at(flops, ppl)
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
        x, y = at(row["expert_flops_mean"], row["test_ppl_mean"])
        draw.text((x + 8, y - 14 + 12 * (i % 2)), row["arm"], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--root", type=Path, default=cache_dir() / "xmoe-scratch" / "study")
    p.add_argument("--steps", type=int, default=None, help="override every scratch run's steps (smoke runs)")
    p.add_argument("--d2s-steps", type=int, default=None, help="override every dense-to-sparse run's steps")
    p.add_argument("--write", action="store_true", help="write the table, the plot and the shipped arm into the repo")
    args = p.parse_args(argv)
    results = run_study(args.root, args.seeds, args.jobs, args.steps, args.d2s_steps)
    shas = {r["tokenizer_sha256"] for r in results}
    if len(shas) != 1:
        raise RuntimeError(f"the runs used {len(shas)} different tokenizers: their perplexities do not compare")
    add_sharpness(args.root, results)
    rows = summarise(results)
    print(markdown_table(rows))
    print("\n".join(claim_lines(rows)))
    if args.write:
        from zoo.models import trained_dir

        from .train_xmoe import ship

        repo = Path(__file__).resolve().parents[1]
        study = {"command": "python -m zoo.pipelines.xmoe_study --write", "rows": rows, "claims": claim_lines(rows),
                 "runs": [{k: v for k, v in r.items() if k != "train_curve_every_10_steps"} for r in results]}
        (trained_dir("xmoe") / "scratch-study.json").write_text(json.dumps(study, indent=1))
        print(plot(rows, repo / "model_cards" / "images" / "xmoe-scratch.png"))
        shipped = next(r for r in results if r["arm"] == SHIPPED_ARM and r["seed"] == args.seeds[0])
        print(ship(run_dir(args.root, SHIPPED_ARM, args.seeds[0]), shipped))
        from .xmoe_card import render

        (shipped_dir() / "README.md").write_text(render())  # the model card of the shipped folder
    return 0


if __name__ == "__main__":
    sys.exit(main())
