"""MoTE configuration (arXiv 2506.14435): frozen fp FFN as shared expert + top-1 routed ternary experts."""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from zoo.core.validation import strict_config
from zoo.multimodal.configuration import MultimodalMoeConfig


@strict_config
class MoteConfig(MultimodalMoeConfig):
    """Expert count and layer placement are not published: defaults follow MoE-LLaVA (4 experts,
    even layers, balance loss 0.01). `ternary_packed` marks a checkpoint whose experts are stored as
    2-bit codes (inference only)."""

    model_type = "mote"

    num_experts: int = 4
    num_experts_per_tok: int = 1
    moe_layers: str | list[int] | tuple[int, ...] = "even"
    router_aux_loss_coef: float | int = 0.01
    ternary_packed: bool = False
