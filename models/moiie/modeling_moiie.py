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

from zoo.moe import MoEBlock
from zoo.multimodal_model import MultimodalMoeForConditionalGeneration, dense_ffn_weights
from zoo.routing import ModalityRouter
from zoo.ternary import UpcycledGLUExperts

from .configuration_moiie import MoiieConfig


class MoiieForConditionalGeneration(MultimodalMoeForConditionalGeneration):
    config_class = MoiieConfig

    def build_moe_block(self, layer_index, dense_mlp) -> MoEBlock:
        config = self.config
        weights = dense_ffn_weights(dense_mlp)
        if weights["kind"] != "glu":
            raise ValueError(f"MoIIE upcycles SwiGLU FFNs (Phi-3, Llama); layer {layer_index} has an fc1/fc2 MLP")
        groups = config.resolved_expert_groups()
        router = ModalityRouter(
            config.text_config.hidden_size, config.num_experts,
            modality_experts={"image": groups["image"], "text": groups["text"]}, shared_experts=groups["shared"],
            top_k=config.num_experts_per_tok, normalize=True, jitter=config.router_jitter_noise,
        )
        experts = UpcycledGLUExperts(config.num_experts, weights["gate_up"], weights["down"],
                                     config.text_config.hidden_act, config.expert_lora_rank)
        return MoEBlock(router, experts)

    def router_aux_loss(self, routing):
        losses = routing.aux_losses
        zero = losses["load_balance"].new_zeros(())
        return (self.config.vis_router_aux_loss_coef * losses.get("load_balance/image", zero)
                + self.config.lan_router_aux_loss_coef * losses.get("load_balance/text", zero))
