"""LoRA experts (Uni-MoE): frozen dense FFN weights and, per expert, a trainable low-rank delta on
each projection. Expert e computes

    [gate; up] = W_gu[e] x + s * B_gu[e] A_gu[e] x                     A_gu [E, r, H], B_gu [E, 2I, r]
    y          = W_d[e]  h + s * B_d[e]  A_d[e]  h,  h = act(gate) * up  A_d  [E, r, I], B_d  [E, H, r]

with s = alpha / r. The frozen weights are either one dense FFN shared by every expert
(W_gu [2I, H], W_d [H, I]: W[e] = W, the copy-upcycling default) or one frozen FFN per expert
(`per_expert_base=True`: W_gu [E, 2I, H], W_d [E, H, I]), which is Uni-MoE's design: its experts
are FFNs of separately trained dense models (LLaVA-1.5, Vicuna-1.5, a speech model, ...), each with
its own LoRA. Per-expert bases run through `groups.linear` like the deltas, so a token computes only
its own experts' weights. B starts at zero, so at step 0 every expert is its frozen FFN: with one
shared source and renormalised top-k the layer is the dense FFN.

Expert kind "lora": `UpcyclePlan(expert_kind="lora", expert_options={"rank": 8, "alpha": 16})`; with
`"per_expert_base": True` each expert gets its own frozen copy (load different sources into
`gate_up_proj[e]` / `down_proj[e]` afterwards, e.g. with `load_expert_ffn`). Built from FFN parts that
are not all the same object, the bank is per-expert as well.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ..core.expert_banks import ExpertBank, activation
from ..core.validation import check_bool, check_number, check_positive_int
from .ffn_weights import FFNWeights
from .low_rank import lora_pair
from .registry import ExpertPlan, copy_expert_options, register_expert_kind


class LoRAExperts(ExpertBank):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, rank: int = 8,
                 alpha: float = 16.0, act: str = "silu", per_expert_base: bool = False):
        super().__init__(num_experts, hidden_size, intermediate_size)
        check_positive_int(self, rank=rank)
        check_number(self, "alpha", alpha, low=0, low_open=True)
        check_bool(self, per_expert_base=per_expert_base)
        self.rank = rank
        self.scaling = alpha / rank
        self.per_expert_base = per_expert_base
        self.act_fn = activation(act, self)
        # the frozen dense FFN(s) (Uni-MoE trains only the deltas and the router)
        stack = (num_experts,) if per_expert_base else ()
        self.gate_up_proj = nn.Parameter(torch.empty(*stack, 2 * intermediate_size, hidden_size), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(*stack, hidden_size, intermediate_size), requires_grad=False)
        self.gate_up_lora_A, self.gate_up_lora_B = lora_pair(num_experts, rank, 2 * intermediate_size, hidden_size)
        self.down_lora_A, self.down_lora_B = lora_pair(num_experts, rank, hidden_size, intermediate_size)
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    def _linear(self, x, weight, lora_a, lora_b, groups):
        # [N, out]; in the autocast dtype under autocast
        base = groups.linear(x, weight) if self.per_expert_base else F.linear(x, weight)
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

    @torch.no_grad()
    def load_expert_ffn(self, expert: int, ffn: FFNWeights) -> None:
        """Make `expert`'s frozen FFN a copy of `ffn` (a per-expert bank only: a shared one has a single FFN)."""
        if not self.per_expert_base:
            raise ValueError("LoRAExperts.load_expert_ffn needs per_expert_base=True (this bank shares one frozen FFN)")
        if not 0 <= expert < self.num_experts:
            raise ValueError(f"expert {expert} outside the bank's {self.num_experts} experts")
        if ffn.gate is None:
            raise ValueError("LoRA experts need a gated (SwiGLU/GeGLU) FFN; this FFN has no gate projection")
        gate_up = torch.cat([ffn.gate, ffn.up], dim=0)
        for name, value in (("gate_up_proj", gate_up), ("down_proj", ffn.down)):
            target = getattr(self, name)[expert]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"expert {expert} {name}: the source FFN gives shape {tuple(value.shape)}, "
                                 f"the bank holds {tuple(target.shape)}")
            target.copy_(value)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rank={self.rank}, scaling={self.scaling}, per_expert_base={self.per_expert_base}"


def build_lora_experts(parts: list[FFNWeights], plan: ExpertPlan) -> LoRAExperts:
    options = copy_expert_options("lora", parts, plan, ("rank", "alpha", "per_expert_base"))
    first = parts[0]
    options.setdefault("per_expert_base", any(p is not first for p in parts))
    bank = LoRAExperts(len(parts), first.hidden_size, first.intermediate_size, act=first.act, **options)
    bank.to(device=first.up.device, dtype=first.up.dtype)
    if first.up.device.type != "meta":
        if bank.per_expert_base:
            for e, part in enumerate(parts):
                bank.load_expert_ffn(e, part)
        else:
            with torch.no_grad():
                bank.gate_up_proj.copy_(torch.cat([first.gate, first.up], dim=0))
                bank.down_proj.copy_(first.down)
    return bank


register_expert_kind("lora", build_lora_experts)
