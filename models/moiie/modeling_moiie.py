"""MoIIE: Mixture of Intra- and Inter-Modality Experts (arXiv 2508.09779).

    odd decoder layer FFN ->  ModalityRouter
        image token: gate_vis over [intra-vision experts + shared inter-modality pool], top-2, renormalised
        text token:  gate     over [shared inter-modality pool + intra-text experts],  top-2, renormalised
      experts: copies of the dense FFN (or LoRA deltas over it)
    loss = CE + 0.001 * Switch(gate_vis, image tokens) + 0.001 * Switch(gate, text tokens)

Unlike the released code, the last patch of an image is routed as an image token (the code's
"this and the next token are vision" test sends it to the text router).
"""
from __future__ import annotations

from zoo.multimodal.modeling import MultimodalMoeForConditionalGeneration
from zoo.upcycling.plan import UpcyclePlan

from .configuration_moiie import MoiieConfig


class MoiieForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    config_class = MoiieConfig

    def upcycle_plan(self) -> UpcyclePlan:
        config = self.config
        groups = config.resolved_expert_groups()
        return UpcyclePlan(
            num_experts=config.num_experts, num_experts_per_tok=config.num_experts_per_tok, router="modality",
            modality_experts={"image": groups["image"], "text": groups["text"]}, shared_experts=groups["shared"],
            normalize=True, jitter=config.router_jitter_noise, **self.expert_plan_fields(),
        )

    def router_aux_loss(self, routing):
        losses = routing.aux_losses
        zero = losses["load_balance"].new_zeros(())
        return (self.config.vis_router_aux_loss_coef * losses.get("load_balance/image", zero)
                + self.config.lan_router_aux_loss_coef * losses.get("load_balance/text", zero))
