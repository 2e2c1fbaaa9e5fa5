"""A terminal look at one MoE layer: which expert each word of a sentence goes to, for a top-2
router and an XMoE threshold router side by side. Words are embedded by a fixed random byte table,
so the demo needs no weights; the gallery (`zoo demo`) shows routing in real trained models."""
from __future__ import annotations

import torch

from zoo.core import GLUExperts, MoEBlock, ThresholdRouter, TopKRouter

SENTENCE = "Mixture-of-Experts layers send every token to a few experts only."


def expert_table(words: list[str], block: MoEBlock, hidden: torch.Tensor) -> str:
    with torch.no_grad():
        _, routing = block(hidden)
    lines = []
    for e in range(routing.num_experts):
        chosen = [words[t] for t in range(len(words)) if bool(((routing.indices[t] == e) & routing.mask[t]).any())]
        lines.append(f"  expert {e}: {len(chosen):2d} tokens  {' '.join(chosen)}")
    m = routing.metrics()
    lines.append(f"  experts/token {m['experts_per_token']:.2f}   load imbalance (max/mean) {m['load_imbalance']:.2f}")
    return "\n".join(lines)


def main(num_experts: int = 8, hidden_size: int = 64) -> None:
    torch.manual_seed(0)
    words = SENTENCE.split()
    table = torch.randn(256, hidden_size)
    hidden = torch.stack([table[torch.tensor(list(w.encode()))].mean(0) for w in words])  # [T, H]
    experts = GLUExperts(num_experts, hidden_size, 4 * hidden_size)
    for name, router in [
        ("top-2 softmax router (Mixtral)", TopKRouter(hidden_size, num_experts, top_k=2)),
        ("threshold router t=0.5 (XMoE)", ThresholdRouter(hidden_size, num_experts, threshold=0.5)),
    ]:
        router.weight.data.normal_()  # a sharper gate than the 0.02 init, so the table is readable
        print(f"\n{name}, {num_experts} experts, {len(words)} tokens")
        print(expert_table(words, MoEBlock(router, experts), hidden))


if __name__ == "__main__":
    main()
