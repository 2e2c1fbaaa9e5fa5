"""MoFME vs the conventional MoE counterpart at paper size, E in {4, 8, 16}, k in {2, 4}.

    python -m benchmarks.mofme [--batch 2] [--repeats 3] [--skip-model-time] [--save PATH]

Prints, in one run, per (E, k): MoE-FFN-block parameters (both layers), total parameters, and
inference time on a batch of 240 x 240 crops, for
  * the MoE FFN blocks alone (the same [B, 900, 384] tokens through both layers' MoE blocks), with
    sparse dispatch (each token runs its k experts) and with all E experts computed, as the released
    code does (it multiplies unrouted experts by zero), emulated by k = E;
  * the whole network (head, transformer, decoder).
Ratios are MoFME / MoE counterpart; the paper's abstract claims > 72% fewer parameters and 39% less
inference time. fp32, eval mode, CPU, torch's default threads; fastest of `repeats` interleaved runs after a warm-up.
"""
from __future__ import annotations

import argparse
import builtins
import statistics
import time
from pathlib import Path

import torch

from zoo.models.mofme import MoFMEForImageRestoration
from zoo.models.mofme.presets import PAPER_EXPERTS, PAPER_TOP_K, moe_ffn_parameters, paper_config

CROP = 240


def paired_seconds(fns, repeats: int) -> list[float]:
    """Fastest of `repeats` runs of each function, interleaved (a, b, a, b, ...) so that load from
    other processes on this shared machine hits both sides alike; the minimum is the least disturbed run."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            began = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - began)
    return best


@torch.inference_mode()
def block_seconds(models, tokens: torch.Tensor, repeats: int) -> list[float]:
    return paired_seconds([lambda m=m: [layer.moe(tokens) for layer in m.layers] for m in models], repeats)


@torch.inference_mode()
def model_seconds(models, pixels: torch.Tensor, repeats: int) -> list[float]:
    return paired_seconds([lambda m=m: m(pixel_values=pixels) for m in models], repeats)


def build(num_experts: int, top_k: int, moe_type: str) -> MoFMEForImageRestoration:
    torch.manual_seed(0)
    return MoFMEForImageRestoration(paper_config(num_experts, top_k, moe_type)).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-model-time", action="store_true")
    parser.add_argument("--save", default=None, metavar="PATH",
                        help="also write the printed report there (models/mofme/trained/benchmark.txt feeds the model card)")
    args = parser.parse_args(argv)
    report: list[str] = []

    def print(line: str = "") -> None:  # noqa: A001  (echo and keep every line for --save)
        builtins.print(line, flush=True)
        report.append(line)

    torch.manual_seed(0)
    pixels = torch.rand(args.batch, 3, CROP, CROP)
    tokens = torch.randn(args.batch, (CROP // 8) ** 2, 384)
    print(f"MoFME (FME) vs MoE counterpart, paper size D=384, depth 2; batch {args.batch} x {CROP}x{CROP}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = (f"{'E':>3} {'k':>2} | {'FFN-block params M':>22} {'saved':>6} | {'total params M':>18} {'saved':>6} | "
              f"{'block ms sparse':>18} {'saved':>6} | {'block ms all-E':>18} {'saved':>6} | {'model ms':>18} {'saved':>6}")
    print(header)
    print("-" * len(header))
    saved = lambda a, b: f"{100 * (1 - a / b):5.1f}%"  # noqa: E731
    summary = []
    for e in PAPER_EXPERTS:
        for k in PAPER_TOP_K:
            fme, ffn = build(e, k, "fme"), build(e, k, "ffn")
            block = [moe_ffn_parameters(m) / 1e6 for m in (fme, ffn)]
            total = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (fme, ffn)]
            sparse = [1e3 * t for t in block_seconds((fme, ffn), tokens, args.repeats)]
            dense = [1e3 * t for t in block_seconds((build(e, e, "fme"), build(e, e, "ffn")), tokens, args.repeats)]
            whole = [float("nan")] * 2 if args.skip_model_time else [1e3 * t for t in model_seconds((fme, ffn), pixels, args.repeats)]
            summary.append((block, total, sparse, dense, whole))
            print(f"{e:>3} {k:>2} | {block[0]:9.2f} / {block[1]:9.2f} {saved(*block)} | {total[0]:7.2f} / {total[1]:7.2f}  "
                  f"{saved(*total)} | {sparse[0]:7.1f} / {sparse[1]:7.1f}  {saved(*sparse)} | "
                  f"{dense[0]:7.1f} / {dense[1]:7.1f}  {saved(*dense)} | {whole[0]:7.0f} / {whole[1]:7.0f}  {saved(*whole)}")
    columns = ["FFN-block params", "total params", "block time (sparse)", "block time (all E)", "model time"]
    print("\nmean saving of MoFME over the MoE counterpart across the sweep (paper: >72% params, 39% time):")
    for i, name in enumerate(columns):
        values = [1 - row[i][0] / row[i][1] for row in summary]
        print(f"  {name:<20} {100 * statistics.mean(values):5.1f}%  (range {100 * min(values):.1f}% .. {100 * max(values):.1f}%)")
    if args.save:
        Path(args.save).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
