"""MoTE: Mixture of Ternary Experts.

    y = FFN_fp(x)                       frozen dense FFN, always on (shared expert)
      + g_i(x) * E_i^tern(x)            i = argmax softmax(W_r x) (top-1), g_i its probability
    E_i^tern: SwiGLU with weights in {-1, 0, +1} x absmean scale, int8 per-token activations,
              initialised from the same dense FFN, trained with a straight-through estimator and
              packed to 2 bits per weight for inference; packed experts run on the int8 kernel
              (`config.ternary_kernel`: dispatch backend `ternary_int8`, or `ternary_packed`).
"""
from __future__ import annotations

import zoo.experts  # noqa: F401  (registers expert kind "ternary")
from zoo.multimodal.modeling import MultimodalMoeForConditionalGeneration
from zoo.upcycling.plan import UpcyclePlan

from .configuration_mote import TERNARY_KERNELS, MoteConfig


class MoteForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    config_class = MoteConfig

    def __init__(self, config: MoteConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        for ffn in self.moe_feed_forwards():
            ffn.moe.shared_experts.requires_grad_(False)  # the full-precision FFN stays as it was trained

    def upcycle_plan(self) -> UpcyclePlan:
        config = self.config
        fields = self.expert_plan_fields()
        options = {**fields.pop("expert_options", {}), "packed": config.ternary_packed}
        fields.pop("expert_kind", None)
        # top-1 without renormalisation: the gate value g_i must stay a probability or the router gets no gradient
        return UpcyclePlan(num_experts=config.num_experts, num_experts_per_tok=config.num_experts_per_tok,
                           normalize=False, expert_kind="ternary", expert_options=options, shared_ffn="dense",
                           dispatch_backend=TERNARY_KERNELS[config.ternary_kernel], **fields)

    def pack_experts_(self) -> "MoteForConditionalGeneration":
        """Freeze every ternary bank into 2-bit codes; the saved config then says ternary_packed=True."""
        for ffn in self.moe_feed_forwards():
            ffn.moe.experts.pack_()
        self.config.ternary_packed = True
        return self
