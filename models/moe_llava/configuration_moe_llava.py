"""MoE-LLaVA configuration (arXiv 2401.15947): copied experts, top-2 of 4, even layers, aux 0.01."""
from __future__ import annotations

from zoo.multimodal.modeling import MultimodalMoeConfig


class MoeLlavaConfig(MultimodalMoeConfig):
    """DeepSpeed TopKGate semantics: Gumbel-sampled 2nd expert in training, capacity factor 1.5
    (2.0 at eval, min 4), GShard balance loss weighted by `router_aux_loss_coef`."""

    model_type = "moe_llava"

    def __init__(self, num_experts: int = 4, num_experts_per_tok: int = 2, moe_layers="even",
                 router_aux_loss_coef: float = 0.01, capacity_factor: float | None = 1.5,
                 eval_capacity_factor: float | None = 2.0, min_capacity: int = 4, **kwargs):
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.min_capacity = min_capacity
        super().__init__(num_experts=num_experts, num_experts_per_tok=num_experts_per_tok, moe_layers=moe_layers,
                         router_aux_loss_coef=router_aux_loss_coef, **kwargs)

    def validate_fields(self) -> None:
        super().validate_fields()
        for name in ("capacity_factor", "eval_capacity_factor"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None (dropless), got {value}")
