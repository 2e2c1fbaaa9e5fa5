"""Decode speed of the zoo's upcycled SmolLM2 against its native-export twin and the dense base.

    python -m benchmarks.decode [--new-tokens 128] [--batches 1 8] [--threads 2]

SmolLM2-135M-Instruct (zoo.integrations.assets, offline) upcycled with `top2-of-4` (random router: speed does not
depend on the values) in bf16, `generate()` greedy with the KV cache, `--new-tokens` new tokens after a 16-token
prompt (every row the same length, no padding), at each batch size:

    zoo            UpcycledMoeForCausalLM (dispatch backend `auto`)
    native/<impl>  the same weights through `zoo.integrations.native_export.to_native` -> MixtralForCausalLM,
                   with transformers' experts implementation <impl> (`eager`, `grouped_mm`)
    dense          the dense base model (what the MoE costs over it)

tokens/s = batch x new tokens / wall seconds, the median of `--repeats` runs after one warm-up; ratios are against
the best native implementation measured in the same run. MoE-LLaVA (MoE on even layers) and MoTE (ternary
experts) have no native transformers twin (Mixtral needs every layer MoE, GLU experts): they are not in this table.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from zoo.integrations.assets import load_smollm2
from zoo.integrations.native_export import to_native
from zoo.models.upcycled import UpcycledMoeForCausalLM


def tokens_per_second(model, batch: int, new_tokens: int, repeats: int) -> float:
    prompt = torch.randint(100, 1000, (batch, 16), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
            times.append(time.perf_counter() - start)
            assert out.shape[1] == 16 + new_tokens
    return batch * new_tokens / statistics.median(times[1:])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense, _ = load_smollm2(progress=True)
    dense = dense.to(torch.bfloat16).eval()
    zoo_model = UpcycledMoeForCausalLM.from_dense(copy.deepcopy(dense), "top2-of-4").eval()
    models = {"zoo": zoo_model}
    for impl in ("eager", "grouped_mm"):
        native = to_native(zoo_model)
        native.config._experts_implementation = impl  # every layer's experts read the shared config per call
        models[f"native/{impl}"] = native
    models["dense"] = dense
    print(f"SmolLM2-135M-Instruct top2-of-4, bf16, {args.new_tokens} new tokens, {args.threads} threads, "
          f"median of {args.repeats}")
    print(f"{'model':18s} " + " ".join(f"{f'batch {b} tok/s':>16s} {'ratio':>6s}" for b in args.batches))
    rates = {name: [tokens_per_second(m, b, args.new_tokens, args.repeats) for b in args.batches] for name, m in models.items()}
    best = [max(rates[n][i] for n in rates if n.startswith("native/")) for i in range(len(args.batches))]
    for name, row in rates.items():
        print(f"{name:18s} " + " ".join(f"{r:16.1f} {r / b:6.2f}" for r, b in zip(row, best)))
    print("ratio: tokens/s over the best native implementation in this run (> 1 = faster than transformers)")


if __name__ == "__main__":
    main()
