"""MoTE configuration (arXiv 2506.14435): frozen fp FFN as shared expert + top-1 routed ternary experts."""
# no `from __future__ import annotations`: @strict checks the field types, and skips annotations given as strings
from zoo.core.validation import check_choice, strict_config
from zoo.multimodal.configuration import MultimodalMoeConfig


@strict_config
class MoteConfig(MultimodalMoeConfig):
    """Expert count and layer placement are not published: defaults follow MoE-LLaVA (4 experts,
    even layers, balance loss 0.01). `ternary_packed` marks a checkpoint whose experts are stored as
    2-bit codes (inference only); `ternary_kernel` says how packed experts run: "int8" (codes unpacked once
    to resident int8, integer matmul: the fast one) or "unpack" (2 bits/weight resident, unpacked per call:
    the smallest memory)."""

    model_type = "mote"

    num_experts: int = 4
    num_experts_per_tok: int = 1
    moe_layers: str | list[int] | tuple[int, ...] = "even"
    router_aux_loss_coef: float | int = 0.01
    ternary_packed: bool = False
    ternary_kernel: str = "int8"

    def validate_architecture(self) -> None:
        super().validate_architecture()
        check_choice(self, "ternary_kernel", self.ternary_kernel, tuple(TERNARY_KERNELS))


TERNARY_KERNELS = {"int8": "ternary_int8", "unpack": "ternary_packed"}  # -> zoo.experts.ternary dispatch backend
