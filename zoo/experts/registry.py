"""Expert kinds: how a bank of E experts is built from the dense FFN(s) it replaces.

    builder(parts, plan) -> ExpertBank        parts: one FFNWeights per expert (the same object E
                                              times for copies); plan: the fields in `ExpertPlan`

"glu" and "mlp" (copies or splits into the generic banks) are here; "lora", "ternary" and the
others register themselves from their own modules in this room. `zoo.upcycling` looks a plan's
`expert_kind` up in `EXPERT_KINDS`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from ..core.expert_banks import ExpertBank, GLUExperts, MLPExperts
from .ffn_weights import FFNWeights


class ExpertPlan(Protocol):
    """What a builder reads of an upcycling plan (zoo.upcycling.UpcyclePlan has these fields)."""

    experts: str  # "copy" | "split"
    expert_options: dict
    init_noise: float

    @property
    def scale(self) -> float: ...


ExpertBuilder = Callable[[list[FFNWeights], "ExpertPlan"], ExpertBank]
EXPERT_KINDS: dict[str, ExpertBuilder] = {}


def register_expert_kind(name: str, builder: ExpertBuilder) -> None:
    """Add an expert kind: `builder(parts, plan) -> ExpertBank`, where `parts` holds one FFNWeights
    per expert (the same object E times for copies) and the bank must apply `plan.scale`."""
    EXPERT_KINDS[name] = builder


def stack_parts(parts: list[FFNWeights], name: str, plan: ExpertPlan, scale: float = 1.0) -> nn.Parameter:
    """[E, ...] parameter from each expert's `name` tensor (see stack_tensors)."""
    return stack_tensors([getattr(p, name) for p in parts], plan, scale)


def stack_tensors(tensors: list[torch.Tensor], plan: ExpertPlan, scale: float = 1.0) -> nn.Parameter:
    """[E, ...] parameter from one tensor per expert; copies (the same object E times) are expanded
    once (one allocation), then optionally jittered by `init_noise` x std(W)."""
    if all(t is tensors[0] for t in tensors):
        stacked = tensors[0].unsqueeze(0).expand(len(tensors), *tensors[0].shape).clone()
    else:
        stacked = torch.stack(tensors)
    if scale != 1.0:
        stacked.mul_(scale)
    if plan.init_noise > 0 and stacked.device.type != "meta" and stacked.dim() > 2:
        stacked.add_(torch.randn_like(stacked) * (plan.init_noise * tensors[0].float().std().item()))
    return nn.Parameter(stacked)  # new, trainable weights (the dense ones may have been frozen)


def _empty_bank(cls, *args, **kwargs):
    with torch.device("meta"):  # parameters are replaced right away: skip allocating and initialising them
        return cls(*args, **kwargs)


def build_glu_experts(parts: list[FFNWeights], plan: ExpertPlan) -> GLUExperts:
    first = parts[0]
    if first.kind != "glu":
        raise ValueError(f"expert kind 'glu' needs a gated (SwiGLU/GeGLU) FFN; this architecture's FFN is {first.kind!r}")
    bank = _empty_bank(GLUExperts, len(parts), first.hidden_size, first.intermediate_size, act=first.act)
    if all(p is first for p in parts):  # copies: fuse gate and up once
        gate_up = [torch.cat([first.gate, first.up], dim=0)] * len(parts)
    else:
        gate_up = [torch.cat([p.gate, p.up], dim=0) for p in parts]
    bank.gate_up_proj = stack_tensors(gate_up, plan)  # [E, 2I, H]
    bank.down_proj = stack_parts(parts, "down", plan, plan.scale)  # [E, H, I]
    return bank


def build_mlp_experts(parts: list[FFNWeights], plan: ExpertPlan) -> MLPExperts:
    first = parts[0]
    if first.kind != "mlp":
        raise ValueError(f"expert kind 'mlp' needs a plain two-layer FFN; this architecture's FFN is {first.kind!r}")
    has_bias = first.up_bias is not None
    bank = _empty_bank(MLPExperts, len(parts), first.hidden_size, first.intermediate_size, act=first.act, bias=has_bias)
    bank.up_proj = stack_parts(parts, "up", plan)  # [E, I, H]
    bank.down_proj = stack_parts(parts, "down", plan, plan.scale)  # [E, H, I]
    if has_bias:
        bank.up_proj_bias = stack_parts(parts, "up_bias", plan)  # [E, I]
        bank.down_proj_bias = stack_parts(parts, "down_bias", plan, plan.scale)  # [E, H]
    return bank


register_expert_kind("glu", build_glu_experts)
register_expert_kind("mlp", build_mlp_experts)


def copy_expert_options(kind: str, parts: list[FFNWeights], plan: ExpertPlan, allowed: tuple[str, ...]) -> dict:
    """Checks of the expert kinds built over one copy of a gated dense FFN (lora, ternary); -> the options."""
    if parts[0].kind != "glu":
        raise ValueError(f"expert kind {kind!r} needs a gated (SwiGLU/GeGLU) FFN; this architecture's FFN is {parts[0].kind!r}")
    if plan.experts != "copy" or plan.scale != 1.0:
        raise ValueError(f"expert kind {kind!r} builds on one copy of the dense FFN: use experts='copy' and no expert_scale")
    options = dict(plan.expert_options)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"UpcyclePlan.expert_options {unknown} are not options of expert kind {kind!r} {allowed}")
    return options
