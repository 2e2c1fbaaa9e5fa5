"""Bottleneck experts (MoME, arXiv 2510.04136): adapters E(h) = W_up GELU(W_down h), b << H.

    routed:  x [N, H] sorted by expert --groups.linear(down_proj [E, b, H])--> [N, b] --GELU-->
             --groups.linear(up_proj [E, H, b])--> [N, H]          (zoo.core.dispatch runs them sparsely)
    shared:  every token through all N_s experts, summed:
             sum_n W_up[n] GELU(W_down[n] x) = [W_up[0] .. W_up[N_s-1]] GELU([W_down[0]; ..; W_down[N_s-1]] x)
             (GELU is elementwise, so the N_s experts are one [N_s*b]-wide adapter: two matmuls)

W_up starts at zero (as LoRA's B, PEFT's init), W_down kaiming-uniform (as LoRA's A): a fresh bank
outputs exactly 0, so an adapter added to a frozen sublayer leaves the network's function unchanged
at step 0 while the gradient to W_up is non-zero. No biases (the paper's formula has none).

Expert kind "bottleneck" for zoo.upcycle: `UpcyclePlan(expert_kind="bottleneck", shared_ffn="dense",
expert_options={"bottleneck_size": 12})` keeps the dense FFN always on and routes tokens to
bottleneck adapters next to it (zero at step 0, so the upcycled model is the dense one at init).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core.expert_banks import ExpertBank, activation
from ..core.validation import check_positive_int
from .ffn_weights import FFNWeights
from .registry import ExpertPlan, register_expert_kind


class BottleneckExperts(ExpertBank):
    """E bottleneck adapters in the stacked layout: down_proj [E, b, H], up_proj [E, H, b].

    `forward(x [N, H], groups)` runs rows sorted by expert (zoo.core.dispatch);
    `forward_all(x [T, H])` is the sum of all E experts for every token (always-on shared experts).
    `intermediate_size` of the ExpertBank is the bottleneck b."""

    def __init__(self, num_experts: int, hidden_size: int, bottleneck_size: int, act: str = "gelu"):
        check_positive_int(self, bottleneck_size=bottleneck_size)  # before the bank reports it as intermediate_size
        super().__init__(num_experts, hidden_size, bottleneck_size)
        self.bottleneck_size = bottleneck_size
        self.act_fn = activation(act, self)
        self.down_proj = nn.Parameter(torch.empty(num_experts, bottleneck_size, hidden_size))  # W_down
        self.up_proj = nn.Parameter(torch.zeros(num_experts, hidden_size, bottleneck_size))  # W_up = 0
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """W_down: kaiming-uniform(a=sqrt 5) per expert, as nn.Linear / LoRA's A; W_up: zeros."""
        if self.down_proj.is_meta:
            return
        bound = 1.0 / math.sqrt(self.hidden_size)  # kaiming_uniform_(a=sqrt(5)) on a [b, H] matrix
        self.down_proj.uniform_(-bound, bound)
        self.up_proj.zero_()

    def forward(self, x: torch.Tensor, groups) -> torch.Tensor:  # x [N, H], rows sorted by expert
        h = self.act_fn(groups.linear(x, self.down_proj))  # [N, b]
        return groups.linear(h, self.up_proj)  # [N, H]

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:  # x [T, H] -> sum_e E_e(x) [T, H]
        E, b, H = self.down_proj.shape
        down = self.down_proj.reshape(E * b, H)  # [E*b, H]: the experts' rows stacked
        up = self.up_proj.permute(1, 0, 2).reshape(H, E * b)  # [H, E*b]: their columns side by side
        return nn.functional.linear(self.act_fn(nn.functional.linear(x.to(down.dtype), down)), up)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, bottleneck_size={self.bottleneck_size}"


def build_bottleneck_experts(parts: list[FFNWeights], plan: ExpertPlan) -> BottleneckExperts:
    """Expert kind "bottleneck": new adapters sized from the FFN they sit next to (its weights are not
    copied). They output 0 at init, so pair them with `shared_ffn="dense"` to keep the FFN's function."""
    options = dict(plan.expert_options)
    unknown = sorted(set(options) - {"bottleneck_size", "act"})
    if unknown:
        raise ValueError(f"UpcyclePlan.expert_options {unknown} are not options of expert kind 'bottleneck' "
                         "('bottleneck_size', 'act')")
    if plan.scale != 1.0:
        raise ValueError("expert kind 'bottleneck' takes no expert_scale (its adapters start at zero output)")
    first = parts[0]
    bank = BottleneckExperts(len(parts), first.hidden_size, options.get("bottleneck_size", 12),
                             act=options.get("act", "gelu"))
    return bank.to(device=first.up.device, dtype=first.up.dtype)


register_expert_kind("bottleneck", build_bottleneck_experts)
