"""MoE layer benchmark: zoo `MoEBlock` vs transformers 5's `MixtralSparseMoeBlock` (`MixtralExperts`)
with its `eager` and `grouped_mm` experts implementations, on the same weights and tokens.

    python -m benchmarks.moe_layer            # the full table (several minutes on 2 cores)
    python -m benchmarks.moe_layer --quick    # fewer repeats, for a smoke run

Ratios are transformers time / zoo time (higher = zoo faster). Every time is the median of
`--repeats` runs after a warmup run. "dense %" is the zoo's active-FLOP rate as a share of a
dense SwiGLU FFN doing the same FLOPs (intermediate size k*I) measured in the same run.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch
import transformers
from torch.profiler import profile
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

from zoo import GLUExperts, MoEBlock, TopKRouter

TOKENS = 1024
SHAPES = [(8, 2, 1024, 2048), (64, 8, 1024, 512)]  # (E, k, H, I) from issue 2
SWEEP_EXPERTS = [4, 8, 16, 32, 64]  # at k=2, H=1024, I=512
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
HF_IMPLEMENTATIONS = ["eager", "grouped_mm"]
SLOW_CALL_S = 5.0  # a call slower than this is timed once more only (transformers eager backward at E=64)


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, load average at start {load}")


def median_seconds(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Median wall time of each function. The functions take turns within every repeat, so a load
    change on the (shared) machine hits all of them alike and the ratios stay meaningful."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():  # warmup
        start = time.perf_counter()
        fn()
        if time.perf_counter() - start > SLOW_CALL_S:
            times[name].append(time.perf_counter() - start)  # too slow to repeat: the warmup counts
    for _ in range(repeats):
        for name, fn in fns.items():
            if times[name] and times[name][0] > SLOW_CALL_S:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def build_pair(num_experts: int, top_k: int, hidden: int, inter: int, dtype: torch.dtype):
    """A transformers Mixtral block and a zoo MoEBlock holding the same weights."""
    torch.manual_seed(0)
    config = MixtralConfig(hidden_size=hidden, intermediate_size=inter, num_local_experts=num_experts,
                           num_experts_per_tok=top_k)
    hf = MixtralSparseMoeBlock(config)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.02)
    zoo = MoEBlock(TopKRouter(hidden, num_experts, top_k), GLUExperts(num_experts, hidden, inter))
    with torch.no_grad():
        zoo.router.weight.copy_(hf.gate.weight)
        zoo.experts.gate_up_proj.copy_(hf.experts.gate_up_proj)
        zoo.experts.down_proj.copy_(hf.experts.down_proj)
    return hf.to(dtype), zoo.to(dtype), config


def dense_ffn(hidden: int, inter: int, dtype: torch.dtype):
    torch.manual_seed(0)
    gate_up = (torch.randn(2 * inter, hidden) * 0.02).to(dtype).requires_grad_()
    down = (torch.randn(hidden, inter) * 0.02).to(dtype).requires_grad_()

    def forward(x):
        gate, up = torch.nn.functional.linear(x, gate_up).chunk(2, dim=-1)
        return torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, down)

    return forward, [gate_up, down]


def make_step(forward, params, x: torch.Tensor, backward: bool):
    grad_out = torch.randn_like(x)

    def step():
        if not backward:
            with torch.no_grad():
                forward(x)
            return
        for p in params:
            p.grad = None
        x.grad = None
        out = forward(x)
        out.backward(grad_out)

    return step


def uses_grouped_mm(fn) -> bool:
    """Did `fn` run aten::_grouped_mm? (verifies which transformers path actually ran)."""
    with torch.no_grad(), profile() as prof:
        fn()
    return any("grouped_mm" in event.key for event in prof.key_averages())


def time_shape(num_experts, top_k, hidden, inter, dtype_name, repeats) -> list[dict]:
    dtype = DTYPES[dtype_name]
    hf, zoo, config = build_pair(num_experts, top_k, hidden, inter, dtype)
    x = torch.randn(1, TOKENS, hidden, dtype=dtype) * 1.0
    flops = 6 * TOKENS * top_k * hidden * inter  # active forward FLOPs: 3 matmuls of H x I per slot
    dense, dense_params = dense_ffn(hidden, top_k * inter, dtype)
    rows = []
    for backward in (False, True):
        xs = x.clone().requires_grad_(backward)
        row = {"shape": f"E={num_experts},k={top_k},H={hidden},I={inter}", "dtype": dtype_name,
               "mode": "fwd+bwd" if backward else "fwd", "flops": flops * (3 if backward else 1)}
        steps = {"zoo": make_step(lambda h: zoo(h)[0], list(zoo.parameters()), xs, backward)}
        for impl in HF_IMPLEMENTATIONS:
            hf_copy = copy.deepcopy(hf)  # its own copy of the config, so each keeps its implementation
            hf_copy.experts.config._experts_implementation = impl
            if not backward and uses_grouped_mm(lambda: hf_copy(x)) != (impl == "grouped_mm"):
                raise RuntimeError(f"transformers experts implementation {impl!r} did not run the expected path")
            steps[impl] = make_step(hf_copy, list(hf_copy.parameters()), xs, backward)
        steps["dense"] = make_step(dense, dense_params, xs.view(TOKENS, hidden), backward)
        row.update(median_seconds(steps, repeats))
        rows.append(row)
    return rows


def time_sweep(repeats: int) -> list[dict]:
    rows = []
    for num_experts in SWEEP_EXPERTS:
        _, zoo, _ = build_pair(num_experts, 2, 1024, 512, torch.float32)
        x = torch.randn(1, TOKENS, 1024)
        row = {"E": num_experts}
        for backward in (False, True):
            xs = x.clone().requires_grad_(backward)
            step = make_step(lambda h: zoo(h)[0], list(zoo.parameters()), xs, backward)
            row["fwd+bwd" if backward else "fwd"] = median_seconds({"zoo": step}, repeats)["zoo"] / TOKENS
        rows.append(row)
    return rows


def format_tables(rows: list[dict], sweep: list[dict]) -> str:
    lines = [
        f"MoE layer, T={TOKENS} tokens. ms = median wall time; ratio = transformers / zoo (higher = zoo faster);",
        "dense % = zoo active-FLOP rate / rate of a dense SwiGLU FFN with the same FLOPs (intermediate k*I).",
        "",
        f"{'shape':<26}{'dtype':<6}{'mode':<9}{'zoo ms':>9}{'hf eager':>10}{'hf grouped':>11}"
        f"{'x eager':>9}{'x grouped':>10}{'x best':>8}{'zoo GF/s':>10}{'dense GF/s':>11}{'dense %':>9}",
    ]
    for r in rows:
        best = min(r["eager"], r["grouped_mm"])
        zoo_rate, dense_rate = r["flops"] / r["zoo"] / 1e9, r["flops"] / r["dense"] / 1e9
        lines.append(
            f"{r['shape']:<26}{r['dtype']:<6}{r['mode']:<9}{r['zoo'] * 1e3:>9.1f}{r['eager'] * 1e3:>10.1f}"
            f"{r['grouped_mm'] * 1e3:>11.1f}{r['eager'] / r['zoo']:>9.2f}{r['grouped_mm'] / r['zoo']:>10.2f}"
            f"{best / r['zoo']:>8.2f}{zoo_rate:>10.1f}{dense_rate:>11.1f}{100 * zoo_rate / dense_rate:>8.0f}%"
        )
    if sweep:
        base = sweep[0]
        lines += ["", "zoo time per token as E grows (k=2, H=1024, I=512, fp32):",
                  f"{'E':>4}{'fwd us/tok':>12}{'growth':>8}{'fwd+bwd us/tok':>16}{'growth':>8}"]
        for r in sweep:
            lines.append(f"{r['E']:>4}{r['fwd'] * 1e6:>12.1f}{r['fwd'] / base['fwd']:>8.2f}"
                         f"{r['fwd+bwd'] * 1e6:>16.1f}{r['fwd+bwd'] / base['fwd+bwd']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, fp32 only, no E sweep")
    parser.add_argument("--shapes", default="all", help="'all' or comma-separated indices into SHAPES")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    print(machine(), flush=True)
    shapes = SHAPES if args.shapes == "all" else [SHAPES[int(i)] for i in args.shapes.split(",")]
    rows = []
    for shape in shapes:
        for dtype_name in (["fp32"] if args.quick else list(DTYPES)):
            rows += time_shape(*shape, dtype_name, repeats)
            print("\n".join(format_tables(rows[-2:], []).splitlines()[-2:]), flush=True)  # progress
    sweep = [] if args.quick else time_sweep(repeats)
    print()
    print(format_tables(rows, sweep))


if __name__ == "__main__":
    main()
