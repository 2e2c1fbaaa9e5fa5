"""XMoE on real weights: threshold routing vs top-k over the same fine-grained experts.

    python -m benchmarks.xmoe [--steps 80] [--save]        (run it under `flock /tmp/zoo-heavy.lock`)

SmolLM2-135M-Instruct (zoo.integrations.assets, offline) is upcycled twice with the same experts: each dense
FFN (1536 hidden units) is split into 16 experts of 96 units (XMoE's fine-grained experts, equal
parameters in both runs), and gets either

    top-k      a softmax router that always takes k experts, its k weights renormalised to sum to 1 (Mixtral-style;
               the plan's default `normalize=True`)
    threshold  XMoE's router: experts in order of probability until their mass reaches t (k varies per token),
               weighted by their raw probabilities (no renormalisation)

(The split experts are scaled by E = 16, so from the zero-initialised router the threshold router's raw
weights of 1/16 give each chosen expert its own slice of the dense FFN, while top-k's renormalised 1/k
give each chosen slice E/k times its weight: 2x at k = 8.)

Only the routers are trained (the experts are the dense model's own weights), for the same number of
steps on the same batches, on WordNet's glosses (Debian `wordnet-base`: 117k English definitions,
a real offline corpus; `apt-get install wordnet-base`). A held-out 5% of the glosses gives the
loss; the experts each token uses give the expert FLOPs (relative to the dense FFN, which is all 16
experts). The dense model itself is the reference loss. The paper's claim to check: threshold
routing needs > 50% fewer expert FLOPs than top-k at about equal loss. Both trained routers are then
evaluated at other k / t without retraining, to show each method's loss-vs-FLOPs curve.

With `--save`, the threshold run's routers go to models/xmoe/trained/ for the gallery's chat tab.
"""
from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from torch.nn import functional as F

from zoo.core.precision import autocast
from zoo.integrations.assets import load_smollm2
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.pipelines.wordnet import packed_sequences, wordnet_glosses
from zoo.pipelines.xmoe_smollm2 import ROUTERS_FILE, save_routers, xmoe_plan
from zoo.upcycling.plan import UpcyclePlan


# -- data ------------------------------------------------------------------------------------------
def corpus(tokenizer, seq_len: int, heldout_fraction: float = 0.05, seed: int = 0):
    texts = wordnet_glosses()
    random.Random(seed).shuffle(texts)
    cut = int(len(texts) * (1 - heldout_fraction))
    return packed_sequences(tokenizer, texts[:cut], seq_len), packed_sequences(tokenizer, texts[cut:], seq_len)


# -- models ----------------------------------------------------------------------------------------
def upcycled_smollm2(plan: UpcyclePlan) -> UpcycledMoeForCausalLM:
    base, _ = load_smollm2(progress=True)
    model = UpcycledMoeForCausalLM.from_dense(base, plan)
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(".router.weight"))
    return model


def set_routing(model: UpcycledMoeForCausalLM, top_k: int | None = None, threshold: float | None = None) -> None:
    """Evaluate a trained router at another k (top-k) or t (threshold); the weights do not change."""
    for _, ffn in model.moe_layers():
        if top_k is not None:
            ffn.moe.router.top_k = top_k
        if threshold is not None:
            ffn.moe.router.threshold = threshold


def lm_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """Next-token loss of a dense or upcycled causal LM (the router losses are added by the caller)."""
    causal_lm = model.model if isinstance(model, UpcycledMoeForCausalLM) else model
    hidden = causal_lm.model(input_ids=batch).last_hidden_state[:, :-1]  # [B, S-1, H]
    logits = causal_lm.lm_head(hidden).float()  # [B, S-1, V]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def train_routers(model, train: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int, log) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        rows = order[(step * batch_size + torch.arange(batch_size)) % len(order)]
        with autocast():  # bf16 where the CPU has it natively (zoo.core.precision); router math stays fp32 in the core
            loss = lm_loss(model, train[rows])
            aux = torch.stack([ffn.last_routing.aux_losses["load_balance"] for _, ffn in model.moe_layers()]).mean()
            total = loss + model.config.router_aux_loss_coef * aux
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 25 == 0 or step == steps - 1:
            log(f"    step {step:4d}  loss {loss.item():.3f}  experts/token {experts_per_token(model):.2f}  "
                f"({(time.perf_counter() - start) / (step + 1):.2f} s/step)")
    model.eval()
    return time.perf_counter() - start


def experts_per_token(model) -> float:
    counts = [ffn.last_routing.metrics()["experts_per_token"] for _, ffn in model.moe_layers()]
    return sum(counts) / len(counts)


@torch.no_grad()
def evaluate(model, heldout: torch.Tensor, batch_size: int = 16) -> tuple[float, float]:
    """(mean held-out LM loss, mean experts per token over MoE layers); fp32."""
    losses, experts = [], []
    for i in range(0, len(heldout), batch_size):
        batch = heldout[i:i + batch_size]
        losses.append(lm_loss(model, batch).item() * len(batch))
        if hasattr(model, "moe_layers"):
            experts.append(experts_per_token(model) * len(batch))
    n = len(heldout)
    return sum(losses) / n, (sum(experts) / n if experts else float("nan"))


