"""Upcycling cost on the real SmolLM2-135M-Instruct: wall time and peak memory.

    python -m benchmarks.upcycle [--plans top2-of-4 xmoe moe_llava]

Each plan runs in a fresh process (so peak RSS is that plan's alone): load the fp32 cache
(zoo.integrations.assets.load_smollm2), upcycle in place (zoo.upcycle), then report
- upcycle seconds (the `zoo.upcycle` call only),
- the upcycled model's bytes (sum of parameter bytes) and the process's peak RSS over its whole life
  (loading included), and their ratio (issue 3's target: <= 10 s and peak RSS <= 2x model bytes);
  the RSS of the bare runtime (python + torch + transformers + zoo imported, no model: ~0.8 GB here)
  is printed too, with the ratio of what the model work adds on top of it,
- the largest logit difference to the dense model on one prompt (copy + renormalised top-k and
  split + threshold 1.0 preserve the function; other plans are not meant to).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

PRESERVING = {"top2-of-4": {}, "top2-of-8": {}, "xmoe": {"threshold": 1.0}}


def run_one(plan_name: str) -> dict:
    import torch

    import zoo
    from zoo.integrations.assets import load_smollm2

    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the runtime alone, before any weights

    start = time.perf_counter()
    model, tokenizer = load_smollm2(torch.float32, progress=False)
    load_seconds = time.perf_counter() - start
    ids = tokenizer("The three primary colors are", return_tensors="pt").input_ids
    with torch.no_grad():
        dense = model(ids).logits[:, -3:].clone()  # 3 positions x 49k vocab: small, enough to compare
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    plan = zoo.PLANS[plan_name].replace(**PRESERVING.get(plan_name, {}))
    start = time.perf_counter()
    zoo.upcycle(model, plan)
    upcycle_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        diff = (model(ids).logits[:, -3:] - dense).abs().max().item()
    return {"plan": plan_name + (" (threshold 1.0)" if plan_name == "xmoe" else ""), "load_s": load_seconds,
            "upcycle_s": upcycle_seconds, "model_bytes": model_bytes, "peak_rss_before": rss_before,
            "peak_rss": peak, "ratio": peak / model_bytes,
            "floor": floor, "ratio_above_floor": (peak - floor) / model_bytes, "max_logit_diff": diff}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=["top2-of-4", "xmoe", "moe_llava"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    print("SmolLM2-135M-Instruct (fp32), one fresh process per plan")
    print(f"{'plan':<22} {'upcycle s':>9} {'model GB':>9} {'peak RSS GB':>11} {'RSS/model':>9} "
          f"{'runtime GB':>10} {'(RSS-runtime)/model':>19} {'max |dlogit|':>12}")
    for name in args.plans:
        out = subprocess.run([sys.executable, "-m", "benchmarks.upcycle", "--one", name], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['plan']:<22} {r['upcycle_s']:>9.2f} {r['model_bytes'] / 1e9:>9.3f} {r['peak_rss'] / 1e9:>11.3f} "
              f"{r['ratio']:>9.2f} {r['floor'] / 1e9:>10.3f} {r['ratio_above_floor']:>19.2f} {r['max_logit_diff']:>12.2e}")
    print("target (issue 3): upcycle <= 10 s, peak RSS <= 2.00 x the upcycled model's bytes")


if __name__ == "__main__":
    main()
