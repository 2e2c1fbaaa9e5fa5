"""Sparse upcycling: a dense Hugging Face decoder's FFNs become MoE layers, in place.

    plan = get_plan("top2-of-4")        # or UpcyclePlan(...)
    upcycle(model, plan)                # layer.mlp -> UpcycledFFN(MoEBlock)
"""
from .ffn_adapters import ARCHITECTURES, ArchitectureAdapter, adapter_for
from .layer import UpcycledFFN, upcycled_layers
from .plan import PLANS, UpcyclePlan, get_plan, register_plan
from .sparse_upcycling import build_router, routing_context, supported_architectures, upcycle

__all__ = [
    "ARCHITECTURES", "ArchitectureAdapter", "PLANS", "UpcycledFFN", "UpcyclePlan", "adapter_for", "build_router",
    "get_plan", "register_plan", "routing_context", "supported_architectures", "upcycle", "upcycled_layers",
]