# -- the benchmark ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=8, help="top-k baseline: experts per token (default: half)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.5],
                   help="XMoE thresholds t to train (0.9 is the paper's; 0.5 starts at top-8's compute)")
    p.add_argument("--heldout-seqs", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true", help=f"write the first threshold run's routers to {ROUTERS_FILE}")
    args = p.parse_args(argv)

    def log(text: str) -> None:
        print(text, flush=True)

    torch.manual_seed(args.seed)
    _, tokenizer = load_smollm2(progress=True)
    train, heldout = corpus(tokenizer, args.seq_len, seed=args.seed)
    heldout = heldout[: args.heldout_seqs]
    log(f"XMoE benchmark: SmolLM2-135M-Instruct, WordNet glosses ({len(train)} train / {len(heldout)} held-out "
        f"sequences of {args.seq_len} tokens), {args.steps} router-only steps x {args.batch_size} sequences, "
        f"lr {args.lr}, {args.experts} experts of {1536 // args.experts} units per FFN in all 30 layers")

    dense, _ = load_smollm2(progress=False)
    dense_loss, _ = evaluate(dense, heldout)
    del dense
    rows = [("dense SmolLM2 (all units)", dense_loss, float(args.experts), "-")]

    # Same experts, same zero router init, same batches; only the routing rule differs. Top-k is the
    # standard Mixtral router (renormalised weights); the threshold router uses raw probabilities (XMoE).
    runs = {f"top-{args.top_k} (renormalised)": xmoe_plan(args.experts).replace(router="top_k", num_experts_per_tok=args.top_k)}
    runs |= {f"threshold t={t}": xmoe_plan(args.experts, threshold=t) for t in args.thresholds}
    sweeps = {"top_k": [("k", {"top_k": k}) for k in (12,) if k != args.top_k],
              "threshold": [("t", {"threshold": t}) for t in (0.7,) if t not in args.thresholds]}
    curves, saved = {}, not args.save
    for name, plan in runs.items():
        log(f"\n== {name}: training the routers")
        model = upcycled_smollm2(plan)
        loss0, k0 = evaluate(model, heldout)
        log(f"    step 0 (untrained): held-out loss {loss0:.4f}, experts/token {k0:.2f}")
        seconds = train_routers(model, train, args.steps, args.batch_size, args.lr, args.seed, log)
        loss, k = evaluate(model, heldout)
        rows.append((name, loss, k, f"{seconds:.0f}"))
        curves[name] = [(f"{name} (as trained)", loss, k)]
        for letter, setting in sweeps[plan.router]:
            set_routing(model, **setting)
            curves[name].append((f"  same router at {letter}={next(iter(setting.values()))}", *evaluate(model, heldout)))
        set_routing(model, top_k=plan.num_experts_per_tok if plan.router == "top_k" else None,
                    threshold=plan.threshold if plan.router == "threshold" else None)
        if not saved and plan.router == "threshold":
            path = save_routers(model, ROUTERS_FILE, steps=args.steps, corpus="WordNet glosses (wordnet-base)",
                                heldout_loss=round(loss, 4), dense_heldout_loss=round(dense_loss, 4),
                                experts_per_token=round(k, 2),
                                command=" ".join(["python -m benchmarks.xmoe", *(sys.argv[1:] if argv is None else argv)]))
            log(f"    saved the routers to {path} ({path.stat().st_size / 1e6:.2f} MB)")
            saved = True
        del model

    log("\n== results (held-out loss on WordNet glosses; expert FLOPs relative to the dense FFN)")
    log(f"{'model':40s} {'loss':>8s} {'experts/token':>14s} {'expert FLOPs':>13s} {'train s':>8s}")
    for name, loss, k, seconds in rows:
        log(f"{name:40s} {loss:8.4f} {k:14.2f} {k / args.experts:13.1%} {seconds:>8s}")
    log("\n== loss vs expert FLOPs of each trained router at other settings (no retraining)")
    for curve in curves.values():
        for name, loss, k in sorted(curve, key=lambda row: row[2]):
            log(f"{name:40s} {loss:8.4f} {k:14.2f} {k / args.experts:13.1%}")
    _, topk_loss, topk_k, _ = rows[1]
    log("")
    for name, loss, k, _ in rows[2:]:
        saving = 1 - k / topk_k
        met = saving > 0.5 and loss - topk_loss < 0.02 * topk_loss
        log(f"{name} vs top-{args.top_k}: {abs(saving):.1%} {'fewer' if saving >= 0 else 'more'} expert FLOPs, "
            f"loss {loss - topk_loss:+.4f} "
            f"({(loss - topk_loss) / topk_loss:+.1%}); paper's claim (> 50% fewer at about equal loss): "
            f"{'met' if met else 'not met'} here")


if __name__ == "__main__":
    sys.exit(main())
