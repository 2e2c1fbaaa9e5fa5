"""Which experts each token of a text went to, in every MoE layer of an upcycled model.

    trace = trace_routing(model, tokenizer, input_ids [1, S], start=prompt_length)
    trace.top_expert[l][t]     expert with the largest weight for token t in MoE layer l
    trace.experts_used[l][t]   how many experts token t used there (threshold routing: varies per token)

The trace comes from one teacher-forced forward over the whole sequence, so every token (the last
generated one too) has its routing, read from each layer's `last_routing` (zoo.upcycling.layer.UpcycledFFN).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class RoutingTrace:
    tokens: list[str]  # the traced tokens as text pieces
    layers: list[str]  # MoE layer names, in depth order
    num_experts: int
    top_expert: list[list[int]]  # [L][T]
    top_weight: list[list[float]]  # [L][T] combine weight of that expert
    experts_used: list[list[int]]  # [L][T]

    @property
    def mean_experts_per_token(self) -> float:
        counts = [c for layer in self.experts_used for c in layer]
        return sum(counts) / max(len(counts), 1)

    @property
    def expert_compute_fraction(self) -> float:
        """Expert FLOPs relative to running all experts (= the dense FFN when the experts are its split)."""
        return self.mean_experts_per_token / self.num_experts

    def to_dict(self) -> dict:
        return asdict(self) | {"mean_experts_per_token": self.mean_experts_per_token,
                               "expert_compute_fraction": self.expert_compute_fraction}


@torch.no_grad()
def trace_routing(model, tokenizer, input_ids: torch.Tensor, start: int = 0) -> RoutingTrace:
    """Route `input_ids` [1, S] through `model` (an UpcycledMoeForCausalLM) and keep tokens start..S-1.
    Tokens are shown as `tokenizer.decode([id])`, or as ids when `tokenizer` is None."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"trace_routing takes one sequence, input_ids [1, S]; got shape {tuple(input_ids.shape)}")
    if not 0 <= start < input_ids.shape[1]:
        raise ValueError(f"start ({start}) must index a token of the {input_ids.shape[1]}-token sequence")
    model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    layers = model.moe_layers()
    top, weight, used = [], [], []
    for _, ffn in layers:
        routing = ffn.last_routing  # rows = the S tokens; slots sorted by probability, best first
        mask = routing.mask[start:]
        top.append(routing.indices[start:, 0].tolist())
        weight.append(routing.weights[start:, 0].tolist())
        used.append(mask.sum(-1).tolist())
    ids = input_ids[0, start:].tolist()
    return RoutingTrace(
        tokens=[tokenizer.decode([i]) if tokenizer is not None else str(i) for i in ids],
        layers=[name for name, _ in layers],
        num_experts=layers[0][1].moe.router.num_experts,
        top_expert=top, top_weight=weight, experts_used=used,
    )
