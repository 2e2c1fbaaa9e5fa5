"""MoE-LLaVA configuration (arXiv 2401.15947): copied experts, top-2 of 4, even layers, aux 0.01."""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from zoo.core.validation import check_number, check_positive_int, strict_config
from zoo.multimodal.configuration import MultimodalMoeConfig


@strict_config
class MoeLlavaConfig(MultimodalMoeConfig):
    """DeepSpeed TopKGate semantics: Gumbel-sampled 2nd expert in training, capacity factor 1.5
    (2.0 at eval, min 4), GShard balance loss weighted by `router_aux_loss_coef`."""

    model_type = "moe_llava"

    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_layers: str | list[int] | tuple[int, ...] = "even"
    router_aux_loss_coef: float | int = 0.01
    capacity_factor: float | int | None = 1.5
    eval_capacity_factor: float | int | None = 2.0
    min_capacity: int = 4

    def validate_architecture(self) -> None:
        super().validate_architecture()
        for name in ("capacity_factor", "eval_capacity_factor"):
            check_number(self, name, getattr(self, name), low=0, low_open=True, allow_none=True, note="(None = dropless)")
        check_positive_int(self, min_capacity=self.min_capacity)
