"""MoTE configuration (arXiv 2506.14435): frozen fp FFN as shared expert + top-1 routed ternary experts."""
from __future__ import annotations

from zoo.multimodal.modeling import MultimodalMoeConfig


class MoteConfig(MultimodalMoeConfig):
    """Expert count and layer placement are not published: defaults follow MoE-LLaVA (4 experts,
    even layers, balance loss 0.01). `ternary_packed` marks a checkpoint whose experts are stored as
    2-bit codes (inference only)."""

    model_type = "mote"

    def __init__(self, num_experts: int = 4, num_experts_per_tok: int = 1, moe_layers="even",
                 router_aux_loss_coef: float = 0.01, ternary_packed: bool = False, **kwargs):
        self.ternary_packed = ternary_packed
        super().__init__(num_experts=num_experts, num_experts_per_tok=num_experts_per_tok, moe_layers=moe_layers,
                         router_aux_loss_coef=router_aux_loss_coef, **kwargs)
