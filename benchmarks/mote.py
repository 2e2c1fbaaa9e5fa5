"""MoTE vs MoE-LLaVA-style experts at SmolLM2-135M geometry (H 576, FFN 1536, 30 layers, MoE on the
15 even layers), random weights (sizes and speed do not depend on the values):

  1. routed expert bytes and bits/weight, packed ternary vs bf16, at equal expert count (4 per layer)
  2. at the bf16 experts' memory, how many ternary experts fit per layer
  3. one decode step (1 token, no KV cache) of the whole LLM in bf16: MoTE (packed ternary, top-1 + shared fp
     FFN) vs MoE-LLaVA (bf16 copied experts, top-2), median of repeated runs

    python -m benchmarks.mote        (run under `flock /tmp/zoo-heavy.lock` on a shared machine)
"""
from __future__ import annotations

import statistics
import time

import torch

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
    mote_ms, llava_ms = decode_step_ms(mote.to(torch.bfloat16)), decode_step_ms(llava.to(torch.bfloat16))
    print("3. one decode step (1 token, whole 30-layer LLM in bf16, median of 20)")
    print(f"   MoTE packed ternary top-1 + shared fp FFN: {mote_ms:7.2f} ms")
    print(f"   MoE-LLaVA bf16 experts top-2:              {llava_ms:7.2f} ms")


if __name__ == "__main__":
    main()
