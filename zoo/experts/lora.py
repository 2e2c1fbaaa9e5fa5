"""LoRA experts (Uni-MoE): one frozen copy of the dense FFN shared by all experts, and per expert a
trainable low-rank delta on each projection. Expert e computes

    [gate; up] = W_gu x + s * B_gu[e] A_gu[e] x                      W_gu [2I, H] frozen, A [E, r, H], B [E, 2I, r]
    y          = W_d h  + s * B_d[e]  A_d[e]  h,  h = act(gate) * up  W_d  [H, I]  frozen, A [E, r, I], B [E, H, r]

with s = alpha / r. The deltas are stacked [E, ., .] parameters run through `groups.linear`, so a
token computes only the deltas of its own experts; B starts at zero, so every expert starts as the
dense FFN and copy-upcycling with renormalised top-k preserves the function. Expert kind "lora"
(`UpcyclePlan(expert_kind="lora", expert_options={"rank": 8, "alpha": 16})`).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ..core.expert_banks import ExpertBank, activation
from ..core.validation import check_number, check_positive_int
from .ffn_weights import FFNWeights
from .low_rank import lora_pair
from .registry import ExpertPlan, copy_expert_options, register_expert_kind


class LoRAExperts(ExpertBank):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, rank: int = 8,
                 alpha: float = 16.0, act: str = "silu"):
        super().__init__(num_experts, hidden_size, intermediate_size)
        check_positive_int(self, rank=rank)
        check_number(self, "alpha", alpha, low=0, low_open=True)
        self.rank = rank
        self.scaling = alpha / rank
        self.act_fn = activation(act)
        # the shared dense FFN, frozen (Uni-MoE trains only the deltas and the router)
        self.gate_up_proj = nn.Parameter(torch.empty(2 * intermediate_size, hidden_size), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(hidden_size, intermediate_size), requires_grad=False)
        self.gate_up_lora_A, self.gate_up_lora_B = lora_pair(num_experts, rank, 2 * intermediate_size, hidden_size)
        self.down_lora_A, self.down_lora_B = lora_pair(num_experts, rank, hidden_size, intermediate_size)
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    def _linear(self, x, weight, lora_a, lora_b, groups):
        base = F.linear(x, weight)  # [N, out]; in the autocast dtype under autocast
        # grouped_mm is not autocast-aware: run the deltas in the base's dtype, not fp32 [N, out] activations
        x, lora_a, lora_b = x.to(base.dtype), lora_a.to(base.dtype), lora_b.to(base.dtype)
        if groups.backend != "eager" and (self.rank * x.element_size()) % 16:
            # grouped_mm needs 16-byte aligned rows; a [N, r] activation with a small odd rank is not
            groups = dataclasses.replace(groups, backend="eager")
        delta = groups.linear(groups.linear(x, lora_a), lora_b)  # [N, out], expert e's B_e A_e x
        return base + self.scaling * delta

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:  # x [N, H] sorted by expert
        gate, up = self._linear(x, self.gate_up_proj, self.gate_up_lora_A, self.gate_up_lora_B, groups).chunk(2, dim=-1)
        h = self.act_fn(gate) * up  # [N, I]
        return self._linear(h, self.down_proj, self.down_lora_A, self.down_lora_B, groups)  # [N, H]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rank={self.rank}, scaling={self.scaling}"


def build_lora_experts(parts: list[FFNWeights], plan: ExpertPlan) -> LoRAExperts:
    options = copy_expert_options("lora", parts, plan, ("rank", "alpha"))
    first = parts[0]
    bank = LoRAExperts(len(parts), first.hidden_size, first.intermediate_size, act=first.act, **options)
    bank.to(device=first.up.device, dtype=first.up.dtype)
    if first.up.device.type != "meta":
        with torch.no_grad():
            bank.gate_up_proj.copy_(torch.cat([first.gate, first.up], dim=0))
            bank.down_proj.copy_(first.down)
    return bank


register_expert_kind("lora", build_lora_experts)
