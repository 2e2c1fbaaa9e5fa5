"""MoTE vs MoE-LLaVA-style experts at SmolLM2-135M geometry (H 576, FFN 1536, 30 layers, MoE on the
15 even layers), random weights (sizes and speed do not depend on the values):

  1. routed expert bytes and bits/weight, packed ternary vs bf16, at equal expert count (4 per layer)
  2. at the bf16 experts' memory, how many ternary experts fit per layer
  3. one decode step (1 token, no KV cache) of the whole LLM in bf16: MoTE (packed ternary, top-1 + shared fp
     FFN) on each ternary kernel vs MoE-LLaVA (bf16 copied experts, top-2), median of repeated runs
  4. one expert layer alone (4 experts of SmolLM2's FFN): packed ternary on each kernel vs the same experts
     in bf16 (the zoo's `grouped` backend, torch._grouped_mm), decode (1 token) and prefill (512 tokens
     spread over the experts), ratios to bf16

    python -m benchmarks.mote        (run under `flock /tmp/zoo-heavy.lock` on a shared machine)
"""
from __future__ import annotations

import statistics
import time

import torch

from zoo.core.dispatch import ExpertGroups
from zoo.core.expert_banks import GLUExperts
from zoo.experts.ternary import TernaryGLUExperts
from zoo.models.moe_llava import MoeLlavaConfig, MoeLlavaForConditionalGeneration
from zoo.models.mote import MoteConfig, MoteForConditionalGeneration

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
TOWER = {"kind": "timm", "name": "mobilenetv2_100", "image_size": 64}


def decode_step_ms(model, repeats: int = 20) -> float:
    lm = model.language_model
    x = torch.randn(1, 1, lm.config.hidden_size, dtype=torch.bfloat16)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 3):
            start = time.perf_counter()
            model(inputs_embeds=x, logits_to_keep=1)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[3:])


def median_ms(fn, repeats: int = 30) -> float:
    times = []
    with torch.no_grad():
        for _ in range(repeats + 3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[3:])


def expert_layer_ms(tokens: int, num_experts: int = 4) -> dict[str, float]:
    """One expert bank of SmolLM2's FFN geometry: `tokens` rows spread evenly over the experts."""
    hidden, intermediate = SMOLLM2["hidden_size"], SMOLLM2["intermediate_size"]
    bf16 = GLUExperts(num_experts, hidden, intermediate).to(torch.bfloat16)
    ternary = TernaryGLUExperts(num_experts, torch.randn(2 * intermediate, hidden) * 0.02,
                                torch.randn(hidden, intermediate) * 0.02, packed=True)
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16)
    row_experts = torch.arange(tokens) * num_experts // tokens  # sorted, as dispatch hands them over

    def groups(backend: str) -> ExpertGroups:
        return ExpertGroups.from_sorted_experts(row_experts, num_experts, backend)

    return {"bf16 experts (grouped)": median_ms(lambda: bf16(x, groups("grouped"))),
            "ternary, int8 kernel": median_ms(lambda: ternary(x, groups("ternary_int8"))),
            "ternary, unpack kernel": median_ms(lambda: ternary(x, groups("ternary_packed")))}


def main() -> None:
    torch.manual_seed(0)
    mote = MoteForConditionalGeneration(MoteConfig(text_config=SMOLLM2, vision_tower=TOWER, image_token_id=0)).eval()
    mote.pack_experts_()
    llava = MoeLlavaForConditionalGeneration(MoeLlavaConfig(text_config=SMOLLM2, vision_tower=TOWER, image_token_id=0)).eval()
    layers = len(mote.moe_layer_ids)
    experts = mote.moe_feed_forwards()[0].moe.experts
    weights_per_expert = 3 * experts.hidden_size * experts.intermediate_size
    ternary_bytes = sum(b.numel() * b.element_size() for f in mote.moe_feed_forwards()
                        for n, b in f.moe.experts.named_buffers() if n.endswith(("_packed", "_scale")))
    bf16_bytes = sum(p.numel() * 2 for f in llava.moe_feed_forwards() for p in f.moe.experts.parameters())
    num_experts = experts.num_experts
    per_ternary_expert = ternary_bytes / (layers * num_experts)
    print(f"geometry: SmolLM2-135M, {layers} MoE layers x {num_experts} experts, {weights_per_expert:,} weights per expert")
    print("1. equal expert count")
    print(f"   MoTE ternary (packed 2-bit + fp32 scale): {ternary_bytes / 1e6:8.2f} MB  "
          f"{ternary_bytes * 8 / (layers * num_experts * weights_per_expert):.4f} bits/weight")
    print(f"   MoE-LLaVA experts in bf16:               {bf16_bytes / 1e6:8.2f} MB  16.0000 bits/weight "
          f"({bf16_bytes / ternary_bytes:.2f}x)")
    fit = int(bf16_bytes / layers // per_ternary_expert)
    print(f"2. equal expert memory: {bf16_bytes / layers / 1e6:.2f} MB per layer holds {num_experts} bf16 experts "
          f"or {fit} ternary experts")
    llava_ms = decode_step_ms(llava.to(torch.bfloat16))
    mote = mote.to(torch.bfloat16)
    mote_ms = {}
    for kernel, backend in (("int8", "ternary_int8"), ("unpack", "ternary_packed")):
        for ffn in mote.moe_feed_forwards():
            ffn.moe.dispatch_backend = backend
        mote_ms[kernel] = decode_step_ms(mote)
    print("3. one decode step (1 token, whole 30-layer LLM in bf16, median of 20)")
    print(f"   MoE-LLaVA bf16 experts top-2:                            {llava_ms:7.2f} ms")
    for kernel, ms in mote_ms.items():
        print(f"   MoTE packed ternary top-1 + shared fp FFN, {kernel:6s} kernel: {ms:7.2f} ms  ({ms / llava_ms:.2f}x MoE-LLaVA)")
    print("4. one expert layer (4 experts of 576 -> 1536 -> 576), median of 30")
    for tokens, label in ((1, "decode, 1 token"), (512, "prefill, 512 tokens")):
        times = expert_layer_ms(tokens)
        base = times["bf16 experts (grouped)"]
        print(f"   {label}:")
        for name, ms in times.items():
            print(f"     {name:24s} {ms:8.3f} ms  ({ms / base:.2f}x bf16)")


if __name__ == "__main__":
    main()
