"""Expert parallelism at paper size: weight memory per GPU and all-to-all traffic per step for MoIIE
(llama3-8b-siglip, 11.3B activated) and Uni-MoE 8E on N = 1, 2, 4, 8 GPUs, from the presets built on the
meta device (no weights). Prints the README's table (section "Expert parallelism at paper size").

Model, per GPU, with E experts per MoE layer spread evenly over P = min(N, E) GPUs (E/P each; with N > E
the experts are replicated N/P times), everything else replicated:
    weights   = bytes x (dense + experts / P)                                  bf16: 2 bytes per parameter
    all-to-all per MoE layer and forward = 2 x T x k x H x bytes x (P - 1) / P
        T tokens on the GPU, each sent to its k experts (dispatch) and the k results sent back (combine),
        2 messages of H values per (token, expert) pair; with uniform routing a pair's expert is on another
        GPU of its group with probability (P - 1) / P. Backward sends the same again (gradients of both exchanges).
"""
from __future__ import annotations

import argparse

BYTES = 2  # bf16
GPUS = (1, 2, 4, 8)


def moe_layout(model) -> dict:
    """Parameter split and MoE shape of a zoo multimodal model (built on meta)."""
    layers = model.moe_feed_forwards()
    experts = sum(p.numel() for ffn in layers for p in ffn.moe.experts.parameters())
    total = sum(p.numel() for p in model.parameters())
    bank = layers[0].moe.experts
    return {"total": total, "experts": experts, "dense": total - experts, "moe_layers": len(layers),
            "num_experts": bank.num_experts, "top_k": model.config.num_experts_per_tok, "hidden": bank.hidden_size}


def paper_layouts() -> dict[str, dict]:
    from zoo.models.moiie import presets as moiie
    from zoo.models.moiie.modeling_moiie import MoiieForConditionalGeneration
    from zoo.models.unimoe import presets as unimoe
    from zoo.models.unimoe.modeling_unimoe import UniMoeForConditionalGeneration
    from zoo.multimodal.modeling import build_on_meta

    return {
        "MoIIE llama3-8b-siglip": moe_layout(build_on_meta(MoiieForConditionalGeneration, moiie.preset_config("llama3-8b-siglip"))),
        "Uni-MoE 8E": moe_layout(unimoe.build_on_meta(UniMoeForConditionalGeneration, unimoe.preset_config("8e"))),
    }


def expert_ranks(layout: dict, gpus: int) -> int:
    """GPUs one set of experts spreads over: at most one expert per GPU, so beyond E GPUs the experts are
    replicated in groups of E (transformers' ep_size < world size: the rest is FSDP over the replicas)."""
    ranks = min(gpus, layout["num_experts"])
    if layout["num_experts"] % ranks or gpus % ranks:
        raise ValueError(f"{layout['num_experts']} experts do not spread evenly over {gpus} GPUs")
    return ranks


def weight_bytes_per_gpu(layout: dict, gpus: int) -> float:
    return BYTES * (layout["dense"] + layout["experts"] / expert_ranks(layout, gpus))


def all_to_all_bytes_per_layer(layout: dict, gpus: int, tokens: int) -> float:
    """Bytes one GPU sends in one MoE layer's forward (dispatch + combine), within its expert group."""
    ep = expert_ranks(layout, gpus)
    return 2 * tokens * layout["top_k"] * layout["hidden"] * BYTES * (ep - 1) / ep


def table(layouts: dict[str, dict], tokens: int) -> str:
    rows = ["| model | N | weights / GPU (GB) | experts / GPU | all-to-all / MoE layer, fwd (MB) | per step, fwd + bwd (GB) |",
            "|---|---|---|---|---|---|"]
    for name, layout in layouts.items():
        for gpus in GPUS:
            per_layer = all_to_all_bytes_per_layer(layout, gpus, tokens)
            step = 2 * per_layer * layout["moe_layers"]  # backward repeats both exchanges
            rows.append(f"| {name} | {gpus} | {weight_bytes_per_gpu(layout, gpus) / 1e9:.1f} | "
                        f"{layout['num_experts'] // expert_ranks(layout, gpus)} of {layout['num_experts']} | {per_layer / 1e6:.0f} | {step / 1e9:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per GPU per step (default 8 x 512)")
    args = parser.parse_args(argv)
    layouts = paper_layouts()
    for name, layout in layouts.items():
        print(f"{name}: {layout['total'] / 1e9:.2f}B parameters, {layout['experts'] / 1e9:.2f}B in experts "
              f"({layout['moe_layers']} MoE layers x {layout['num_experts']} experts, top-{layout['top_k']}, H {layout['hidden']})")
    print(f"\ntokens per GPU per step: {args.tokens}; bf16\n")
    print(table(layouts, args.tokens))


if __name__ == "__main__":
    main()
